"""A second synthetic population, built differently, on which encoders are judged but never tuned.

A model whose design was chosen on ``synthetic_neurons.NeuralPopulation`` may have learnt that
population's construction rather than anything general. This one shares only the face:

- drivers: the face's latents as they are (no rescaling), plus head speeds (the derivative
  of head motion) and whisking amplitude times the cosine of its phase;
- every neuron mixes all drivers (Gaussian weights, a few dominant ones);
- kernels: three raised-cosine bumps on a log-time axis with weights of either sign
  (biphasic, multiphasic), spanning 400 ms before to 1 s after the behaviour;
- an exponential nonlinearity (a Poisson GLM), base rates 1-20 Hz, pure Poisson counts;
- each neuron drifts on its own (an Ornstein-Uhlenbeck process, 30 s) and all follow one slow
  shared state (15 s), neither related to behaviour.

``rates`` is the face-driven rate (drifts at zero), a deterministic function of (seed, time);
``sample`` draws the drifts and the counts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .synthetic_neurons import GRID_S, Latents, shared_noise

LATENTS = ("arousal", "whisk_amplitude", "whisk_setpoint", "sniff", "pupil", "blink", "lick", "grooming",
           "head_x", "head_y")
N_DRIVERS = len(LATENTS) + 3  # + head speed x, y and the whisker's oscillation
SPAN_S = (-0.4, 1.0)  # kernel support: from 400 ms ahead of the behaviour to 1 s after it
N_BUMPS = 3
DRIFT_TAU_S, STATE_TAU_S = 30.0, 15.0
REFERENCE_S = 60.0  # the drivers are z-scored with the statistics of the face's first minute
DRIVE_SCALE = 0.012  # the drive's sd about 1


@dataclass(frozen=True, eq=False)
class HeldOutPopulation:
    seed: int
    weights: np.ndarray  # (n, N_DRIVERS)
    bumps: np.ndarray  # (n, N_BUMPS) kernel weights of the raised-cosine basis
    base_hz: np.ndarray
    drift_sd: np.ndarray
    state_loading: np.ndarray

    @property
    def n_neurons(self) -> int:
        return len(self.base_hz)

    @classmethod
    def create(cls, n_neurons: int, seed: int = 0) -> HeldOutPopulation:
        if n_neurons < 1:
            raise ValueError(f"n_neurons must be at least 1, not {n_neurons}")
        rng = np.random.default_rng([seed, 0x4D0E])
        weights = rng.normal(size=(n_neurons, N_DRIVERS)) * rng.exponential(1.0, (n_neurons, N_DRIVERS)) ** 2
        weights /= np.linalg.norm(weights, axis=1, keepdims=True)
        return cls(
            seed=seed,
            weights=weights,
            bumps=rng.normal(size=(n_neurons, N_BUMPS)),
            base_hz=np.exp(rng.uniform(np.log(1.0), np.log(20.0), n_neurons)),
            drift_sd=rng.uniform(0.1, 0.5, n_neurons),
            state_loading=rng.normal(0.0, 0.3, n_neurons),
        )

    def rates(self, latents: Latents, times_s: np.ndarray) -> np.ndarray:
        """(n_neurons, len(times_s)) face-driven rates in Hz."""
        return self.base_hz[:, None] * np.exp(np.clip(self._drive(latents, times_s), -10, 3))

    def sample(self, latents: Latents, times_s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n_neurons, len(times_s)) float32 Poisson counts in the bins ending at ``times_s``
        (evenly spaced, at least two), with each neuron's drift and the shared state."""
        times_s = np.asarray(times_s, np.float64)
        if times_s.ndim != 1 or len(times_s) < 2:
            raise ValueError("sample needs a 1-D array of at least two times (their spacing is the bin)")
        bin_s = float(np.median(np.diff(times_s)))
        state = shared_noise(rng, times_s, (STATE_TAU_S,))[0]
        drift = np.stack([shared_noise(rng, times_s, (DRIFT_TAU_S,))[0] for _ in range(self.n_neurons)])
        drive = self._drive(latents, times_s) + self.drift_sd[:, None] * drift + self.state_loading[:, None] * state
        return rng.poisson(self.base_hz[:, None] * np.exp(np.clip(drive, -10, 3)) * bin_s).astype(np.float32)

    def _drive(self, latents: Latents, times_s: np.ndarray) -> np.ndarray:
        times_s = np.asarray(times_s, np.float64)
        if times_s.ndim != 1 or len(times_s) == 0 or not np.isfinite(times_s).all():
            raise ValueError("times_s must be a non-empty 1-D array of finite times")
        lags = np.arange(math.floor(SPAN_S[0] / GRID_S), math.ceil(SPAN_S[1] / GRID_S) + 1)  # grid steps back
        first = math.floor(times_s.min() / GRID_S) - lags.max() - 1
        last = math.ceil(times_s.max() / GRID_S) - lags.min() + 1
        grid_t = np.arange(first, last + 1) * GRID_S
        reference = _drivers(latents, np.arange(0.0, REFERENCE_S, GRID_S))  # fixed scales, whatever the window
        mean, sd = reference.mean(axis=1, keepdims=True), reference.std(axis=1, keepdims=True) + 1e-9
        drivers = (_drivers(latents, grid_t) - mean) / sd
        kernels = self.bumps @ _basis(lags * GRID_S)  # (n, lags)
        mixed = self.weights @ drivers  # (n, grid)
        centre = np.round(times_s / GRID_S).astype(int) - first  # grid index of each time
        out = np.zeros((self.n_neurons, len(times_s)))
        for j, lag in enumerate(lags):
            out += kernels[:, j:j + 1] * mixed[:, centre - lag]
        return out * DRIVE_SCALE


def _basis(lag_s: np.ndarray) -> np.ndarray:
    """(N_BUMPS, len(lag_s)) raised cosines evenly spaced on a log axis of lag + 0.5 s."""
    stretch = np.log(lag_s - SPAN_S[0] + 0.1)
    centres = np.linspace(stretch.min(), stretch.max(), N_BUMPS)
    width = centres[1] - centres[0]
    phase = np.clip((stretch[None, :] - centres[:, None]) * np.pi / (2 * width), -np.pi, np.pi)
    return (np.cos(phase) + 1) / 2


def _drivers(latents: Latents, grid_t: np.ndarray) -> np.ndarray:
    raw = np.array([[lat[name] for name in LATENTS] + [lat["whisk_amplitude"] * math.cos(lat["whisk_phase"])]
                    for lat in map(latents, grid_t.tolist())]).T
    head_speed = np.gradient(raw[[LATENTS.index("head_x"), LATENTS.index("head_y")]], GRID_S, axis=1)
    return np.vstack([raw, head_speed])
