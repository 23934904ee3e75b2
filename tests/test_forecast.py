"""Forward prediction: the Kalman forecaster on known motion, its error against the true
future of synthetic sessions, and the predicted fields `facestream run --predict-ms` publishes."""
import subprocess
import sys
import time

import numpy as np
import pytest

from facestream.camera_adapters.synthetic.camera import SyntheticCamera
from facestream.engines.forecast import KalmanForecaster
from facestream.streamer.client import Subscriber

CLI = [sys.executable, "-m", "facestream.streamer.cli"]
FPS = 50.0


def test_constant_velocity_motion_is_extrapolated_exactly():
    f = KalmanForecaster()
    for k in range(100):
        t = k / FPS
        f.update(np.array([[3.0 + 200.0 * t, 40.0 - 50.0 * t]]), round(t * 1e9))
    t_ahead = 99 / FPS + 0.010
    np.testing.assert_allclose(f.predict(round(t_ahead * 1e9), (1, 2)), [[3.0 + 200.0 * t_ahead, 40.0 - 50.0 * t_ahead]], atol=1e-3)


def test_a_long_gap_restarts_from_the_next_measurement():
    f = KalmanForecaster(reset_after_s=0.5)
    for k in range(20):
        f.update(np.array([100.0 * k / FPS]), round(k / FPS * 1e9))
    f.update(np.array([7.0]), round(5e9))  # 4.6 s later: the old velocity means nothing now
    assert f.predict(round(5.02e9))[0] == 7.0


@pytest.mark.parametrize("seed", [1, 2])
def test_prediction_shrinks_the_lag_against_the_true_future(seed):
    """Keypoints measured with tracker-like jitter (0.3 px); the error of the last measurement
    (the lag) and of the prediction against where the keypoints truly are `horizon` later,
    over the frames in which they move (over 1 px in the horizon)."""
    cam = SyntheticCamera(fps=FPS, seed=seed)
    rng = np.random.default_rng(seed)
    times = np.arange(600) / FPS
    truth = np.array([cam.model.pose(t).keypoints[:, :2] for t in times])
    measured = truth + rng.normal(0.0, 0.3, truth.shape)
    for horizon_ms in (5, 10, 20):
        future = np.array([cam.model.pose(t + horizon_ms / 1e3).keypoints[:, :2] for t in times])
        f = KalmanForecaster()
        lag, pred, moving = [], [], []
        for k, t in enumerate(times):
            f.update(measured[k], round(t * 1e9))
            if k < 10:
                continue
            ahead = f.predict(round((t + horizon_ms / 1e3) * 1e9), (15, 2))
            lag.append(np.linalg.norm(measured[k] - future[k], axis=1))
            pred.append(np.linalg.norm(ahead - future[k], axis=1))
            moving.append(np.linalg.norm(truth[k] - future[k], axis=1) > 1.0)
        lag, pred, moving = np.array(lag), np.array(pred), np.array(moving)
        assert moving.sum() > 100
        assert pred[moving].mean() < 0.8 * lag[moving].mean(), horizon_ms


def test_run_publishes_predicted_fields_for_the_moment_of_use(endpoint):
    with Subscriber(endpoint) as sub:
        proc = subprocess.Popen(
            [*CLI, "run", "--publish", endpoint, "--policy", "every", "--fps", "25", "--frames", "15",
             "--wait-subscribers", "1", "--predict-ms", "12.5", "--encoding", "json", "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        frames = []
        deadline = time.monotonic() + 200
        while len(frames) < 15 and time.monotonic() < deadline:
            m = sub.recv(timeout=0.5)
            if m is not None and m.topic == "frame":
                frames.append(m.result)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert len(frames) == 15 and sub.meta["encoding"] == "json"
    assert sub.meta["prediction"]["horizon_ms"] == 12.5
    for r in frames:
        assert r.t_predicted_ns == r.t_capture_ns + 12_500_000
        assert r.keypoints_predicted.shape == (15, 3) and r.neural_predicted.shape == r.neural.shape
        np.testing.assert_array_equal(r.keypoints_predicted[:, 2], r.keypoints[:, 2])  # likelihood kept
    # the first frame has no velocity yet: its prediction is the measurement itself
    np.testing.assert_array_equal(frames[0].keypoints_predicted, frames[0].keypoints)
    assert any(not np.array_equal(r.keypoints_predicted, r.keypoints) for r in frames[1:])
