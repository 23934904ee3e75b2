"""`facestream simulate`: a synthetic session on disk, checked against the camera that made it."""
from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from facestream.camera_adapters.synthetic import LATENT_NAMES, SyntheticCamera
from facestream.engines.bodyparts import BODYPARTS
from facestream.streamer.cli import main
from facestream.streamer.config import ConfigError
from facestream.streamer.simulate import POSE_NAME, VIDEO_NAME, write_session

FRAMES, FPS, SEED, SIZE = 30, 25.0, 4, (320, 240)


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "new folder"
    result = CliRunner().invoke(main, [
        "simulate", "--frames", str(FRAMES), "--out", str(out), "--seed", str(SEED), "--fps", str(FPS),
        "--width", str(SIZE[0]), "--height", str(SIZE[1]),
    ])
    assert result.exit_code == 0, result.output
    return out


def _video(path: Path) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    cap.release()
    return frames, fps


def test_the_video_holds_the_rendered_frames_in_order(session):
    frames, fps = _video(session / VIDEO_NAME)
    assert len(frames) == FRAMES and fps == pytest.approx(FPS)
    assert all(f.shape == (SIZE[1], SIZE[0]) for f in frames)
    cam = SyntheticCamera(*SIZE, fps=FPS, seed=SEED)
    rendered = [cam.render(k)[0].astype(np.float32) for k in range(FRAMES)]
    for k in (0, 1, FRAMES // 2, FRAMES - 1):
        errors = [np.abs(frames[k].astype(np.float32) - r).mean() for r in rendered]
        assert errors[k] < 6, "codec loss only"
        assert int(np.argmin(errors)) == k


def test_the_pose_file_has_facemaps_layout_and_the_true_keypoints(session):
    cam = SyntheticCamera(*SIZE, fps=FPS, seed=SEED)
    truth = np.stack([cam.render(k)[1] for k in range(FRAMES)])
    with h5py.File(session / POSE_NAME, "r") as f:
        assert set(f["Facemap"]) == set(BODYPARTS)
        for i, name in enumerate(BODYPARTS):
            g = f["Facemap"][name]
            assert set(g) == {"x", "y", "likelihood"}
            for key, col in (("x", 0), ("y", 1), ("likelihood", 2)):
                assert g[key].dtype == np.float32 and g[key].shape == (FRAMES,)
                assert np.array_equal(g[key][:], truth[:, i, col])
        fs = f["facestream"]
        assert fs["frame_id"].dtype == np.int64 and np.array_equal(fs["frame_id"][:], np.arange(FRAMES))
        assert np.array_equal(fs["visible"][:], truth[:, :, 2].astype(np.uint8))
        t_ns = fs["t_ns"][:]
        assert t_ns.dtype == np.int64 and t_ns[0] == 0
        assert np.all(np.abs(np.diff(t_ns) - 1e9 / FPS) <= 1), "one frame period apart"
        assert set(f["latents"]) == set(LATENT_NAMES)
        for k in (0, FRAMES - 1):
            assert {n: f["latents"][n][k] for n in LATENT_NAMES} == pytest.approx(cam.latents(k))
        assert f.attrs["fps"] == FPS and f.attrs["seed"] == SEED and f.attrs["frames"] == FRAMES
        assert list(f.attrs["bodyparts"]) == list(BODYPARTS)


def test_write_session_refuses_nonsense(tmp_path):
    with pytest.raises(ConfigError):
        write_session(tmp_path, 0, progress=False)
    with pytest.raises(ConfigError):
        write_session(tmp_path, 3, fps=0.0, progress=False)
    assert not (tmp_path / VIDEO_NAME).exists()


@pytest.mark.parametrize("case", ["no frames", "no fps", "out is a file", "out below a file"])
def test_cli_errors_are_one_line_and_fail(tmp_path, case):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    args = {
        "no frames": ["--frames", "0", "--out", str(tmp_path / "x")],
        "no fps": ["--frames", "2", "--fps", "0", "--out", str(tmp_path / "x")],
        "out is a file": ["--frames", "2", "--out", str(blocker)],
        "out below a file": ["--frames", "2", "--out", str(blocker / "sub")],
    }[case]
    result = CliRunner().invoke(main, ["simulate", "--quiet", *args])
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), "no exception escapes"
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if "rror" in line]
    assert len(errors) == 1
    if case == "out below a file":
        assert errors[0].startswith("facestream: error: ") and str(blocker) in errors[0]
