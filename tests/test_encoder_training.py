"""Training the streaming encoder: the split, the fixed statistics, learning, files and errors."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from facestream.camera_adapters.synthetic.camera import SyntheticCamera
from facestream.engines.bodyparts import BODYPARTS, N_KEYPOINTS
from facestream.engines.encoder import NeuralProjection, load_encoder
from facestream.engines.encoder_network import KeypointsEncoder
from facestream.engines.training.encoder_training import (
    EncoderTrainingError,
    EpochReport,
    Recording,
    TrainSettings,
    carve_validation,
    fit,
    fit_inputs,
    neural_at_frames,
    prepare,
    split_segments,
    to_neurons,
    train_encoders,
)
from facestream.engines.training.synthetic_neurons import NeuralPopulation, neural_times
from facestream.streamer.cli import main

FPS, RATE = 50.0, 30.0


def synthetic_recording(frames: int, neurons: int, seed: int = 3) -> Recording:
    """The synthetic face's true keypoints and its population's activity, as simulate writes them."""
    camera = SyntheticCamera(640, 480, fps=FPS, seed=seed)
    keypoints = np.stack([camera.model.pose(k / FPS).keypoints for k in range(frames)])
    times = neural_times((frames - 1) / FPS, RATE, 0.25 / RATE)
    population = NeuralPopulation.create(neurons, seed)
    activity = population.sample(camera.model.latents, times, np.random.default_rng(seed))
    return Recording(keypoints, np.arange(frames) / FPS, activity, times)


@pytest.fixture(scope="module")
def recording() -> Recording:
    return synthetic_recording(6000, 200)


def write_session(folder: Path, recording: Recording, **replace) -> Path:
    """The session files `facestream simulate` writes: keypoints h5, neural.npy, neural_t_ns.npy."""
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(folder / "rec_FacemapPose.h5", "w") as f:
        for i, name in enumerate(BODYPARTS):
            for j, key in enumerate(("x", "y", "likelihood")):
                f[f"Facemap/{name}/{key}"] = recording.keypoints[:, i, j].astype(np.float32)
        f["facestream/t_ns"] = np.round(recording.frame_t_s * 1e9).astype(np.int64)
    np.save(folder / "neural.npy", replace.get("neural", recording.neural))
    np.save(folder / "neural_t_ns.npy", replace.get("times", np.round(recording.neural_t_s * 1e9).astype(np.int64)))
    return folder


def test_split_keeps_test_frames_away_from_training_frames():
    train, test = split_segments(1000, 20, segments=10, test_fraction=0.25, gap=7)
    assert len(train) == len(test) == 10
    train_frames = np.concatenate([np.arange(a, b) for a, b in train])
    test_frames = np.concatenate([np.arange(a, b) for a, b in test])
    assert train_frames.min() == 20 and max(test_frames.max(), train_frames.max()) == 1019
    distance = np.abs(test_frames[:, None] - train_frames[None, :]).min()
    assert distance == 8, "a gap of 7 frames on each side of every test block"
    assert 0.7 < len(train_frames) / 1000 < 0.8
    with pytest.raises(EncoderTrainingError, match="at least"):
        split_segments(150, 0, segments=10, test_fraction=0.25, gap=7)

    fit_ranges, validation = carve_validation(train, gap=7)
    for (a, b), (fa, fb), (va, vb) in zip(train, fit_ranges, validation):
        assert (fa, vb) == (a, b) and va - fb == 7 and vb - va == round((b - a) * 0.1)


def test_neural_is_resampled_to_frame_times():
    times = np.arange(0, 101) / RATE
    ramp = np.stack([2.0 * times, -times + 1.0]).astype(np.float32)
    frame_t = np.arange(-10, 200) / FPS
    rec = Recording(np.full((len(frame_t), N_KEYPOINTS, 3), 1.0), frame_t, ramp, times)
    at_frames, inside = neural_at_frames(rec)
    assert inside.sum() == ((frame_t >= 0) & (frame_t <= times[-1])).sum()
    np.testing.assert_allclose(at_frames[inside], np.stack([2 * frame_t[inside], 1 - frame_t[inside]], 1), atol=1e-5)
    assert np.isnan(at_frames[~inside]).all()


def test_statistics_come_from_training_frames_only(recording):
    settings = TrainSettings(n_pcs=8)
    first = prepare(recording, settings)
    test_frames = first.frames(first.test)
    changed_kp = recording.keypoints.copy()
    changed_kp[test_frames, :, :2] += 40.0
    changed_neural = recording.neural.copy()
    a, b = first.test[5]
    changed_neural[:, (recording.neural_t_s >= a / FPS) & (recording.neural_t_s <= (b - 1) / FPS)] = 99.0
    second = prepare(Recording(changed_kp, recording.frame_t_s, changed_neural, recording.neural_t_s), settings)
    np.testing.assert_array_equal(second.spec.mean, first.spec.mean)
    np.testing.assert_array_equal(second.spec.std, first.spec.std)
    assert second.spec.jump_threshold_px == first.spec.jump_threshold_px
    np.testing.assert_array_equal(second.projection.components, first.projection.components)
    np.testing.assert_array_equal(second.projection.mean, first.projection.mean)
    train_frames = first.frames(first.train)
    np.testing.assert_allclose(first.inputs[train_frames].mean(axis=0), 0, atol=1e-3)


def test_jump_threshold_follows_the_training_moves():
    kp = np.zeros((400, N_KEYPOINTS, 3))
    kp[:, :, 2] = 1.0
    kp[:, :, 0] = 100 + 4.0 * (np.arange(400) % 2)[:, None]  # moves 4 px every frame
    spec = fit_inputs(kp, np.arange(400), 0.52)
    assert spec.jump_threshold_px == 8.0
    kp[:, 3, 0] = 100 + 40.0 * (np.arange(400) % 2)
    assert fit_inputs(kp, np.arange(400), 0.52).jump_threshold_px == 80.0


def test_training_beats_a_shuffled_control_and_streams_as_it_was_scored(recording, tmp_path):
    # a short run: a higher learning rate than Facemap's, every epoch kept, smaller gaps for more test frames
    settings = TrainSettings(n_pcs=16, epochs=20, lr=5e-3, gap_s=0.1, patience=0, symmetric=False, shuffled_control=True)
    result = train_encoders(recording, settings, progress=False)
    s, models = result.summary, result.summary["models"]
    assert set(models) == {"network", "ridge", "ridge+network", "shuffled"}
    best = max(("network", "ridge", "ridge+network"), key=lambda m: models[m]["validation_variance_explained"])
    assert s["model"] == best and s["test_variance_explained"] == models[best]["test_variance_explained"]
    assert s["test_variance_explained"] > 0.1
    assert s["test_variance_explained"] > s["test_variance_explained_shuffled"] + 0.2
    assert (s["n_pcs"], s["n_neurons"], s["kind"]) == (16, 200, "pcs")
    assert 0 < s["samples_test"] < s["frames_test"], "scored on the samples (30 Hz), not the frames (50 Hz)"

    path = tmp_path / "enc.npz"
    result.save(path)
    encoder = load_encoder(path)
    assert encoder.model == best
    assert encoder.meta["trained"] and encoder.meta["training"]["test_variance_explained"] == s["test_variance_explained"]
    assert encoder.projection is not None and encoder.projection.n_neurons == 200
    encoder.reset()
    streamed = np.stack([encoder.step(kp) for kp in recording.keypoints[:700]])
    inputs = prepare(recording, settings).inputs
    whole = result.model.predict(inputs)
    # the network on the ridge model's residuals is scored with the ridge model's predictions added:
    # near the ridge model's figure (a short run may land a little below it: 0.034 on an AMD EPYC,
    # above it on a Xeon), not near 0 (the offset left out) nor far below (added twice)
    assert models["ridge+network"]["validation_variance_explained"] >= models["ridge"]["validation_variance_explained"] - 0.1
    assert np.abs(streamed - whole[:700]).max() <= 1e-4 * np.abs(whole).max()


def test_variance_explained_is_scored_on_the_recorded_samples_at_their_last_frame():
    """Samples at 30 Hz between frames at 50 Hz: a sample is predicted by the last frame at or
    before it, never by an interpolation toward the next frame."""
    frames = 1500
    frame_t = np.arange(frames) / FPS
    neural_t = neural_times(frame_t[-1], RATE, 0.25 / RATE)
    rng = np.random.default_rng(5)
    activity = rng.normal(size=(12, len(neural_t))).astype(np.float32)  # independent from sample to sample
    keypoints = np.zeros((frames, N_KEYPOINTS, 3))
    keypoints[:, :, :2] = rng.normal(300, 5, (frames, N_KEYPOINTS, 2))
    keypoints[:, :, 2] = 1.0
    prepared = prepare(Recording(keypoints, frame_t, activity, neural_t), TrainSettings(n_pcs=4, gap_s=0.1))
    last_frame = np.floor(neural_t * FPS + 1e-9).astype(int)
    np.testing.assert_array_equal(prepared.sample_frame, last_frame)
    samples, rows = prepared.samples_in(prepared.test)
    test_frames = prepared.frames(prepared.test)
    assert np.isin(last_frame[samples], test_frames).all() and (test_frames[rows] == last_frame[samples]).all()
    assert len(samples) == np.isin(last_frame, test_frames).sum()

    exact = np.zeros((frames, 4), np.float32)
    exact[last_frame] = prepared.sample_targets
    assert prepared.score(exact[test_frames], prepared.test) == pytest.approx(1.0)
    one_late = np.zeros_like(exact)
    one_late[np.minimum(last_frame + 1, frames - 1)] = prepared.sample_targets
    assert prepared.score(one_late[test_frames], prepared.test) < 0.0, "the next frame's value is not used"
    interpolated_targets = prepared.targets[test_frames]
    assert prepared.score(interpolated_targets, prepared.test) < 0.9, "frames' interpolated activity is not the samples"


def test_progress_reports_the_epoch_early_stopping_ends_at(recording):
    settings = TrainSettings(n_pcs=8, epochs=300, patience=3, lr=5e-3, gap_s=0.1, symmetric=False)
    prepared = prepare(recording, settings)
    reports: list[EpochReport] = []
    module = KeypointsEncoder(n_out=8)
    log = fit(module, prepared, settings, on_epoch=reports.append)
    assert len(reports) == len(log.losses) < 300
    last = reports[-1]
    assert last.epoch == last.last_epoch == last.best_epoch + 3 == log.best_epoch + 3
    for report in reports:
        assert report.last_epoch == min(300, report.best_epoch + 3) and report.epoch <= report.last_epoch
    assert log.validation[log.best_epoch - 1] == max(log.validation)


def test_neurons_output_is_the_projection_folded_into_the_readout():
    torch.manual_seed(0)
    module = KeypointsEncoder(n_out=6, lookahead_frames=2).eval()
    rng = np.random.default_rng(0)
    components = np.linalg.qr(rng.normal(size=(40, 6)))[0]
    projection = NeuralProjection(rng.normal(size=40), rng.uniform(0.5, 2, 40), components)
    x = rng.normal(size=(300, 30)).astype(np.float32)
    neurons = to_neurons(module, projection).predict(x)
    assert neurons.shape == (300, 40)
    np.testing.assert_allclose(neurons, projection.to_neurons(module.predict(x)), rtol=1e-4, atol=1e-4)


def _invoke(args: list[str]):
    return CliRunner().invoke(main, ["train-encoder", "--quiet", *args])


def test_cli_trains_from_a_session_folder(recording, tmp_path):
    folder = write_session(tmp_path / "session", recording)
    out = tmp_path / "encoder.npz"
    result = _invoke([str(folder), "--out", str(out), "--epochs", "2", "--pcs", "4", "--lookahead", "3",
                      "--model", "network", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for key in ("test_variance_explained", "test_variance_explained_noncausal", "lookahead_ms", "n_pcs"):
        assert key in report
    assert report["model"] == "network" and set(report["models"]) == {"network", "ridge", "symmetric"}
    assert report["lookahead_ms"] == pytest.approx(60.0) and report["n_pcs"] == 4
    encoder = load_encoder(out)
    assert encoder.describe()["lookahead_frames"] == 3
    meta = encoder.output_meta(100.0)
    assert (meta["kind"], meta["length"], meta["n_neurons"], meta["lookahead_ms"]) == ("pcs", 4, 200, 30.0)

    out = tmp_path / "neurons.npz"
    result = _invoke([str(folder), "--out", str(out), "--epochs", "1", "--pcs", "4", "--output", "neurons"])
    assert result.exit_code == 0, result.output
    encoder = load_encoder(out)
    assert (encoder.meta["kind"], encoder.n_out, encoder.projection) == ("neurons", 200, None)


@pytest.mark.parametrize("case", [
    "missing neural file", "missing keypoints file", "no session", "times length", "nan in neural",
    "neural 1-D", "neural transposed", "keypoints without a bodypart", "frames and times differ",
    "no overlap", "out folder missing", "not an npy",
])
def test_cli_bad_inputs_give_one_line(recording, tmp_path, case):
    folder = write_session(tmp_path / "s", recording)
    args = [str(folder), "--out", str(tmp_path / "e.npz"), "--epochs", "1"]
    times = np.load(folder / "neural_t_ns.npy")
    if case == "missing neural file":
        (folder / "neural.npy").unlink()
    elif case == "missing keypoints file":
        args = ["--keypoints", str(tmp_path / "none.h5"), "--neural", str(folder / "neural.npy"),
                "--out", str(tmp_path / "e.npz")]
    elif case == "no session":
        args = ["--out", str(tmp_path / "e.npz")]
    elif case == "times length":
        np.save(folder / "neural_t_ns.npy", times[:-5])
    elif case == "nan in neural":
        bad = recording.neural.copy()
        bad[7, 30] = np.nan
        np.save(folder / "neural.npy", bad)
    elif case == "neural 1-D":
        np.save(folder / "neural.npy", recording.neural[0])
    elif case == "neural transposed":
        np.save(folder / "neural.npy", recording.neural.T)
    elif case == "keypoints without a bodypart":
        with h5py.File(folder / "rec_FacemapPose.h5", "a") as f:
            del f["Facemap/paw"]
    elif case == "frames and times differ":
        np.save(tmp_path / "frame_t.npy", np.arange(100) * 20_000_000)
        args += ["--frame-times", str(tmp_path / "frame_t.npy")]
    elif case == "no overlap":
        np.save(folder / "neural_t_ns.npy", times + 10**12)
    elif case == "out folder missing":
        args[2] = str(tmp_path / "nowhere" / "e.npz")
    elif case == "not an npy":
        (folder / "neural.npy").write_text("1,2,3\n")
    result = _invoke(args)
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), "no exception escapes"
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("facestream: error: "), result.output
    expected = {
        "missing neural file": "neural", "missing keypoints file": "does not exist", "no session": "keypoints",
        "times length": "lengths must match", "nan in neural": "NaN", "neural 1-D": "2-D",
        "neural transposed": "transpose", "keypoints without a bodypart": "paw",
        "frames and times differ": "lengths must match", "no overlap": "do not overlap",
        "out folder missing": "does not exist", "not an npy": "not a readable .npy",
    }[case]
    assert expected in lines[0]
    assert not (tmp_path / "e.npz").exists()


FACEMAP_PYTHON = Path(__file__).parents[1] / ".facemap-venv" / "bin" / "python"


@pytest.mark.skipif(not FACEMAP_PYTHON.is_file(), reason=f"no Facemap environment at {FACEMAP_PYTHON} (.ci/run builds it)")
def test_facemap_own_network_trains_on_the_same_split_and_is_scored_the_same_way(recording, tmp_path, monkeypatch):
    folder = write_session(tmp_path / "session", recording)
    monkeypatch.setenv("FACEMAP_PYTHON", str(FACEMAP_PYTHON))
    result = _invoke([str(folder), "--out", str(tmp_path / "e.npz"), "--epochs", "3", "--pcs", "4", "--facemap", "--json"])
    assert result.exit_code == 0, result.output
    facemap = json.loads(result.stdout)["models"]["facemap"]
    assert facemap["epochs"] == {"run": 3, "kept": 3} and facemap["samples_test"] > 100
    # our scoring of its test predictions is Facemap's own figure: the same samples, the same formula
    assert facemap["test_variance_explained"] == pytest.approx(facemap["facemap_own_variance_explained"], abs=1e-5)


def test_facemap_comparison_without_facemap_is_one_line(recording, tmp_path, monkeypatch):
    folder = write_session(tmp_path / "session", recording)
    monkeypatch.setenv("FACEMAP_PYTHON", str(tmp_path / "no-such-python"))
    result = _invoke([str(folder), "--out", str(tmp_path / "e.npz"), "--epochs", "1", "--facemap"])
    assert result.exit_code != 0
    assert len(result.output.strip().splitlines()) == 1 and "Facemap not found" in result.output
    assert not (tmp_path / "e.npz").exists()


def test_each_model_can_be_named_and_a_sum_refuses_a_look_ahead(recording, tmp_path):
    folder = write_session(tmp_path / "session", recording)
    for model in ("ridge", "ridge+network"):
        out = tmp_path / f"{model}.npz"
        result = _invoke([str(folder), "--out", str(out), "--epochs", "2", "--pcs", "4", "--model", model, "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["model"] == model and load_encoder(out).model == model
    result = _invoke([str(folder), "--out", str(tmp_path / "x.npz"), "--model", "ridge+network", "--lookahead", "3"])
    assert result.exit_code != 0 and "has no look-ahead" in result.output


def motion_driven_recording(frames: int = 800, fps: float = FPS, seed: int = 5) -> Recording:
    """Keypoints that wander on their own and a population driven by a 6-column motion SVD alone."""
    rng = np.random.default_rng(seed)
    keypoints = np.ones((frames, N_KEYPOINTS, 3))
    keypoints[:, :, :2] = 300 + np.cumsum(rng.normal(size=(frames, N_KEYPOINTS, 2)), axis=0)
    kernel = np.exp(-0.5 * (np.arange(-20, 21) / 6.0) ** 2)
    motion = np.stack([np.convolve(rng.normal(size=frames), kernel, mode="same") for _ in range(6)], axis=1)
    times = neural_times((frames - 1) / fps, RATE, 0.25 / RATE)
    at = np.minimum(np.searchsorted(np.arange(frames) / fps, times, side="right") - 1, frames - 1)
    neural = rng.normal(size=(40, 6)) @ motion[at].T + 0.5 * rng.normal(size=(40, len(times)))
    return Recording(keypoints, np.arange(frames) / fps, neural, times, motion_svd=motion)


def test_motion_svd_inputs_are_used_and_scored_but_never_saved(tmp_path):
    recording = motion_driven_recording()
    scores = {}
    for inputs in (("keypoints",), ("motion_svd",), ("keypoints", "motion_svd")):
        settings = TrainSettings(n_pcs=6, gap_s=0.1, model="ridge", symmetric=False, inputs=inputs)
        result = train_encoders(recording, settings, progress=False)
        scores[inputs] = result.summary["test_variance_explained"]
        assert result.summary["inputs"] == list(inputs)
        assert result.summary["n_inputs"] == {("keypoints",): 30, ("motion_svd",): 6}.get(inputs, 36)
    assert scores[("keypoints",)] < 0.1 < 0.5 < scores[("motion_svd",)]
    assert scores[("keypoints", "motion_svd")] > 0.5
    with pytest.raises(EncoderTrainingError, match="scored only"):
        result.save(tmp_path / "never.npz")
    assert not (tmp_path / "never.npz").exists()
    with pytest.raises(EncoderTrainingError, match="inputs must be one or more of keypoints, motion_svd"):
        TrainSettings(inputs=("keypoints", "pupil"))


def test_cli_trains_on_the_motion_svd_of_the_keypoints_file(tmp_path):
    recording = motion_driven_recording(800, fps=10.0)  # the command's 0.5 s gaps: 5 frames at 10 frames/s
    folder = write_session(tmp_path / "session", recording)
    with h5py.File(folder / "rec_FacemapPose.h5", "a") as f:
        motion = recording.motion_svd.astype(np.float32)
        motion[:10] = np.nan  # not ready yet, as a live recording's first seconds
        f["facestream/motion_svd"] = motion
    args = [str(folder), "--pcs", "6", "--model", "ridge", "--epochs", "2", "--json"]
    result = _invoke([*args, "--inputs", "keypoints,motion_svd"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["inputs"] == ["keypoints", "motion_svd"] and report["out"] is None
    assert report["test_variance_explained"] > 0.5 and "offline only, not saved" in result.stderr
    for extra, words in (([], "--out is required"), (["--inputs", "motion_svd", "--out", str(tmp_path / "e.npz")],
                                                     "scored only and never saved"),
                         (["--inputs", "motion,keypoints"], "inputs must be one or more of")):
        bad = _invoke([*args, *(["--inputs", "keypoints"] if not extra else []), *extra])
        lines = [line for line in bad.output.splitlines() if line.strip()]
        assert bad.exit_code != 0 and len(lines) == 1 and words in lines[0], bad.output
    plain = write_session(tmp_path / "plain", recording)
    bad = _invoke([str(plain), "--inputs", "motion_svd"])
    assert bad.exit_code != 0 and "has no motion SVD (/facestream/motion_svd" in bad.output
