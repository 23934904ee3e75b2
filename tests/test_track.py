"""`facestream track`: Facemap's keypoints file from a recorded video, and its errors.

Parity of the numbers with Facemap itself is tests/test_facemap_parity.py; here: the file's layout
and metadata, agreement with the tracker on the same decoded frames, batching, and failures that
leave no file behind.
"""
from __future__ import annotations

import json

import cv2
import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from facestream.camera_adapters.synthetic.camera import SyntheticCamera
from facestream.engines.bodyparts import BODYPARTS
from facestream.engines.model_files import load_model
from facestream.engines.tracker import load_tracker
from facestream.streamer.cli import main

FRAMES, FPS = 6, 25.0


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A short MJPG video of the synthetic face and its frames as Facemap decodes them."""
    path = tmp_path_factory.mktemp("video") / "mouse 1.avi"
    camera = SyntheticCamera(160, 120, seed=3)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (160, 120), isColor=True)
    for k in range(FRAMES):
        writer.write(cv2.cvtColor(camera.render(k * 10)[0], cv2.COLOR_GRAY2BGR))
    writer.release()
    capture, frames = cv2.VideoCapture(str(path)), []
    while (read := capture.read())[0]:
        frames.append(cv2.cvtColor(read[1], cv2.COLOR_BGR2GRAY))
    capture.release()
    return path, np.stack(frames)


def track(*args: str):
    return CliRunner().invoke(main, ["track", *args, "--quiet"])


def keypoints(path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return np.stack([np.stack([f["Facemap"][bp][c][:] for c in ("x", "y", "likelihood")], -1) for bp in BODYPARTS], 1)


def test_writes_facemap_layout_beside_the_video(video, cache_home):
    path, frames = video
    result = track(str(path))
    assert result.exit_code == 0, result.output
    out = path.with_name("mouse 1_FacemapPose.h5")
    assert f"{FRAMES} frames" in result.output and str(out) in result.output
    with h5py.File(out, "r") as f:
        assert set(f) == {"Facemap", "facestream"}
        assert list(f["Facemap"]) == sorted(BODYPARTS)
        for bp in BODYPARTS:
            assert list(f["Facemap"][bp]) == ["likelihood", "x", "y"]
            for name in ("x", "y", "likelihood"):
                dataset = f["Facemap"][bp][name]
                assert (dataset.dtype, dataset.shape, dict(dataset.attrs)) == (np.float32, (FRAMES,), {})
        own = f["facestream"]
        assert own["frame_id"].dtype == np.int64 and own["frame_id"][:].tolist() == list(range(FRAMES))
        assert own["t_video_s"].dtype == np.float64
        np.testing.assert_allclose(own["t_video_s"][:], np.arange(FRAMES) / FPS, atol=1e-6)
        attrs = {k: json.loads(v) for k, v in own.attrs.items()}
    model = load_model()
    assert attrs["model"]["sha256"] == model.sha256 and attrs["model"]["name"] == "facestream-default"
    assert attrs["engine"] == "onnx" and attrs["bbox"] is None
    assert attrs["source_video"] == str(path.resolve()) and attrs["facestream_version"]
    expected = load_tracker("onnx").infer(frames)
    np.testing.assert_allclose(keypoints(out), expected, atol=1e-4, rtol=0)


def test_bbox_batch_and_out(video, cache_home, tmp_path):
    path, frames = video
    bbox = (10, 110, 20, 151)
    for batch in ("1", "4"):
        result = track(str(path), "--engine", "torch", "--threads", "1", "--bbox", "10,110,20,151", "--batch", batch,
                       "--out", str(tmp_path / f"b{batch}.h5"))
        assert result.exit_code == 0, result.output
    expected = load_tracker("torch", bbox=bbox).infer(frames)
    np.testing.assert_allclose(keypoints(tmp_path / "b1.h5"), expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(keypoints(tmp_path / "b4.h5"), expected, atol=1e-4, rtol=0)
    with h5py.File(tmp_path / "b4.h5", "r") as f:
        assert json.loads(f["facestream"].attrs["bbox"]) == list(bbox)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--bbox", "0,10,0"], "bbox must be 4 integers"),
        (["--bbox", "0,200,0,50"], "outside the 120x160"),
        (["--model", "/nonexistent/model.pt"], "no such model file"),
        (["--engine", "tensorflow"], "unknown engine"),
    ],
)
def test_errors_leave_no_file(video, cache_home, tmp_path, args, words):
    path, _ = video
    result = track(str(path), "--engine", "torch", *args, "--out", str(tmp_path / "k.h5"))
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith("facestream: error:")]
    assert len(lines) == 1 and words in lines[0], result.output
    assert list(tmp_path.iterdir()) == []


def test_missing_video_and_folder(tmp_path):
    result = track(str(tmp_path / "none.avi"))
    assert result.exit_code == 1 and "no such file" in result.output
    (tmp_path / "v.avi").write_bytes(b"")
    result = track(str(tmp_path / "v.avi"), "--out", str(tmp_path / "missing" / "k.h5"))
    assert result.exit_code == 1 and "does not exist" in result.output
