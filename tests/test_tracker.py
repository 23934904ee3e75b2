"""Tracker engine: FMnet layout, pre-processing, decoding, model files, ONNX cache, both backends.

Every comparison is against an independent computation: torch ops following Facemap's source
(pose.py, transforms.py, pose_helper_functions.py) or numbers worked out by hand.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facestream.camera_adapters.registry import default_calibration
from facestream.engines.bodyparts import BODYPARTS
from facestream.engines.decode import decode
from facestream.engines.fmnet import FMnet
from facestream.engines.model_files import PARAMS_NAME, STATE_NAME, ModelFileError, load_model
from facestream.engines.preprocess import make_geometry, percentiles, preprocess
from facestream.engines.onnx_engine import onnx_cache_path
from facestream.engines.tracker import TrackerError, load_tracker

from helpers import Payload

CHANNELS = [16, 32, 64, 128, 200]
FACEMAP_NETWORK = Path(os.environ.get("FACEMAP_SRC", "/tmp/fm/facemap")) / "pose" / "facemap_network.py"


# ---------------------------------------------------------------- helpers


def facemap_pads(dx: int, dy: int) -> tuple[int, int, int, int]:
    """Facemap's pad_img_to_square for a crop of dx rows and dy columns, as F.pad arguments.

    Returns (pad_y_top, pad_y_bottom, pad_x_left, pad_x_right): Facemap's names; F.pad applies the
    first pair to the last axis (columns) and the second pair to the rows.
    """
    if dx == dy:
        return (0, 0, 0, 0)
    largest_dim = max(dx, dy)
    if (dx < largest_dim and (largest_dim - dx) % 2) or (dy < largest_dim and (largest_dim - dy) % 2):
        largest_dim += 1
    pad_x, pad_y = largest_dim - dx, largest_dim - dy
    return (pad_y // 2, pad_y - pad_y // 2, pad_x // 2, pad_x - pad_x // 2)


def torch_input(frame: np.ndarray, bbox) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int, int, int]]:
    """Facemap's preprocess_img at batch size 1 in torch: (1, 1, 256, 256), padded shape, pads."""
    x = torch.from_numpy(frame[None, None]).to(torch.float32)
    x = (x - torch.quantile(x, 0.01)) / (torch.quantile(x, 0.99) - torch.quantile(x, 0.01))
    x1, x2, y1, y2 = bbox if bbox is not None else (0, frame.shape[0], 0, frame.shape[1])
    x = x[:, :, x1:x2, y1:y2]
    pads = facemap_pads(x2 - x1, y2 - y1)
    x = F.pad(x, pads, mode="constant", value=0)
    padded = tuple(x.shape[-2:])
    return F.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False), padded, pads


def reference_keypoints(net: torch.nn.Module, frames: np.ndarray, bbox) -> tuple[np.ndarray, np.ndarray]:
    """Facemap's predict + adjust_keypoints, frame by frame: keypoints (B, 15, 3), top-2 heatmap gaps."""
    out, gaps = [], []
    for frame in frames:
        x, padded, pads = torch_input(frame, bbox)
        with torch.no_grad():
            hm, locx, locy = net(x)
        hm = hm.reshape(1, 15, 64 * 64)
        locx, locy = locx.reshape(1, 15, -1), locy.reshape(1, 15, -1)
        _, imax = torch.max(hm, -1)
        likelihood, _ = torch.max(torch.sigmoid(hm), -1)
        i_y, i_x = imax % 64, torch.div(imax, 64, rounding_mode="trunc")
        x_pred = (locx.gather(-1, imax[..., None])[..., 0] * -6.0 + i_x) * 4  # rows
        y_pred = (locy.gather(-1, imax[..., None])[..., 0] * -6.0 + i_y) * 4  # columns
        xlabels, ylabels = y_pred, x_pred
        xlabels = xlabels * (padded[1] / 256) - pads[0]
        ylabels = ylabels * (padded[0] / 256) - pads[2]
        row1, col1 = (0, 0) if bbox is None else (bbox[0], bbox[2])
        out.append(torch.stack([xlabels + col1, ylabels + row1, likelihood], -1)[0].numpy())
        top2 = torch.topk(hm, 2, dim=-1).values[0]
        gaps.append((top2[:, 0] - top2[:, 1]).numpy())
    return np.stack(out), np.stack(gaps)


