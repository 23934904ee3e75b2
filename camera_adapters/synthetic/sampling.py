"""Frames drawn from synthetic faces' lives: the ids that training, evaluation and int8
calibration take, so that each sees many faces, poses and behaviours, not one stretch of video."""
from __future__ import annotations

import numpy as np

from .camera import SyntheticCamera

SYNTHETIC_FPS = 50.0  # the synthetic camera's frame rate, which sets its time axis
FRAME_SPAN = 180_000  # frame ids are drawn from an hour of the face's life at 50 frames/s
CALIBRATION_SEEDS = 8  # int8 calibration: faces 0..7, all of them training seeds


def frame_ids(seed: int, count: int) -> np.ndarray:
    """``count`` distinct frame ids of a synthetic seed, spread over an hour of its behaviour."""
    return np.sort(np.random.default_rng([seed, 0x5EED]).choice(FRAME_SPAN, size=count, replace=False))


class SyntheticCalibration:
    """int8 calibration frames from the synthetic face (a ``quantize.CalibrationSource``), spread
    over seeds 0..7 and an hour of behaviour."""

    def key(self) -> str:
        return "synthetic"

    def frames(self, count: int) -> list[np.ndarray]:
        frames = []
        for seed in range(CALIBRATION_SEEDS):
            camera = SyntheticCamera(640, 480, fps=SYNTHETIC_FPS, seed=seed)
            share = count // CALIBRATION_SEEDS + (seed < count % CALIBRATION_SEEDS)
            frames += [camera.render(int(i))[0] for i in frame_ids(seed, share)]
        return frames
