"""A synthetic neural population driven by the synthetic face's behaviour.

Fitting and checking a keypoints-to-neural encoder needs activity whose dependence on the
face is known. Each neuron here reads a few of the face's latent behaviours (see
``facestream.camera_adapters.synthetic.face_behaviour``), turned into drivers of about unit scale
(:data:`DRIVERS`), through one temporal kernel of its own:

    activity_i(t) = softplus(gain_i * sum_j w_ij * (k_i * driver_j)(t - shift_i) + bias_i)
                    + noise_sd_i * N(0, 1)

``k_i`` is an exponential decay with time constant ``tau_i`` (30-300 ms), normalised to unit
sum. ``shift_i > 0`` makes the neuron lag the behaviour (0-250 ms); ``shift_i < 0`` makes it
lead the behaviour by 20-250 ms, as motor-planning activity does, which a causal encoder can
only partly predict. The noise is independent per neuron and sample. The population is
low-dimensional (ten drivers, one kernel per neuron), so its principal components make sense.

Everything except the noise is a deterministic function of (seed, time): the drivers are
filtered on a fixed 10 ms grid of absolute times, so a neuron's rate at time ``t`` does not
depend on the window it is computed in, and a held-out stretch of the same animal can be made
later without recomputing the session.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

Latents = Callable[[float], dict]

#: driver name -> latents dict -> value of about unit scale
DRIVERS: dict[str, Callable[[dict], float]] = {
    "arousal": lambda lat: (lat["arousal"] - 0.5) / 0.2,
    "whisking": lambda lat: lat["whisk_amplitude"] / 10.0,
    "whisk_setpoint": lambda lat: lat["whisk_setpoint"] / 5.0,
    "sniffing": lambda lat: (lat["sniff"] ** 2 - 0.25) / 0.25,
    "pupil": lambda lat: (lat["pupil"] - 0.55) / 0.1,
    "blink": lambda lat: lat["blink"] / 0.3,
    "lick": lambda lat: lat["lick"] / 0.3,
    "grooming": lambda lat: (lat["grooming"] - 0.2) / 0.4,
    "head_x": lambda lat: lat["head_x"] / 1.5,
    "head_y": lambda lat: lat["head_y"] / 1.5,
}

GRID_S = 0.01  # the drivers' time grid
TAU_S = (0.03, 0.3)  # kernel time constants, log-uniform
LAG_S = (0.0, 0.25)  # lagging neurons: delay after the behaviour
LEAD_S = (0.02, 0.25)  # leading neurons: how far ahead of the behaviour
LEADING_FRACTION = 0.3
_KERNEL_TAUS = 5  # kernels are cut at 5 time constants


@dataclass(frozen=True, eq=False)
class NeuralPopulation:
    """The parameters of every neuron; arrays have one row per neuron."""

    seed: int
    weights: np.ndarray  # (n, len(DRIVERS)), at most three non-zero per row
    tau_s: np.ndarray
    shift_s: np.ndarray  # > 0 lags the behaviour, < 0 leads it
    gain: np.ndarray
    bias: np.ndarray
    noise_sd: np.ndarray

    @property
    def n_neurons(self) -> int:
        return len(self.gain)

    @classmethod
    def create(cls, n_neurons: int, seed: int = 0) -> NeuralPopulation:
        if n_neurons < 1:
            raise ValueError(f"n_neurons must be at least 1, not {n_neurons}")
        rng = np.random.default_rng([seed, 0x4E55])
        n_drivers = len(DRIVERS)
        weights = np.zeros((n_neurons, n_drivers))
        for i in range(n_neurons):
            chosen = rng.choice(n_drivers, size=rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]), replace=False)
            w = rng.normal(size=len(chosen))
            weights[i, chosen] = w / np.linalg.norm(w)
        leading = rng.random(n_neurons) < LEADING_FRACTION
        shift = np.where(leading, -rng.uniform(*LEAD_S, n_neurons), rng.uniform(*LAG_S, n_neurons))
        return cls(
            seed=seed,
            weights=weights,
            tau_s=np.exp(rng.uniform(np.log(TAU_S[0]), np.log(TAU_S[1]), n_neurons)),
            shift_s=np.round(shift / GRID_S) * GRID_S,
            gain=rng.uniform(0.7, 1.5, n_neurons),
            bias=rng.uniform(-1.0, 0.5, n_neurons),
            noise_sd=rng.uniform(0.2, 0.6, n_neurons),
        )

    def rates(self, latents: Latents, times_s: np.ndarray, chunk: int = 128) -> np.ndarray:
        """(n_neurons, len(times_s)) noise-free activity at the given times (seconds)."""
        times_s = np.asarray(times_s, np.float64)
        if times_s.ndim != 1 or len(times_s) == 0 or not np.isfinite(times_s).all():
            raise ValueError("times_s must be a non-empty 1-D array of finite times")
        before = float(np.max(self.shift_s.clip(min=0) + _KERNEL_TAUS * self.tau_s)) + 2 * GRID_S
        after = float(max(0.0, -self.shift_s.min())) + 2 * GRID_S
        first = math.floor((times_s.min() - before) / GRID_S)
        last = math.ceil((times_s.max() + after) / GRID_S)
        grid_t = np.arange(first, last + 1) * GRID_S
        drivers = self._drivers(latents, grid_t)  # (n_drivers, n_grid)

        # Kernels sit in a circular buffer: tap s of neuron i at (shift_i / GRID + s) mod n_fft.
        # The margins above keep the wrap-around out of the times asked for.
        n_grid = len(grid_t)
        n_fft = n_grid + int(np.ceil(before / GRID_S)) + int(np.ceil(after / GRID_S)) + 2
        spectra = np.fft.rfft(drivers, n=n_fft, axis=1)
        position = (times_s - grid_t[0]) / GRID_S
        below = np.clip(np.floor(position).astype(int), 0, n_grid - 2)
        frac = position - below
        out = np.empty((self.n_neurons, len(times_s)))
        for start in range(0, self.n_neurons, chunk):
            rows = slice(start, start + chunk)
            kernels = self._kernels(rows, n_fft)
            mixed = np.einsum("nd,df->nf", self.weights[rows], spectra)
            filtered = np.fft.irfft(mixed * np.fft.rfft(kernels, axis=1), n=n_fft, axis=1)[:, :n_grid]
            drive = filtered[:, below] * (1 - frac) + filtered[:, below + 1] * frac
            out[rows] = _softplus(self.gain[rows, None] * drive + self.bias[rows, None])
        return out

    def sample(self, latents: Latents, times_s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n_neurons, len(times_s)) float32 activity: the rates plus independent noise."""
        rates = self.rates(latents, times_s)
        return (rates + self.noise_sd[:, None] * rng.standard_normal(rates.shape)).astype(np.float32)

    def _kernels(self, rows: slice, n_fft: int) -> np.ndarray:
        tau, shift = self.tau_s[rows], self.shift_s[rows]
        taps = np.arange(int(np.ceil(_KERNEL_TAUS * self.tau_s.max() / GRID_S)) + 1)
        decay = np.exp(-taps[None, :] * GRID_S / tau[:, None]) * (taps[None, :] * GRID_S <= _KERNEL_TAUS * tau[:, None])
        decay /= decay.sum(axis=1, keepdims=True)
        kernels = np.zeros((len(tau), n_fft))
        where = (np.round(shift / GRID_S).astype(int)[:, None] + taps[None, :]) % n_fft
        np.put_along_axis(kernels, where, decay, axis=1)
        return kernels

    @staticmethod
    def _drivers(latents: Latents, grid_t: np.ndarray) -> np.ndarray:
        out = np.empty((len(DRIVERS), len(grid_t)))
        for k, t in enumerate(grid_t):
            lat = latents(float(t))
            out[:, k] = [f(lat) for f in DRIVERS.values()]
        return out


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def neural_times(duration_s: float, rate_hz: float, offset_s: float) -> np.ndarray:
    """Sample times (seconds) of an acquisition at ``rate_hz`` from ``offset_s`` to ``duration_s``."""
    n = int(math.floor((duration_s - offset_s) * rate_hz + 1e-9)) + 1
    return offset_s + np.arange(max(n, 0)) / rate_hz
