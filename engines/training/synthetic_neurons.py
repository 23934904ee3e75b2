"""A synthetic neural population driven by the synthetic face's behaviour.

Fitting and checking a keypoints-to-neural encoder needs activity whose dependence on the
face is known, and hard enough that a model's ranking means something for real recordings.
Each neuron here reads a few of the face's latent behaviours (see
``facestream.camera_adapters.synthetic.face_behaviour``), turned into drivers of about unit
scale (:data:`DRIVERS`), through one temporal kernel of its own, and fires spikes:

    drive_i(t) = sum_j w_ij * (k_i * driver_j)(t - shift_i) + sum_m u_im * latent_m(t)
    rate_i(t)  = peak_hz_i * softplus(gain_i * drive_i(t) + bias_i) * exp(arousal_gain_i * arousal(t - shift_i))
    counts_i   = Poisson(rate_i * bin_s * G),  G ~ Gamma(shape_i, 1 / shape_i)  (gamma-Poisson)

- kernels: three quarters causal exponentials (time constant 30-300 ms), a quarter slow
  symmetric Gaussians (sd 100-400 ms) that reach as far into the future as into the past;
- shifts: a third of the neurons lead the behaviour by 20-300 ms (motor planning, which a
  causal encoder can only partly predict), the rest lag it by 0-500 ms;
- arousal multiplies every neuron's rate as well as driving some of them;
- ``latent_m``: three shared noise processes (Ornstein-Uhlenbeck, 2, 5 and 10 s) that have
  nothing to do with behaviour, as brain state does in real populations: no model of the face
  can predict them;
- counts: gamma-Poisson (overdispersed), peak rates 2-25 Hz, so a 33 ms sample holds 0-2 spikes.

``rates`` gives the face-driven rate (the shared noise at zero), a deterministic function of
(seed, time): the drivers are filtered on a fixed 10 ms grid of absolute times, so a neuron's
rate at time ``t`` does not depend on the window it is computed in, and a held-out stretch of
the same animal can be made later without recomputing the session. ``sample`` adds the shared
noise and the counting noise. The population is low-dimensional (ten drivers), so its principal
components make sense.
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
TAU_S = (0.03, 0.3)  # causal kernels' time constants, log-uniform
SLOW_SD_S = (0.1, 0.4)  # slow symmetric kernels' standard deviations
SLOW_FRACTION = 0.25
LAG_S = (0.0, 0.5)  # lagging neurons: delay after the behaviour
LEAD_S = (0.02, 0.3)  # leading neurons: how far ahead of the behaviour
LEADING_FRACTION = 1 / 3
PEAK_HZ = (10.0, 80.0)  # log-uniform
SHARED_NOISE_TAU_S = (2.0, 5.0, 10.0)
_KERNEL_REACH = 5  # kernels are cut at 5 time constants (or 5 sd each side)


@dataclass(frozen=True, eq=False)
class NeuralPopulation:
    """The parameters of every neuron; arrays have one row per neuron."""

    seed: int
    weights: np.ndarray  # (n, len(DRIVERS)), at most three non-zero per row
    tau_s: np.ndarray  # causal kernels: time constant; slow kernels: standard deviation
    slow: np.ndarray  # bool: a slow symmetric kernel
    shift_s: np.ndarray  # > 0 lags the behaviour, < 0 leads it
    gain: np.ndarray
    bias: np.ndarray
    arousal_gain: np.ndarray
    noise_loadings: np.ndarray  # (n, len(SHARED_NOISE_TAU_S))
    peak_hz: np.ndarray
    shape: np.ndarray  # of the gamma factor: smaller is more overdispersed

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
        slow = rng.random(n_neurons) < SLOW_FRACTION
        tau = np.where(slow, rng.uniform(*SLOW_SD_S, n_neurons),
                       np.exp(rng.uniform(np.log(TAU_S[0]), np.log(TAU_S[1]), n_neurons)))
        return cls(
            seed=seed,
            weights=weights,
            tau_s=tau,
            slow=slow,
            shift_s=np.round(shift / GRID_S) * GRID_S,
            gain=rng.uniform(0.7, 1.5, n_neurons),
            bias=rng.uniform(-1.0, 0.5, n_neurons),
            arousal_gain=rng.uniform(0.0, 0.4, n_neurons),
            noise_loadings=rng.normal(0.0, 0.35, (n_neurons, len(SHARED_NOISE_TAU_S))),
            peak_hz=np.exp(rng.uniform(np.log(PEAK_HZ[0]), np.log(PEAK_HZ[1]), n_neurons)),
            shape=rng.uniform(3.0, 10.0, n_neurons),
        )

    def rates(self, latents: Latents, times_s: np.ndarray) -> np.ndarray:
        """(n_neurons, len(times_s)) face-driven rates in Hz (the shared noise at zero)."""
        return self._rates(latents, times_s, None)

    def sample(self, latents: Latents, times_s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n_neurons, len(times_s)) float32 spike counts in the bins that end at ``times_s``
        (evenly spaced, at least two): the rates with the shared noise, gamma-Poisson counted."""
        times_s = _check_times(times_s)
        if len(times_s) < 2:
            raise ValueError("sample needs at least two times (their spacing is the bin)")
        bin_s = float(np.median(np.diff(times_s)))
        noise = shared_noise(rng, times_s, SHARED_NOISE_TAU_S)
        rates = self._rates(latents, times_s, self.noise_loadings @ noise)
        gamma = rng.gamma(self.shape[:, None], 1.0 / self.shape[:, None], rates.shape)
        return rng.poisson(rates * bin_s * gamma).astype(np.float32)

    def _rates(self, latents: Latents, times_s: np.ndarray, extra_drive: np.ndarray | None, chunk: int = 128) -> np.ndarray:
        times_s = _check_times(times_s)
        reach = _KERNEL_REACH * self.tau_s
        ahead = np.where(self.slow, reach, 0.0)  # how far a kernel looks ahead of its shift
        before = float(np.max(self.shift_s.clip(min=0) + reach)) + 2 * GRID_S
        after = float(max(0.0, np.max(ahead - self.shift_s))) + 2 * GRID_S
        first = math.floor((times_s.min() - before) / GRID_S)
        last = math.ceil((times_s.max() + after) / GRID_S)
        grid_t = np.arange(first, last + 1) * GRID_S
        drivers = self._drivers(latents, grid_t)  # (n_drivers, n_grid)

        # Kernels sit in a circular buffer: tap s of neuron i at (shift_i / GRID + s) mod n_fft.
        # The margins above keep the wrap-around out of the times asked for.
        n_grid = len(grid_t)
        n_fft = n_grid + int(np.ceil(before / GRID_S)) + int(np.ceil(after / GRID_S)) + 2
        spectra = np.fft.rfft(drivers, n=n_fft, axis=1)
        out = np.empty((self.n_neurons, len(times_s)))
        arousal = list(DRIVERS).index("arousal")
        for start in range(0, self.n_neurons, chunk):
            rows = slice(start, start + chunk)
            mixed = np.einsum("nd,df->nf", self.weights[rows], spectra)
            filtered = np.fft.irfft(mixed * np.fft.rfft(self._kernels(rows, n_fft), axis=1), n=n_fft, axis=1)[:, :n_grid]
            drive = _at(filtered, grid_t, times_s)
            if extra_drive is not None:
                drive += extra_drive[rows]
            shifted = times_s[None, :] - self.shift_s[rows, None]
            gain = np.exp(self.arousal_gain[rows, None] * np.interp(shifted, grid_t, drivers[arousal]))
            out[rows] = self.peak_hz[rows, None] * _softplus(self.gain[rows, None] * drive + self.bias[rows, None]) * gain
        return out

    def _kernels(self, rows: slice, n_fft: int) -> np.ndarray:
        tau, shift, slow = self.tau_s[rows], self.shift_s[rows], self.slow[rows]
        reach = int(np.ceil(_KERNEL_REACH * self.tau_s.max() / GRID_S))
        taps = np.arange(-reach, reach + 1)
        t = taps[None, :] * GRID_S
        decay = np.exp(-t / tau[:, None]) * (t >= 0) * (t <= _KERNEL_REACH * tau[:, None])
        bump = np.exp(-0.5 * (t / tau[:, None]) ** 2) * (np.abs(t) <= _KERNEL_REACH * tau[:, None])
        weights = np.where(slow[:, None], bump, decay)
        weights /= weights.sum(axis=1, keepdims=True)
        kernels = np.zeros((len(tau), n_fft))
        where = (np.round(shift / GRID_S).astype(int)[:, None] + taps[None, :]) % n_fft
        np.put_along_axis(kernels, where, weights, axis=1)
        return kernels

    @staticmethod
    def _drivers(latents: Latents, grid_t: np.ndarray) -> np.ndarray:
        out = np.empty((len(DRIVERS), len(grid_t)))
        for k, t in enumerate(grid_t):
            lat = latents(float(t))
            out[:, k] = [f(lat) for f in DRIVERS.values()]
        return out


