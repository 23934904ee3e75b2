"""`facestream simulate`: a synthetic session on disk, checked against the camera that made it."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from facestream.camera_adapters.synthetic.camera import LATENT_NAMES, SyntheticCamera
from facestream.engines.bodyparts import BODYPARTS
from facestream.streamer.cli import main
from facestream.streamer.config import ConfigError
from facestream.streamer.motion_svd import MotionSVD, spatial_bin
from facestream.engines.training.synthetic_neurons import NeuralPopulation
from facestream.streamer.tools.simulate import NEURAL_NAME, NEURAL_TIMES_NAME, POSE_NAME, VIDEO_NAME, write_session

FRAMES, FPS, SEED, SIZE = 30, 25.0, 4, (320, 240)
NEURONS, NEURAL_RATE = 300, 20.0


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "new folder"
    result = CliRunner().invoke(main, [
        "simulate", "--frames", str(FRAMES), "--out", str(out), "--seed", str(SEED), "--fps", str(FPS),
        "--width", str(SIZE[0]), "--height", str(SIZE[1]), "--neurons", str(NEURONS), "--neural-rate", str(NEURAL_RATE),
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


def test_the_neural_files_hold_the_population_at_its_own_rate(session):
    activity = np.load(session / NEURAL_NAME)
    t_ns = np.load(session / NEURAL_TIMES_NAME)
    last_frame_s = (FRAMES - 1) / FPS
    assert t_ns.dtype == np.int64 and activity.dtype == np.float32
    assert activity.shape == (NEURONS, len(t_ns))
    expected = np.arange(0.25, 100) / NEURAL_RATE
    expected = expected[expected <= last_frame_s]
    assert len(t_ns) == len(expected) > 20
    np.testing.assert_allclose(t_ns, expected * 1e9, atol=1)
    cam = SyntheticCamera(*SIZE, fps=FPS, seed=SEED)
    population = NeuralPopulation.create(NEURONS, SEED)
    expected_counts = population.rates(cam.model.latents, t_ns / 1e9) / NEURAL_RATE  # rate x bin
    assert (activity >= 0).all() and (activity == np.round(activity)).all(), "spike counts"
    # each neuron's count follows its face-driven rate (shared noise and gamma-Poisson aside)
    assert np.corrcoef(expected_counts.sum(axis=1), activity.sum(axis=1))[0, 1] > 0.7
    assert 0.5 < activity.sum() / expected_counts.sum() < 2.0


def test_no_video_writes_the_same_keypoints_and_neurons_without_frames(session, tmp_path):
    out = tmp_path / "fast"
    result = CliRunner().invoke(main, [
        "simulate", "--frames", str(FRAMES), "--out", str(out), "--seed", str(SEED), "--fps", str(FPS),
        "--width", str(SIZE[0]), "--height", str(SIZE[1]), "--neurons", str(NEURONS), "--neural-rate",
        str(NEURAL_RATE), "--no-video", "--quiet",
    ])
    assert result.exit_code == 0, result.output
    assert not (out / VIDEO_NAME).exists()
    with h5py.File(out / POSE_NAME) as fast, h5py.File(session / POSE_NAME) as rendered:
        for name in BODYPARTS:
            for column in ("x", "y", "likelihood"):
                np.testing.assert_array_equal(fast[f"Facemap/{name}/{column}"][()], rendered[f"Facemap/{name}/{column}"][()])
    np.testing.assert_array_equal(np.load(out / NEURAL_NAME), np.load(session / NEURAL_NAME))


def test_the_heldout_population_is_built_differently(tmp_path):
    """Same face, different neurons: its activity is not the default population's."""
    folders = {}
    for population in ("default", "heldout"):
        folders[population] = tmp_path / population
        write_session(folders[population], 200, seed=2, fps=50.0, width=160, height=120, neurons=50,
                      population=population, video=False, progress=False)
        with h5py.File(folders[population] / POSE_NAME) as f:
            assert f.attrs["population"] == population
    default, heldout = (np.load(folders[p] / NEURAL_NAME) for p in ("default", "heldout"))
    assert default.shape == heldout.shape == (50, len(np.load(folders["default"] / NEURAL_TIMES_NAME)))
    assert (heldout >= 0).all() and heldout.sum() > 0
    assert not np.array_equal(default, heldout)


def test_population_leads_and_lags_behaviour_by_its_shifts():
    cam = SyntheticCamera(320, 240, fps=50.0, seed=1)
    population = NeuralPopulation.create(200, seed=1)
    leading, lagging = np.flatnonzero(population.shift_s <= -0.1)[0], np.flatnonzero(population.shift_s >= 0.1)[0]
    unshifted = replace(population, shift_s=np.zeros(200))
    t = np.linspace(3.0, 5.0, 41)
    for i in (leading, lagging):
        np.testing.assert_allclose(
            population.rates(cam.model.latents, t)[i], unshifted.rates(cam.model.latents, t - population.shift_s[i])[i],
            rtol=1e-9, atol=1e-9)
    assert 0.2 < (population.shift_s < 0).mean() < 0.4