def face_like_frames(n: int, shape=(480, 640), seed: int = 0) -> np.ndarray:
    """Smooth blobs plus noise: frames with structure, contrast and some saturation."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    frames = []
    for _ in range(n):
        img = 60 + rng.normal(0, 8, shape)
        for _ in range(6):
            cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
            s, a = rng.uniform(10, 60), rng.uniform(-80, 160)
            img += a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(frames)


def make_network() -> FMnet:
    """Seeded FMnet with non-trivial BatchNorm statistics and heatmaps that are not all zero."""
    torch.manual_seed(3)
    net = FMnet(CHANNELS)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.8, 1.2)
                m.bias.uniform_(-0.1, 0.1)
        net.Conv2_1x1.conv0.bias.add_(0.3)
    return net.eval()



def save_model(folder: Path, net: torch.nn.Module, channels=CHANNELS, state_name: str = STATE_NAME) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), folder / state_name)
    torch.save({"params": {"channels": list(channels)}}, folder / PARAMS_NAME)
    return folder / state_name


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    save_model(folder, make_network())
    return folder


# ---------------------------------------------------------------- FMnet


def expected_keys() -> list[str]:
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = []
    for block in [f"Conv.conv{k}" for k in range(5)] + [f"Up_conv.upconv{k}" for k in range(2)]:
        for unit in ("conv_0", "conv_1"):
            keys += [f"{block}.conv.{unit}.0.{p}" for p in bn]
            conv = "1" if (block, unit) == ("Conv.conv0", "conv_0") else "2"
            keys.append(f"{block}.conv.{unit}.{conv}.weight")
    keys += [f"Conv2_1x1.conv{j}.{p}" for j in range(3) for p in ("weight", "bias")]
    return keys


def test_fmnet_layout():
    net = FMnet(CHANNELS)
    state = net.state_dict()
    assert sum(p.numel() for p in net.parameters()) == 1_561_631
    assert len(state) == 90
    assert list(state) == expected_keys()
    assert state["Conv.conv0.conv.conv_0.1.weight"].shape == (16, 1, 3, 3)
    assert state["Up_conv.upconv0.conv.conv_0.0.weight"].shape == (328,)
    assert state["Up_conv.upconv0.conv.conv_0.2.weight"].shape == (128, 328, 3, 3)
    assert state["Up_conv.upconv1.conv.conv_1.2.weight"].shape == (64, 64, 3, 3)
    assert state["Conv2_1x1.conv2.weight"].shape == (15, 64, 1, 1)
    with torch.no_grad():
        outputs = net.eval()(torch.zeros(2, 1, 256, 256))
    assert [tuple(o.shape) for o in outputs] == [(2, 15, 64, 64)] * 3


def test_fmnet_matches_facemap_class():
    if not FACEMAP_NETWORK.is_file():
        pytest.skip(f"Facemap's source not found at {FACEMAP_NETWORK} (set FACEMAP_SRC to the facemap package folder)")
    spec = importlib.util.spec_from_file_location("facemap_network", FACEMAP_NETWORK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(1)
    theirs = module.FMnet(1, 15, list(BODYPARTS), CHANNELS, "cpu")
    with torch.no_grad():
        for m in theirs.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    ours = FMnet(CHANNELS)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    module.FMnet(1, 15, list(BODYPARTS), CHANNELS, "cpu").load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 1, 256, 256)
    for train in (False, True):
        theirs.train(train)
        ours.train(train)
        with torch.no_grad():
            for a, b in zip(theirs(x), ours(x)):
                torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---------------------------------------------------------------- pre-processing


def test_padding_geometry_by_hand():
    g = make_geometry((480, 640))
    assert (g.crop, g.pad, g.side, g.scale) == ((0, 480, 0, 640), (80, 80, 0, 0), 640, 2.5)
    g = make_geometry((480, 640), (100, 301, 50, 250))  # 201 rows x 200 cols: odd difference
    assert (g.pad, g.side) == ((0, 1, 1, 1), 202)
    g = make_geometry((480, 640), (10, 110, 20, 123))  # 100 rows x 103 cols
    assert (g.pad, g.side) == ((2, 2, 0, 1), 104)
    g = make_geometry((480, 640), (10, 210, 20, 220))  # square
    assert (g.pad, g.side) == ((0, 0, 0, 0), 200)


def interpolated_frame(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A frame whose sorted pixels change value right at both percentile ranks (4 -> 9, 200 -> 250)."""
    rng = np.random.default_rng(seed)
    n = shape[0] * shape[1]
    low, high = int(0.01 * (n - 1)) + 1, int(0.99 * (n - 1)) + 1
    values = np.full(n, 250, dtype=np.uint8)
    values[:low] = 4
    values[low:high] = rng.integers(9, 201, high - low)
    values[high - 1] = 200
    rng.shuffle(values)
    return values.reshape(shape)


