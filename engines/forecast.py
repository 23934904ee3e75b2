"""Forward prediction: keypoints and predicted activity extrapolated to the moment of use.

A result is already old when a stimulus acts on it (capture, inference and delivery take
milliseconds, and the stimulus device adds its own); a whisker moves meanwhile. As in
DeepLabCut-Live's Kalman forward-prediction processor, a Kalman filter tracks each value and
its velocity, and the prediction extrapolates them to ``t_capture + horizon``.

The model is constant velocity with white-noise acceleration (spectral density ``q``, in
value units²/s³) and measurement noise ``r`` (value units²). Every value shares the time steps
and the noise model, so one 2x2 covariance and one gain serve all of them, whatever their
number: a step costs a few vector operations. Only the ratio ``q / r`` shapes the prediction,
so the same filter suits keypoints (pixels) and activity (arbitrary units). Time steps come
from the frames' capture times, so frames skipped by the ``latest`` policy are handled; a gap
longer than ``reset_after_s`` restarts the filter from the next measurement.
"""
from __future__ import annotations

import numpy as np

#: white-noise acceleration over measurement noise, 1/s³: tuned on synthetic sessions
#: (docs/clients.md gives the measured error)
DEFAULT_Q_OVER_R = 3.0e6


class KalmanForecaster:
    def __init__(self, q_over_r: float = DEFAULT_Q_OVER_R, reset_after_s: float = 0.5) -> None:
        if q_over_r <= 0:
            raise ValueError("q_over_r must be positive")
        self.q = float(q_over_r)
        self.reset_after_ns = int(reset_after_s * 1e9)
        self.x: np.ndarray | None = None  # (2, n): value and velocity per value
        self.P = np.zeros((2, 2))
        self.t_ns: int | None = None

    def update(self, values: np.ndarray, t_ns: int) -> None:
        """Take the measurement ``values`` (any shape) made at ``t_ns``."""
        z = np.asarray(values, dtype=np.float64).reshape(-1)
        if self.x is None or self.x.shape[1] != z.size or t_ns - self.t_ns > self.reset_after_ns or t_ns <= self.t_ns:
            self.x = np.stack([z, np.zeros_like(z)])
            self.P = np.array([[1.0, 0.0], [0.0, self.q * 0.01]])  # velocity unknown
            self.t_ns = t_ns
            return
        dt = (t_ns - self.t_ns) / 1e9
        F = np.array([[1.0, dt], [0.0, 1.0]])
        Q = self.q * np.array([[dt**3 / 3, dt**2 / 2], [dt**2 / 2, dt]])
        x = F @ self.x
        P = F @ self.P @ F.T + Q
        gain = P[:, 0] / (P[0, 0] + 1.0)  # r = 1: only q / r matters
        self.x = x + np.outer(gain, z - x[0])
        self.P = P - np.outer(gain, P[0])
        self.t_ns = t_ns

    def predict(self, t_ns: int, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """The values extrapolated to ``t_ns`` (the last measurement's shape if ``shape`` is None)."""
        if self.x is None:
            raise RuntimeError("predict() before the first update()")
        out = self.x[0] + self.x[1] * ((t_ns - self.t_ns) / 1e9)
        return out if shape is None else out.reshape(shape)