def test_population_is_a_function_of_seed_and_time():
    cam = SyntheticCamera(320, 240, fps=50.0, seed=2)
    population = NeuralPopulation.create(100, seed=2)
    whole = population.rates(cam.model.latents, np.arange(0, 300) / 30.0)
    part = population.rates(cam.model.latents, np.arange(200, 260) / 30.0)
    np.testing.assert_allclose(part, whole[:, 200:260], rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(NeuralPopulation.create(100, seed=2).weights, population.weights)
    assert not np.array_equal(NeuralPopulation.create(100, seed=3).weights, population.weights)
    s = np.linalg.svd(whole - whole.mean(axis=1, keepdims=True), compute_uv=False) ** 2
    assert s[:12].sum() / s.sum() > 0.9, "low-dimensional: a dozen components hold the rates"


def test_no_neural_files_without_neurons(tmp_path):
    session = write_session(tmp_path, 3, neurons=0, progress=False)
    assert session.neural is None and not (tmp_path / NEURAL_NAME).exists()
    assert not (tmp_path / NEURAL_TIMES_NAME).exists()


def test_write_session_refuses_nonsense(tmp_path):
    with pytest.raises(ConfigError):
        write_session(tmp_path, 0, progress=False)
    with pytest.raises(ConfigError):
        write_session(tmp_path, 3, fps=0.0, progress=False)
    with pytest.raises(ConfigError):
        write_session(tmp_path, 3, neurons=-1, progress=False)
    with pytest.raises(ConfigError):
        write_session(tmp_path, 3, neural_rate=0.0, progress=False)
    with pytest.raises(ConfigError, match="population must be one of default, heldout"):
        write_session(tmp_path, 3, population="other", progress=False)
    assert not (tmp_path / VIDEO_NAME).exists()


@pytest.mark.parametrize("case", ["no frames", "no fps", "out is a file", "out below a file", "no neural rate"])
def test_cli_errors_are_one_line_and_fail(tmp_path, case):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    args = {
        "no frames": ["--frames", "0", "--out", str(tmp_path / "x")],
        "no fps": ["--frames", "2", "--fps", "0", "--out", str(tmp_path / "x")],
        "out is a file": ["--frames", "2", "--out", str(blocker)],
        "out below a file": ["--frames", "2", "--out", str(blocker / "sub")],
        "no neural rate": ["--frames", "2", "--neural-rate", "0", "--out", str(tmp_path / "x")],
    }[case]
    result = CliRunner().invoke(main, ["simulate", "--quiet", *args])
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), "no exception escapes"
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if "rror" in line]
    assert len(errors) == 1
    if case == "out below a file":
        assert errors[0].startswith("facestream: error: ") and str(blocker) in errors[0]


def test_the_pose_file_has_the_true_pupil_and_the_live_motion_svd(tmp_path):
    """/pupil is the camera's true pupil; /facestream/motion_svd is every frame projected on the
    components a run's MotionSVD learns from the same frames (here all of them: 40 frames are
    less than the 10 s the components are learned from)."""
    out = tmp_path / "motion"
    session = write_session(out, 40, seed=SEED, fps=FPS, width=SIZE[0], height=SIZE[1], neurons=0, progress=False,
                            motion_components=4)
    assert session.motion_svd == 4
    cam = SyntheticCamera(*SIZE, fps=FPS, seed=SEED)
    live = MotionSVD((SIZE[1], SIZE[0]), None, 4, 4, learn_seconds=39 / FPS)  # learns at the last frame
    frames = [cam.render(k)[0] for k in range(40)]
    for k, pixels in enumerate(frames):
        assert live.step(pixels, round(k * 1e9 / FPS)) is None
    assert live.wait(30)
    c, region = live.components, (0, SIZE[1], 0, SIZE[0])
    binned = [spatial_bin(f, region, 4) for f in frames]
    expected = np.stack([(np.abs(b - a) - c.mean) @ c.components for a, b in zip(binned, binned[1:])])
    with h5py.File(out / POSE_NAME) as f:
        motion = f["facestream/motion_svd"][()]
        pupil = np.stack([f["pupil"][k][()] for k in ("x", "y", "radius")], axis=1)
    assert motion.shape == (40, 4) and np.isfinite(motion).all()
    np.testing.assert_allclose(motion[1:], expected, rtol=1e-4, atol=1e-2)
    np.testing.assert_array_equal(motion[0], motion[1])  # Facemap's: the first frame has no motion of its own
    np.testing.assert_allclose(pupil, [cam.pupil(k) for k in range(40)])
    fast = write_session(tmp_path / "fast", 40, seed=SEED, fps=FPS, width=SIZE[0], height=SIZE[1], neurons=0,
                         progress=False, video=False)
    assert fast.motion_svd == 0
    with h5py.File(tmp_path / "fast" / POSE_NAME) as f:
        assert "motion_svd" not in f["facestream"] and "pupil" in f
