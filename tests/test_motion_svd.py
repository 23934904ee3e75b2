"""Motion SVD: Facemap's binning and components, learning in the background, files; and both
classic outputs (pupil, motion SVD) through a real run: frame messages and the recording."""
import json
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from facestream.streamer.client import Subscriber
from facestream.streamer.config import ConfigError
from facestream.streamer.motion_svd import Components, MotionSVD, MotionSVDError, learn_components, spatial_bin

CLI = [sys.executable, "-m", "facestream.streamer.cli"]


def _facemap_spatial_bin(im: np.ndarray, sbin: int) -> np.ndarray:
    """Facemap 1.0.8's process.spatial_bin for one frame."""
    lyb, lxb = im.shape[0] // sbin, im.shape[1] // sbin
    return np.reshape(im[None, :lyb * sbin, :lxb * sbin], (-1, lyb, sbin, lxb, sbin)).mean(-1).mean(-2).reshape(-1)


@pytest.mark.parametrize("sbin", [1, 3, 4])
def test_binning_is_facemaps(sbin):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (50, 71), dtype=np.uint8)
    region = (5, 50, 3, 71)
    np.testing.assert_allclose(spatial_bin(frame, region, sbin), _facemap_spatial_bin(frame[5:50, 3:71], sbin), rtol=1e-5)


def test_components_span_the_motion():
    """Motion made of 3 spatial patterns: the 3 components learned span them, and projecting
    gives back each frame's mixture."""
    rng = np.random.default_rng(1)
    patterns = rng.normal(size=(3, 400))
    weights = rng.normal(size=(200, 3)) * [5.0, 3.0, 1.0]
    motion = 10.0 + weights @ patterns
    mean, u = learn_components(motion, 3)
    np.testing.assert_allclose(u.T @ u, np.eye(3), atol=1e-4)
    reconstructed = ((motion - mean) @ u) @ u.T + mean
    np.testing.assert_allclose(reconstructed, motion, atol=1e-3)
    _, s, vt = np.linalg.svd(motion - motion.mean(0), full_matrices=False)
    np.testing.assert_allclose(np.abs(np.sum(vt[:3] * u.T, axis=1)), 1.0, atol=1e-4)


def _frames(n: int, shape=(48, 64), seed=2) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]


def test_nothing_until_components_are_learned_then_every_frame():
    frames = _frames(40)
    motion = MotionSVD((48, 64), None, 4, 5, learn_seconds=0.1)
    out = [motion.step(f, k * 20_000_000) for k, f in enumerate(frames[:10])]  # 0.1 s at 50 frames/s: 5 frames
    assert all(v is None for v in out[:6])
    assert motion.wait(30) and motion.describe()["ready"] and motion.describe()["source"] == "learned"
    after = motion.step(frames[10], 10 * 20_000_000)
    assert after.shape == (5,)
    expected = np.abs(spatial_bin(frames[10], (0, 48, 0, 64), 4) - spatial_bin(frames[9], (0, 48, 0, 64), 4))
    c = motion.components
    np.testing.assert_allclose(after, (expected - c.mean) @ c.components, rtol=1e-5)


def test_learning_waits_for_enough_frames_for_its_components():
    motion = MotionSVD((48, 64), None, 4, 8, learn_seconds=0.0)
    for k, f in enumerate(_frames(9)):  # 8 motion frames: not more than the 8 components
        assert motion.step(f, k) is None
    assert not motion.wait(1) and motion._thread is None
    motion.step(_frames(1, seed=9)[0], 9)
    assert motion.wait(30) and motion.components.components.shape == (12 * 16, 8)


def test_saved_components_load_and_are_used_from_the_second_frame(tmp_path):
    path = tmp_path / "components.npz"
    motion = MotionSVD((48, 64), (8, 48, 0, 64), 4, 3, learn_seconds=0.0, save=str(path))
    for k, f in enumerate(_frames(6)):
        motion.step(f, k)
    assert motion.wait(30) and path.is_file()
    loaded = Components.load(path)
    assert loaded.region == (8, 48, 0, 64) and loaded.bin == 4
    np.testing.assert_array_equal(loaded.components, motion.components.components)
    again = MotionSVD((48, 64), (8, 48, 0, 64), 4, 50, learn_seconds=10.0, components=loaded)
    first, second = _frames(2, seed=5)
    assert again.step(first, 0) is None and again.step(second, 1).shape == (3,)
    assert again.describe()["source"] == "file"


