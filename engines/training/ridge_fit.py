"""Fitting the causal ridge model (``engines/lagged_ridge.py``) in closed form.

For each candidate lag window the features of the training frames are standardised and the
ridge solution is found for every penalty at once from one eigendecomposition of their Gram
matrix; the window and penalty kept are those that score best on the validation samples.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..lagged_ridge import LaggedRidge, lagged_features

#: lag bins: single frames first, then bins doubling in width; a window ends at one of WINDOWS
BIN_EDGES = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)
WINDOWS = (8, 16, 32, 64, 128)  # frames; at 50 frames/s, 0.16 to 2.6 s of history
PENALTIES = tuple(10.0 ** np.arange(-4.0, 2.5, 0.5))  # times the mean eigenvalue of the Gram matrix


@dataclass(frozen=True)
class RidgeChoice:
    model: LaggedRidge
    window_frames: int
    penalty: float  # relative to the mean eigenvalue
    validation_score: float
    scores: dict[str, float]  # "window/penalty" -> validation score, every candidate


def fit_ridge(
    inputs: np.ndarray, targets: np.ndarray, train_frames: np.ndarray,
    validation_score: Callable[[np.ndarray], float],
) -> RidgeChoice:
    """Fit on ``targets[train_frames]`` (rows with NaN are skipped) and choose the window and
    penalty by ``validation_score(predictions of every frame)``, higher is better."""
    y_all = np.asarray(targets, np.float64)
    best: RidgeChoice | None = None
    scores: dict[str, float] = {}
    for window in WINDOWS:
        edges = tuple(e for e in BIN_EDGES if e <= window)
        features = lagged_features(inputs, edges)
        rows = train_frames[np.isfinite(y_all[train_frames]).all(axis=1)]
        x = features[rows].astype(np.float64)
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale < 1e-8] = 1.0
        x = (x - mean) / scale
        y = y_all[rows]
        y_mean = y.mean(axis=0)
        eigenvalues, vectors = np.linalg.eigh(x.T @ x)
        projected = vectors.T @ (x.T @ (y - y_mean))
        for penalty in PENALTIES:
            coefficients = vectors @ (projected / (eigenvalues + penalty * eigenvalues.mean())[:, None])
            weight = (coefficients / scale[:, None]).T
            model = LaggedRidge(weight, y_mean - weight @ mean, edges, inputs.shape[1])
            score = validation_score(features @ model.weight.T + model.bias)
            scores[f"{window}/{penalty:.0e}"] = score
            if best is None or score > best.validation_score:
                best = RidgeChoice(model, window, float(penalty), score, scores)
    assert best is not None
    return best
