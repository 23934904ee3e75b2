"""The causal linear encoder: recent keypoint positions and speeds, averaged over lag bins.

A closed-form ridge regression on lagged inputs is the baseline a keypoints-to-neural network
has to beat, and on minutes of data it often is the better model. Its features at frame t,
from the cleaned, z-scored inputs x (30 per frame, as ``encoder.InputCleaner`` gives them):

- speeds s_t = |x_t - x_(t-1)| per input (s = 0 at the first frame);
- for each lag bin [a, b) of ``bin_edges`` (frames back from t), the mean of [x, s] over frames
  t-b+1 .. t-a; frames before the first one count as zeros, as in the network's filter.

So the prediction for frame t uses frames t-b_max+1 .. t only. ``lagged_features`` computes
the features of a whole sequence; ``LaggedFeatureWindow`` gives the same rows one frame at a
time with a fixed-size state (a window of b_max frames).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

N_STREAMS = 2  # positions and speeds


def check_bin_edges(edges: list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """Lag bin edges: integers, starting at 0, strictly increasing, at least one bin."""
    edges = tuple(int(e) for e in edges)
    if len(edges) < 2 or edges[0] != 0 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"bin edges must start at 0 and increase strictly, got {list(edges)}")
    return edges


def _bin_matrix(edges: tuple[int, ...]) -> np.ndarray:
    """(bins, window) averaging weights over a window ordered oldest frame first."""
    window = edges[-1]
    matrix = np.zeros((len(edges) - 1, window), np.float32)
    for k, (a, b) in enumerate(zip(edges, edges[1:])):
        matrix[k, window - b:window - a] = 1.0 / (b - a)
    return matrix


def _with_speeds(inputs: np.ndarray) -> np.ndarray:
    previous = np.concatenate([inputs[:1], inputs[:-1]])
    return np.concatenate([inputs, np.abs(inputs - previous)], axis=1)


def lagged_features(inputs: np.ndarray, edges: tuple[int, ...]) -> np.ndarray:
    """(T, n_in) inputs -> (T, bins * 2 * n_in) float32 features, bin-major."""
    z = _with_speeds(np.asarray(inputs, np.float64))
    total = np.vstack([np.zeros((1, z.shape[1])), np.cumsum(z, axis=0)])  # total[t] = sum of z[:t]
    t = np.arange(len(z))
    out = []
    for a, b in zip(edges, edges[1:]):
        hi, lo = np.clip(t - a + 1, 0, None), np.clip(t - b + 1, 0, None)
        out.append((total[hi] - total[lo]) / (b - a))
    return np.concatenate(out, axis=1).astype(np.float32)


class LaggedFeatureWindow:
    """``lagged_features`` one frame at a time: the last ``edges[-1]`` frames of [x, s], kept
    twice over in a ring so that the newest window is always one contiguous slice."""

    def __init__(self, n_in: int, edges: tuple[int, ...]) -> None:
        self.window = edges[-1]
        self._bins = _bin_matrix(edges)
        self._ring = np.zeros((2 * self.window, N_STREAMS * n_in), np.float32)
        self._previous = np.zeros(n_in, np.float32)
        self.reset()

    def reset(self) -> None:
        self._ring[:] = 0
        self._newest = self.window - 1
        self._started = False

    def __call__(self, x: np.ndarray) -> np.ndarray:
        speed = np.abs(x - self._previous) if self._started else np.zeros_like(x)
        self._previous[:] = x
        self._started = True
        k = self._newest = (self._newest + 1) % self.window
        self._ring[k, :len(x)] = self._ring[k + self.window, :len(x)] = x
        self._ring[k, len(x):] = self._ring[k + self.window, len(x):] = speed
        return (self._bins @ self._ring[k + 1:k + 1 + self.window]).reshape(-1)


@dataclass(frozen=True, eq=False)
class LaggedRidge:
    """A fitted linear readout of the lagged features: y = weight @ features + bias.

    weight: (n_out, bins * 2 * n_in); bias: (n_out,); bin_edges: lag bins in frames.
    """

    weight: np.ndarray
    bias: np.ndarray
    bin_edges: tuple[int, ...]
    n_in: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "bin_edges", check_bin_edges(self.bin_edges))
        object.__setattr__(self, "weight", np.asarray(self.weight, np.float32))
        object.__setattr__(self, "bias", np.asarray(self.bias, np.float32))
        if self.weight.shape != (len(self.bias), self.n_features) or self.bias.ndim != 1:
            raise ValueError(f"weight must be (n_out, {self.n_features}) and bias (n_out,), "
                             f"got {self.weight.shape} and {self.bias.shape}")

    @property
    def n_features(self) -> int:
        return (len(self.bin_edges) - 1) * N_STREAMS * self.n_in

    @property
    def n_out(self) -> int:
        return len(self.bias)

    @property
    def kernel_frames(self) -> int:
        return self.bin_edges[-1]

    lookahead_frames = 0

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """(T, n_in) inputs -> (T, n_out): row t is the prediction for frame t."""
        return lagged_features(inputs, self.bin_edges) @ self.weight.T + self.bias

    def file_meta(self) -> dict[str, Any]:
        return {"model": "ridge", "n_in": self.n_in, "n_out": self.n_out, "bin_edges": list(self.bin_edges),
                "kernel_frames": self.kernel_frames, "lookahead_frames": 0}

    def file_arrays(self) -> dict[str, np.ndarray]:
        return {"ridge.weight": self.weight, "ridge.bias": self.bias}

    def with_readout(self, matrix: np.ndarray, offset: np.ndarray) -> LaggedRidge:
        """The model followed by y -> matrix @ y + offset (a projection folded in)."""
        matrix = np.asarray(matrix, np.float64)
        return LaggedRidge(matrix @ self.weight, matrix @ self.bias + offset, self.bin_edges, self.n_in)