def test_components_of_another_region_or_file_are_refused_in_one_line(tmp_path):
    good = Components(np.zeros((120, 2), np.float32), np.zeros(120, np.float32), (0, 40, 0, 48), 4)
    with pytest.raises(MotionSVDError, match=r"learned on region \[0, 40, 0, 48\] binned by 4, not on this camera's"):
        MotionSVD((48, 64), None, 4, 2, 1.0, components=good)
    with pytest.raises(MotionSVDError, match="not inside the 64x48 frame"):
        MotionSVD((48, 64), (0, 100, 0, 64), 4, 2, 1.0)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    for path, match in ((tmp_path / "bad.npz", "not a readable .npz"), (tmp_path / "none.npz", "not found")):
        with pytest.raises(MotionSVDError, match=match) as e:
            Components.load(path)
        assert "\n" not in str(e.value) and isinstance(e.value, ConfigError)
    np.savez(tmp_path / "partial.npz", components=np.zeros((4, 2)))
    with pytest.raises(MotionSVDError, match="has no mean"):
        Components.load(tmp_path / "partial.npz")


def _run(endpoint, tmp_path, config: str, record, frames: int = 40) -> tuple[list[dict], dict]:
    cfg = tmp_path / f"{record.stem}.toml"
    cfg.write_text(config)
    with Subscriber(endpoint) as sub:
        proc = subprocess.Popen([*CLI, "run", "--config", str(cfg), "--publish", endpoint, "--policy", "every", "--fps", "30",
                                 "--frames", str(frames), "--wait-subscribers", "1", "--record", str(record), "--quiet"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        got, deadline = [], time.monotonic() + 120
        while len(got) < frames and time.monotonic() < deadline:
            m = sub.recv(timeout=0.5)
            if m is not None and m.topic == "frame":
                got.append(m.data)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    with h5py.File(record, "r") as f:
        rows = {k: f[f"facestream/{k}"][()] for k in f["facestream"]}
        rows["meta"] = json.loads(f["facestream"].attrs["meta"])
    return got, rows


def test_a_run_publishes_and_records_pupil_and_motion_svd(endpoint, tmp_path):
    saved = tmp_path / "components.npz"
    config = f'[motion_svd]\ncomponents = 4\nlearn_seconds = 0.0\nsave = "{saved}"\n'
    frames, rows = _run(endpoint, tmp_path, config, tmp_path / "first.h5")
    assert len(frames) == 40 and len(rows["seq"]) == 40
    for m in frames:
        assert set(m["pupil"]) == {"area", "centre", "axes", "valid"}
    fitted = [m["pupil"] for m in frames if m["pupil"]["area"] is not None]
    assert fitted and all(p["area"] > 0 for p in fitted)
    area = [np.nan if m["pupil"]["area"] is None else m["pupil"]["area"] for m in frames]
    np.testing.assert_allclose(rows["pupil_area"], np.asarray(area, np.float32))
    np.testing.assert_array_equal(rows["pupil_valid"], [m["pupil"]["valid"] for m in frames])
    # motion SVD: absent until its components are learned (in the background), then in every frame
    has = [("motion_svd" in m) for m in frames]
    first = has.index(True)
    assert first >= 5 and all(has[first:])
    assert all(len(m["motion_svd"]) == 4 for m in frames[first:])
    assert np.isnan(rows["motion_svd"][:first]).all()
    np.testing.assert_allclose(rows["motion_svd"][first:], np.asarray([m["motion_svd"] for m in frames[first:]], np.float32))
    camera = rows["meta"]["cameras"][0]["motion_svd"]
    assert camera["ready"] and camera["source"] == "learned" and camera["region"] == [0, 480, 0, 640]
    assert rows["meta"]["pupil"]["region_scale"] == 0.85
    assert {"pupil_ms", "motion_svd_ms"} <= set(rows["meta"]["stats"]["stages_ms"])

    # a later run loads them: motion SVD from its second frame on; the pupil switched off
    config = f'[pupil]\nenabled = false\n[motion_svd]\nload = "{saved}"\n'
    frames, rows = _run(endpoint, tmp_path, config, tmp_path / "second.h5", frames=10)
    assert "motion_svd" not in frames[0] and all(len(m["motion_svd"]) == 4 for m in frames[1:])
    assert all("pupil" not in m for m in frames) and "pupil_area" not in rows
    assert rows["meta"]["cameras"][0]["motion_svd"]["source"] == "file" and rows["meta"]["pupil"] is None


def test_components_for_another_frame_size_stop_the_run_in_one_line(endpoint, tmp_path):
    saved = tmp_path / "small.npz"
    Components(np.zeros((120, 2), np.float32), np.zeros(120, np.float32), (0, 40, 0, 48), 4).save(saved)
    cfg = tmp_path / "load.toml"
    cfg.write_text(f'[motion_svd]\nload = "{saved}"\n')
    out = subprocess.run([*CLI, "run", "--config", str(cfg), "--publish", endpoint, "--frames", "3", "--quiet"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and out.stderr.strip().splitlines()[-1:] == [
        "facestream: error: motion SVD components were learned on region [0, 40, 0, 48] binned by 4, "
        "not on this camera's region [0, 480, 0, 640] binned by 4"]