def test_percentiles_equal_torch_quantile():
    rng = np.random.default_rng(1)
    frames = [
        rng.integers(0, 256, (480, 640), dtype=np.uint8),
        rng.integers(100, 103, (101, 99), dtype=np.uint8),
        face_like_frames(1, (120, 160))[0],
        # interpolated between two levels; at 480x640 torch's float32 rank rounds the p99 weight to 0
        interpolated_frame((480, 640), 0),
        interpolated_frame((40, 25), 1),
        interpolated_frame((37, 301), 2),
    ]
    interpolated = 0
    for frame in frames:
        t = torch.from_numpy(frame).to(torch.float32)
        p1, p99 = percentiles(frame)
        assert p1 == torch.quantile(t, 0.01).item()
        assert p99 == torch.quantile(t, 0.99).item()
        interpolated += int(p1 % 1 != 0) + int(p99 % 1 != 0)
    assert interpolated >= 5


@pytest.mark.parametrize(
    "shape, bbox",
    [
        ((480, 640), None),
        ((301, 457), None),  # odd sizes, even difference
        ((301, 458), None),  # odd difference
        ((640, 480), None),  # portrait
        ((480, 640), (40, 440, 100, 500)),  # square
        ((480, 640), (40, 440, 100, 520)),  # wide, even difference
        ((480, 640), (40, 441, 100, 520)),  # wide, odd difference
        ((480, 640), (13, 470, 200, 331)),  # tall, odd difference
        ((480, 640), (100, 201, 300, 400)),  # smaller than 256: upsampled
        ((256, 256), None),  # no padding, no resize
    ],
)
def test_preprocess_matches_torch(shape, bbox):
    frame = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    expected, padded, _ = torch_input(frame, bbox)
    ours = preprocess(frame, make_geometry(shape, bbox))
    assert make_geometry(shape, bbox).side == padded[0] == padded[1]
    assert ours.dtype == np.float32 and ours.shape == (256, 256)
    np.testing.assert_allclose(ours, expected[0, 0].numpy(), atol=1e-4, rtol=0)


def test_blank_frame_gives_finite_input():
    frame = np.full((48, 64), 7, dtype=np.uint8)
    frame[0, 0] = 200
    assert np.isfinite(preprocess(frame, make_geometry(frame.shape))).all()


# ---------------------------------------------------------------- decoding


def synthetic_maps(peaks: dict[int, tuple[int, int, float, float, float]]):
    """Heatmaps with one peak per keypoint and offsets at the peak; random elsewhere (below the peak)."""
    rng = np.random.default_rng(2)
    hm = rng.uniform(0, 0.5, (1, 15, 64, 64)).astype(np.float32)
    row_offset = rng.uniform(-1, 1, hm.shape).astype(np.float32)
    col_offset = rng.uniform(-1, 1, hm.shape).astype(np.float32)
    for k, (r, c, value, d_row, d_col) in peaks.items():
        hm[0, k, r, c] = value
        row_offset[0, k, r, c] = d_row
        col_offset[0, k, r, c] = d_col
    return hm, row_offset, col_offset