def _check_times(times_s: np.ndarray) -> np.ndarray:
    times_s = np.asarray(times_s, np.float64)
    if times_s.ndim != 1 or len(times_s) == 0 or not np.isfinite(times_s).all():
        raise ValueError("times_s must be a non-empty 1-D array of finite times")
    return times_s


def _at(grid_values: np.ndarray, grid_t: np.ndarray, times_s: np.ndarray) -> np.ndarray:
    """Rows of ``grid_values`` (on ``grid_t``) linearly interpolated at ``times_s``."""
    position = (times_s - grid_t[0]) / GRID_S
    below = np.clip(np.floor(position).astype(int), 0, len(grid_t) - 2)
    frac = position - below
    return grid_values[:, below] * (1 - frac) + grid_values[:, below + 1] * frac


def shared_noise(rng: np.random.Generator, times_s: np.ndarray, taus_s: tuple[float, ...]) -> np.ndarray:
    """(len(taus_s), len(times_s)) unit-variance Ornstein-Uhlenbeck processes at the given
    (increasing) times, one per time constant, started from their stationary distribution."""
    out = np.empty((len(taus_s), len(times_s)))
    steps = np.diff(times_s, prepend=times_s[0])
    for m, tau in enumerate(taus_s):
        keep = np.exp(-steps / tau)
        innovations = rng.standard_normal(len(times_s)) * np.sqrt(1 - keep**2)
        value = rng.standard_normal()
        for k in range(len(times_s)):
            value = keep[k] * value + innovations[k]
            out[m, k] = value
    return out


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def neural_times(duration_s: float, rate_hz: float, offset_s: float) -> np.ndarray:
    """Sample times (seconds) of an acquisition at ``rate_hz`` from ``offset_s`` to ``duration_s``."""
    n = int(math.floor((duration_s - offset_s) * rate_hz + 1e-9)) + 1
    return offset_s + np.arange(max(n, 0)) / rate_hz
