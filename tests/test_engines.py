"""Engines agree with each other: torch pre/post-processing with numpy's, int8 with fp32 within its
stated bound, GPU engines with the CPU reference where a GPU is present; "auto" says what it chose."""
from __future__ import annotations

import cv2
import numpy as np
import onnx
import pytest
import torch

from facestream.engines import decode as numpy_decode
from facestream.engines import preprocess as numpy_preprocess
from facestream.engines import torch_ops
from facestream.engines.training.evaluation import eval_frames
from facestream.engines.model_files import load_model
from facestream.engines.onnx_engine import onnx_model_path
from facestream.engines.preprocess import make_geometry
from facestream.camera_adapters.registry import default_calibration
from facestream.engines.quantize import VideoCalibration, fp32_kept_nodes, int8_model_path
from facestream.engines.tensorrt_engine import available as tensorrt_missing
from facestream.engines.tracker import TrackerError, load_tracker

INT8_MEAN_PX = 0.5  # the stated bound: mean distance of in-view keypoints from fp32
CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def held_out():
    """40 synthetic frames of faces the bundled model never saw, with their truth."""
    frames = list(eval_frames(40))
    return np.stack([f[2] for f in frames]), np.stack([f[3] for f in frames])


def in_view_distance(a: np.ndarray, b: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.hypot(a[..., 0] - b[..., 0], a[..., 1] - b[..., 1])[truth[..., 2] > 0]


@pytest.mark.parametrize("bbox", [None, (41, 440, 110, 530), (0, 300, 0, 481)])
def test_torch_preprocessing_equals_numpy(held_out, bbox):
    frames = held_out[0][:4]
    geometry = make_geometry(frames.shape[1:], bbox)
    expected = np.stack([numpy_preprocess.preprocess(f, geometry) for f in frames])
    got = torch_ops.preprocess(torch.from_numpy(frames), geometry)[:, 0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    p1, p99 = torch_ops.percentiles(torch.from_numpy(frames))
    assert [(float(a), float(b)) for a, b in zip(p1, p99)] == [tuple(map(float, numpy_preprocess.percentiles(f))) for f in frames]


def test_torch_decoding_equals_numpy():
    rng = np.random.default_rng(1)
    maps = [rng.standard_normal((3, 15, 64, 64)).astype(np.float32) for _ in range(3)]
    geometry = make_geometry((480, 640), (41, 440, 110, 530))
    expected = numpy_decode.decode(*maps, geometry)
    got = torch_ops.decode(*(torch.from_numpy(m) for m in maps), geometry).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_int8_keeps_the_output_layers_in_fp32(cache_home):
    graph = onnx.load(str(onnx_model_path(load_model(None))))
    kept = fp32_kept_nodes(graph)
    assert kept == ["/conv0/Conv", "/conv1/Conv", "/conv2/Conv", "/upconv1/conv/conv_1/conv_1.2/Conv"]


def test_int8_agrees_with_fp32_within_its_bound(cache_home, held_out):
    frames, truth = held_out
    fp32 = load_tracker("onnx").infer(frames)
    int8 = load_tracker("onnx-int8", calibration=default_calibration())
    assert int8.describe()["runtime"].endswith("int8")
    distance = in_view_distance(int8.infer(frames), fp32, truth)
    assert distance.mean() < INT8_MEAN_PX
    assert np.percentile(distance, 99) < 3 * INT8_MEAN_PX
    assert np.abs(int8.infer(frames)[..., 2] - fp32[..., 2]).max() < 0.05


def test_int8_engine_is_cached_per_calibration(cache_home, tmp_path):
    model = load_model(None)
    first = int8_model_path(model, default_calibration())
    stamp = first.stat().st_mtime_ns
    assert int8_model_path(model, default_calibration()) == first and first.stat().st_mtime_ns == stamp

    video = tmp_path / "rig.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 50, (640, 480), isColor=False)
    for frame in eval_frames(12):
        writer.write(frame[2])
    writer.release()
    frames = VideoCalibration(video).frames(8)
    assert len(frames) == 8 and frames[0].shape == (480, 640) and frames[0].dtype == np.uint8
    assert int8_model_path(model, VideoCalibration(video)) != first
    tracker = load_tracker("onnx-int8", calibration=VideoCalibration(video))
    assert tracker.infer(frames[0]).shape == (1, 15, 3)


def test_bad_calibration_video_is_one_line(cache_home, tmp_path):
    bad = tmp_path / "not-a-video.avi"
    bad.write_bytes(b"nothing here")
    with pytest.raises(TrackerError, match="cannot be read") as info:
        load_tracker("onnx-int8", calibration=VideoCalibration(bad))
    assert "\n" not in str(info.value)


def test_auto_says_what_it_chose(cache_home):
    tracker = load_tracker("auto", calibration=default_calibration())
    described = tracker.describe()
    expected = "tensorrt" if tensorrt_missing() is None else ("cuda" if CUDA else "onnx-int8")
    assert described["engine"] == expected
    assert described["reason"].startswith("auto: ")
    assert load_tracker("onnx").describe()["reason"] == "asked for"
    # a student runs in fp32 where the teacher would run in int8; on a GPU both take the GPU engine
    student = load_tracker("auto", "student", calibration=default_calibration()).describe()
    assert student["engine"] == ("onnx" if expected == "onnx-int8" else expected)
    assert student["reason"].startswith("auto: ")


@pytest.mark.skipif(CUDA, reason="a CUDA GPU is present: the GPU engines run instead")
@pytest.mark.parametrize("engine", ["cuda", "tensorrt", "tensorrt-int8"])
def test_gpu_engines_refuse_in_one_line_without_a_gpu(engine):
    with pytest.raises(TrackerError, match="needs a CUDA GPU") as info:
        load_tracker(engine)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not CUDA, reason="no CUDA GPU visible to PyTorch (the CUDA engine runs only on one)")
def test_cuda_engine_agrees_with_fp32(cache_home, held_out):
    frames, truth = held_out
    fp32 = load_tracker("onnx").infer(frames)
    cuda = load_tracker("cuda")
    singles = np.concatenate([cuda.infer(f) for f in frames[:8]])  # batch 1: the captured graph
    assert in_view_distance(singles, fp32[:8], truth[:8]).mean() < INT8_MEAN_PX
    assert in_view_distance(cuda.infer(frames), fp32, truth).mean() < INT8_MEAN_PX


@pytest.mark.skipif(tensorrt_missing() is not None, reason=f"TensorRT engine not testable here: {tensorrt_missing()}")
@pytest.mark.parametrize("engine", ["tensorrt", "tensorrt-int8"])
def test_tensorrt_engines_agree_with_fp32(cache_home, held_out, engine):
    frames, truth = held_out
    fp32 = load_tracker("onnx").infer(frames)
    trt = load_tracker(engine)
    assert in_view_distance(trt.infer(frames), fp32, truth).mean() < INT8_MEAN_PX


def test_export_builds_ahead_and_copies(cache_home, tmp_path):
    import subprocess
    import sys

    import onnxruntime as ort

    out = tmp_path / "tracker-int8.onnx"
    env = {**__import__("os").environ, "XDG_CACHE_HOME": str(cache_home)}
    done = subprocess.run([sys.executable, "-m", "facestream.streamer.cli", "export", "--engine", "onnx-int8", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(int8_model_path(load_model(None), default_calibration()))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["heatmap", "row_offset", "col_offset"]
    for args, words in ((["--engine", "tensorrt"], "cannot build a TensorRT engine here"),
                        (["--calibration", str(tmp_path / "missing.avi")], "cannot be read")):
        if args[0] == "--engine" and tensorrt_missing() is None:
            continue
        done = subprocess.run([sys.executable, "-m", "facestream.streamer.cli", "export", *args],
                              capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 1 and words in done.stderr and "Traceback" not in done.stderr