def test_decode_by_hand():
    # keypoint 0: cell (10, 20), offsets (0.1, -0.05): input row 4 * (10 - 0.6) = 37.6,
    # input col 4 * (20 + 0.3) = 81.2. Keypoint 1: cell (63, 0), offsets (0, 0.25): row 252, col -6.
    peaks = {0: (10, 20, 2.0, 0.1, -0.05), 1: (63, 0, 0.75, 0.0, 0.25)}
    hm, row_offset, col_offset = synthetic_maps(peaks)
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731

    # whole 480x640 frame: padded to 640x640 (80 rows above), scale 2.5
    kp = decode(hm, row_offset, col_offset, make_geometry((480, 640)))
    assert kp.shape == (1, 15, 3) and kp.dtype == np.float32
    np.testing.assert_allclose(kp[0, 0], [81.2 * 2.5, 37.6 * 2.5 - 80, sigmoid(2.0)], rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(kp[0, 1], [-6 * 2.5, 252 * 2.5 - 80, sigmoid(0.75)], rtol=1e-6, atol=1e-4)

    # bbox rows 100:301, cols 50:250 -> 201x200, padded to 202 (0 rows above, 1 column left)
    kp = decode(hm, row_offset, col_offset, make_geometry((480, 640), (100, 301, 50, 250)))
    scale = 202 / 256
    np.testing.assert_allclose(kp[0, 0, :2], [81.2 * scale - 1 + 50, 37.6 * scale + 100], atol=1e-4)
    np.testing.assert_allclose(kp[0, 1, :2], [-6 * scale - 1 + 50, 252 * scale + 100], atol=1e-4)

    # a square 256x256 crop needs neither padding nor scaling
    kp = decode(hm, row_offset, col_offset, make_geometry((480, 640), (200, 456, 300, 556)))
    np.testing.assert_allclose(kp[0, 0, :2], [81.2 + 300, 37.6 + 200], atol=1e-4)


def test_decode_takes_first_of_equal_peaks_and_flat_maps():
    hm = np.zeros((2, 15, 64, 64), dtype=np.float32)
    hm[0, 3, 5, 7] = hm[0, 3, 40, 2] = 1.0
    offsets = np.zeros_like(hm)
    kp = decode(hm, offsets, offsets, make_geometry((256, 256)))
    np.testing.assert_allclose(kp[0, 3], [28.0, 20.0, 1 / (1 + np.exp(-1.0))], rtol=1e-6)
    np.testing.assert_allclose(kp[1, 0], [0.0, 0.0, 0.5])  # an all-zero map: cell 0, likelihood 0.5


# ---------------------------------------------------------------- end to end


@pytest.mark.parametrize("bbox", [None, (41, 440, 110, 530)])
def test_backends_agree_with_facemap_reference(model_dir, cache_home, bbox):
    frames = face_like_frames(3)
    expected, gaps = reference_keypoints(make_network(), frames, bbox)
    clear = gaps > 1e-5  # skip near-tied heatmap maxima, where rounding may pick another cell
    assert clear.mean() > 0.9
    results = {}
    for engine in ("onnx", "torch"):
        tracker = load_tracker(engine, model=model_dir, bbox=bbox, threads=1)
        kp = tracker.infer(frames)
        assert kp.shape == (3, 15, 3) and kp.dtype == np.float32
        assert set(tracker.last_timings_ms) == {"preprocess", "network", "decode"}
        np.testing.assert_allclose(kp[..., :2][clear], expected[..., :2][clear], atol=0.05, rtol=0)
        np.testing.assert_allclose(kp[..., 2], expected[..., 2], atol=1e-4, rtol=0)
        results[engine] = kp
    np.testing.assert_allclose(results["onnx"][..., :2][clear], results["torch"][..., :2][clear], atol=0.05, rtol=0)
    np.testing.assert_allclose(results["onnx"][..., 2], results["torch"][..., 2], atol=1e-4, rtol=0)


def test_single_frames_equal_batch(model_dir, cache_home):
    tracker = load_tracker("onnx", model=model_dir)
    frames = face_like_frames(3, (120, 200), seed=4)
    batch = tracker.infer(frames)
    singles = np.concatenate([tracker.infer(frame) for frame in frames])
    np.testing.assert_allclose(batch, singles, atol=1e-4, rtol=0)


def test_describe(model_dir, cache_home):
    tracker = load_tracker("torch", model=model_dir / STATE_NAME, bbox=(0, 100, 0, 120))
    d = tracker.describe()
    assert d["engine"] == "torch" and d["model"] == "facemap_model_state"
    assert d["sha256"] == hashlib.sha256((model_dir / STATE_NAME).read_bytes()).hexdigest()[:12]
    assert d["channels"] == CHANNELS and d["trained"] is True
    assert d["bbox"] == [0, 100, 0, 120] and d["input_size"] == [256, 256]
    assert tuple(d["bodyparts"]) == BODYPARTS == tracker.bodyparts


def test_bundled_default_runs(cache_home):
    tracker = load_tracker(calibration=default_calibration())
    d = tracker.describe()
    assert (d["model"], d["trained"], d["channels"]) == ("facestream-default", True, CHANNELS)
    kp = tracker.infer(np.zeros((480, 640), dtype=np.uint8))
    assert kp.shape == (1, 15, 3) and np.isfinite(kp).all()


def test_bundled_default_finds_the_keypoints(cache_home):
    """The shipped model on synthetic faces it was never trained on (held-out seeds), in the
    renderer's full variety of rigs (lighting, backgrounds, props, lids): 2.6-2.9 px measured
    (docs/tracker-training.md); the bounds keep it from getting worse."""
    from facestream.engines.training.evaluation import evaluate

    result = evaluate(load_tracker(calibration=default_calibration()), 30)
    assert result["mean_px_error"] < 3.2
    assert all(row["mean_px_error"] is None or row["mean_px_error"] < 6.0 for row in result["per_keypoint"].values())
    assert result["likelihood_visible"] > result["likelihood_occluded"]


# ---------------------------------------------------------------- user errors


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"engine": "tensorflow"}, "unknown engine"),
        ({"bbox": (100, 50, 0, 10)}, "reversed"),
        ({"bbox": (0, 10, 30, 30)}, "reversed"),
        ({"bbox": (-1, 10, 0, 10)}, "negative"),
        ({"bbox": (0, 10.5, 0, 10)}, "4 integers"),
        ({"bbox": (0, 10, 0)}, "4 integers"),
        ({"threads": -1}, "threads"),
    ],
)
def test_bad_arguments(kwargs, words):
    with pytest.raises(TrackerError, match=words) as info:
        load_tracker(**kwargs)
    assert "\n" not in str(info.value)


def test_bbox_outside_frame_detected_at_first_infer(model_dir, cache_home):
    tracker = load_tracker("torch", model=model_dir, bbox=(0, 300, 0, 700))
    with pytest.raises(TrackerError, match="outside the 480x640"):
        tracker.infer(np.zeros((480, 640), dtype=np.uint8))
    tracker.infer(np.zeros((400, 800), dtype=np.uint8))


def test_bad_frames(model_dir, cache_home):
    tracker = load_tracker("torch", model=model_dir)
    for frames in (np.zeros((48, 64), np.float32), np.zeros((2, 3, 48, 64), np.uint8), np.zeros((0, 48, 64), np.uint8)):
        with pytest.raises(TrackerError, match="uint8|empty"):
            tracker.infer(frames)


# ---------------------------------------------------------------- model files


def test_model_round_trip(tmp_path):
    net = make_network()
    state_path = save_model(tmp_path / "m", net, state_name="finetuned.pt")
    for source in (state_path, tmp_path / "m"):
        model = load_model(source)
        assert model.name == "finetuned" and model.trained is True
        assert model.channels == tuple(CHANNELS)
        assert model.sha256 == hashlib.sha256(state_path.read_bytes()).hexdigest()
        assert model.identity()["sha256"] == model.sha256[:12]
        x = torch.randn(1, 1, 256, 256)
        with torch.no_grad():
            for a, b in zip(net(x), model.build()(x)):
                torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bundled_model_identity():
    model = load_model()
    assert model.identity()["name"] == "facestream-default"
    assert model.identity()["trained"] is True
    assert model.channels == tuple(CHANNELS)
    assert model.sha256 == hashlib.sha256(model.state_path.read_bytes()).hexdigest()


def test_a_checked_model_loads_again_from_its_record(tmp_path, cache_home):
    """A model that passed the checks is recorded under its two files' sha256; loading the same
    files again reads that record instead of unpickling them (a cached engine then starts without
    torch) and reads the weights only when they are asked for. A damaged record is ignored and
    the files are checked again."""
    net = make_network()
    state_path = save_model(tmp_path / "m", net, state_name="finetuned.pt")
    first = load_model(state_path)
    records = sorted((cache_home / "facestream" / "checked-models").glob(f"{first.sha256}-*.json"))
    assert len(records) == 1
    again = load_model(state_path)
    assert "state_dict" not in vars(again)  # not read yet
    assert again == first and again.synthetic_only is False
    x = torch.randn(1, 1, 256, 256)
    with torch.no_grad():
        for a, b in zip(net(x), again.build()(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    records[0].write_text("{damaged")
    assert load_model(state_path) == first
    assert json.loads(records[0].read_text())["channels"] == CHANNELS  # checked and recorded again
    # other bytes are other files: a file changed after its check is checked again, and refused
    state_path.write_bytes(np.random.default_rng(6).bytes(5000))
    assert_model_error(state_path, "not a plain torch tensor file")


def assert_model_error(path: Path, *words: str) -> None:
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400
    for word in words:
        assert word in message


def test_random_file_is_refused(tmp_path):
    state_path = save_model(tmp_path, make_network())
    state_path.write_bytes(np.random.default_rng(5).bytes(5000))
    assert_model_error(state_path, str(state_path), "not a plain torch tensor file")


def test_wrong_shapes_are_refused(tmp_path):
    state_path = save_model(tmp_path, FMnet([8, 16, 32, 64, 100]), channels=CHANNELS)
    assert_model_error(state_path, str(state_path), "shape")


def test_missing_keys_are_refused(tmp_path):
    state_path = save_model(tmp_path, make_network())
    state = torch.load(state_path, weights_only=True)
    del state["Conv2_1x1.conv1.bias"]
    torch.save(state, state_path)
    assert_model_error(state_path, str(state_path), "missing Conv2_1x1.conv1.bias")


def test_bad_params_are_refused(tmp_path):
    state_path = save_model(tmp_path, make_network())
    torch.save({"params": {"channels": [16, 32, 64]}}, tmp_path / PARAMS_NAME)
    assert_model_error(state_path, str(tmp_path / PARAMS_NAME), "5 positive integers")
    torch.save({"something": 1}, tmp_path / PARAMS_NAME)
    assert_model_error(state_path, str(tmp_path / PARAMS_NAME), "not a Facemap params file")


def test_files_that_are_not_a_facemap_model(tmp_path):
    state_path = save_model(tmp_path / "m", make_network())
    assert_model_error(tmp_path / "m" / PARAMS_NAME, "params file", "give the state file")
    state_path.write_text("<html>Please log in</html>")
    assert_model_error(state_path, str(state_path), "not a plain torch tensor file (empty, truncated or another format)")
    state_path.write_bytes(b"")
    assert_model_error(state_path, "empty, truncated or another format")
    torch.save({"state_dict": make_network().state_dict(), "epoch": 3}, state_path)
    assert_model_error(state_path, "not a Facemap tracker state file", "its keys: state_dict, epoch")
    state_path.unlink()
    (tmp_path / "m" / "a.pt").write_bytes(b"")
    (tmp_path / "m" / "b.pt").write_bytes(b"")
    assert_model_error(tmp_path / "m", "not a Facemap model folder", "a.pt, b.pt")


def test_missing_params(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    state_path = save_model(tmp_path / "m", make_network())
    (tmp_path / "m" / PARAMS_NAME).unlink()
    assert_model_error(state_path, str(state_path), PARAMS_NAME)
    assert_model_error(tmp_path / "nowhere.pt", "no such model file")
    # Facemap's own folder supplies the params of fine-tuned models kept elsewhere
    facemap_dir = tmp_path / "home" / ".facemap" / "models"
    facemap_dir.mkdir(parents=True)
    torch.save({"params": {"channels": CHANNELS}}, facemap_dir / PARAMS_NAME)
    assert load_model(state_path).params_path == (facemap_dir / PARAMS_NAME).resolve()


@pytest.mark.parametrize("which", ["state", "params"])
@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_malicious_pickle_is_not_executed(tmp_path, which, writer):
    state_path = save_model(tmp_path, make_network())
    target = state_path if which == "state" else tmp_path / PARAMS_NAME
    marker = tmp_path / "marker"
    payload = {"weights": Payload(marker)}
    if writer == "pickle":
        target.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, target)
    assert_model_error(state_path, str(target), "not a plain torch tensor file")
    assert not marker.exists()
    # the same file does run code when loaded as a full pickle: the check above is meaningful
    if writer == "pickle":
        pickle.loads(target.read_bytes())
    else:
        torch.load(target, weights_only=False)
    assert marker.exists()


# ---------------------------------------------------------------- ONNX cache


def test_onnx_export_is_cached(model_dir, cache_home):
    model = load_model(model_dir)
    path = onnx_cache_path(model)
    path.unlink(missing_ok=True)
    load_tracker("onnx", model=model_dir)
    first = path.stat()
    load_tracker("onnx", model=model_dir)
    second = path.stat()
    assert (second.st_ino, second.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    assert not list(path.parent.glob("*.tmp"))
    # a damaged cache file is replaced by a fresh export
    path.write_bytes(b"not onnx")
    frame = face_like_frames(1, (100, 100))[0]
    kp = load_tracker("onnx", model=model_dir).infer(frame)
    assert path.stat().st_size > 1_000_000
    np.testing.assert_allclose(kp, load_tracker("torch", model=model_dir).infer(frame), atol=1e-3)


# ---------------------------------------------------------------- params files holding numpy values


def _rename_globals(path: Path, renames: dict[bytes, bytes]) -> None:
    """Rewrite the pickle inside a torch.save archive, renaming globals (pickle protocol 2 names
    them as text lines: b"cmodule\\nname\\n"), as another numpy or a crafted file would have them."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info.filename)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in entries:
            if info.filename.endswith("/data.pkl"):
                for old, new in renames.items():
                    assert old in data
                    data = data.replace(old, new)
            archive.writestr(info, data)


def facemap_params(channels=CHANNELS) -> dict:
    """A params dict as Facemap's is made (``["params"]`` read by pose.py), with numpy values in it:
    numpy integers for the widths, numpy floats, a string array, a float array."""
    return {
        "params": {
            "channels": [np.int64(c) for c in channels],
            "bodyparts": np.array(BODYPARTS),
            "sigma": np.float64(3.0),
            "lr": np.float32(1e-4),
            "image_size": np.array([256, 256], np.int32),
            "mean": np.zeros((2, 3), np.float32),
            "kernel": 3,
            "name": "facemap base",
        },
        "epochs": np.int32(36),
    }


@pytest.mark.parametrize("numpy_names", ["numpy 2", "numpy 1"])
def test_params_with_numpy_values_load(tmp_path, numpy_names):
    net = make_network()
    state_path = save_model(tmp_path, net)
    torch.save(facemap_params(), tmp_path / PARAMS_NAME)
    if numpy_names == "numpy 1":  # a file written under numpy 1 names numpy.core, not numpy._core
        _rename_globals(tmp_path / PARAMS_NAME, {b"cnumpy._core.multiarray\n": b"cnumpy.core.multiarray\n"})
    model = load_model(state_path)
    assert model.channels == tuple(CHANNELS) and all(type(c) is int for c in model.channels)
    x = torch.randn(1, 1, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(model.build()(x)[0], net(x)[0], rtol=0, atol=0)
    # widths as a numpy array work too
    torch.save({"params": {"channels": np.array(CHANNELS)}}, tmp_path / PARAMS_NAME)
    assert load_model(state_path).channels == tuple(CHANNELS)


class _System:
    """Unpickling this calls os.system(command)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_params_naming_os_system_is_refused_and_runs_nothing(tmp_path):
    state_path = save_model(tmp_path, make_network())
    marker = tmp_path / "ran"
    params = facemap_params()
    params["params"]["hook"] = _System(f"touch {marker}")
    torch.save(params, tmp_path / PARAMS_NAME)
    _rename_globals(tmp_path / PARAMS_NAME, {f"c{os.system.__module__}\nsystem\n".encode(): b"cos\nsystem\n"})
    with pytest.raises(ModelFileError) as info:
        load_model(state_path)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400
    assert message.startswith(f"{tmp_path / PARAMS_NAME}: ") and "refused global os.system" in message
    assert not marker.exists()
    torch.load(tmp_path / PARAMS_NAME, weights_only=False)  # the same file does run code as a full pickle
    assert marker.exists()


def test_numpy_allowance_does_not_outlive_the_load(tmp_path):
    """The numpy globals are allowed only inside model_files' own load, not for torch.load at large."""
    torch.save(facemap_params(), tmp_path / PARAMS_NAME)
    save_model(tmp_path / "m", make_network())
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / PARAMS_NAME, weights_only=True)


def test_bundled_model_is_synthetic_only(tmp_path):
    assert load_model().synthetic_only is True
    assert load_model(save_model(tmp_path, make_network())).synthetic_only is False
