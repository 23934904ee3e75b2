"""What the synthetic mouse does, as pure functions of (seed, time).

A later stage drives simulated neurons with these latent behaviours, and a training loader
draws frames in any order, so every latent is a deterministic function of the seed and ``t``
with no state carried from frame to frame. Rhythms whose rate drifts (whisking, sniffing) have
closed-form phases, so the phase is continuous without integrating from ``t = 0``; episodes
(whisking and licking bouts, blinks, saccades, grooming, postural shifts) are placed per fixed
time window by a counter-based hash.

The latents, all floats (:data:`LATENT_NAMES` gives the order):

- ``arousal``: slow state in [0, 1]; raises pupil size, sniff rate and how often whisking starts.
- ``whisk_phase``: phase of the whisking oscillation in [0, 2*pi); 0 = most protracted. It runs
  on between bouts, where ``whisk_amplitude`` is 0 and the phase has no effect.
- ``whisk_amplitude``: half peak-to-peak whisker swing in degrees; 0 between bouts, 5-15 Hz bouts.
- ``whisk_setpoint``: mid-point of the swing in degrees of protraction (forward during bouts).
- ``whisk_angle``: whisker protraction angle in degrees, setpoint + amplitude * cos(phase).
- ``sniff_phase``: phase of the breathing cycle in [0, 2*pi); 4-12 Hz.
- ``sniff``: the nose's forward displacement, sniff depth * sin(sniff_phase), in [-1, 1].
- ``pupil``: pupil diameter as a fraction of the iris diameter.
- ``blink``: eyelid closure, 0 open, 1 shut (blinks, and a squint while grooming).
- ``gaze_x``, ``gaze_y``: the eye in its orbit, in [-1, 1] (forward, down); jumps in saccades.
- ``lick``: mouth opening in [0, 1]; rhythmic (6-8 Hz) in licking bouts.
- ``grooming``: how far the paw is raised to the face, in [0, 1]; 1 while it strokes.
- ``groom_phase``: phase of the grooming strokes in [0, 2*pi).
- ``head_x``, ``head_y``: head displacement in frame pixels (right, down).
- ``illumination``: the infrared light's gain, around 1.
"""
from __future__ import annotations

import math

import numpy as np

LATENT_NAMES: tuple[str, ...] = (
    "arousal", "whisk_phase", "whisk_amplitude", "whisk_setpoint", "whisk_angle",
    "sniff_phase", "sniff", "pupil", "blink", "gaze_x", "gaze_y", "lick", "grooming",
    "groom_phase", "head_x", "head_y", "illumination",
)

#: the range of the whisking frequency during bouts, Hz
WHISK_HZ = (5.5, 13.5)
#: the range of the sniffing frequency, Hz
SNIFF_HZ = (4.5, 11.5)

_MASK64 = (1 << 64) - 1
_TAU = 2.0 * math.pi


def hash_unit(seed: int, stream: int, k: int) -> float:
    """A uniform number in [0, 1) that depends only on (seed, stream, k): splitmix64."""
    seed, stream, k = int(seed), int(stream), int(k)
    z = (seed * 0x9E3779B97F4A7C15 + stream * 0xBF58476D1CE4E5B9 + k * 0x94D049BB133111EB) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return ((z ^ (z >> 31)) >> 11) / float(1 << 53)


def smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


class _Wave:
    """A bounded mixture of sines in [0, 1] and its exact integral (for drifting rates)."""

    def __init__(self, rng: np.random.Generator, periods: list[tuple[float, float]]) -> None:
        weights = rng.uniform(0.5, 1.0, len(periods))
        self._c = weights / weights.sum()
        self._w = np.array([_TAU / rng.uniform(lo, hi) for lo, hi in periods])
        self._p = rng.uniform(0.0, _TAU, len(periods))

    def __call__(self, t: float) -> float:
        return 0.5 + 0.5 * float(np.dot(self._c, np.sin(self._w * t + self._p)))

    def integral(self, t: float) -> float:
        """The integral from 0 to t."""
        return 0.5 * t + 0.5 * float(np.dot(self._c / self._w, np.cos(self._p) - np.cos(self._w * t + self._p)))


class _Episodes:
    """At most one episode per window of ``window`` seconds, with probability ``p``, lasting a
    uniform time in ``duration``, at a uniform place inside the window."""

    def __init__(self, seed: int, stream: int, window: float, duration: tuple[float, float]) -> None:
        self.seed, self.stream, self.window, self.duration = seed, stream, window, duration

    def at(self, t: float, p: float | None = None) -> tuple[float, float, int] | None:
        """(seconds since the episode began, its duration, its window index), or None."""
        k = math.floor(t / self.window)
        if p is not None and self.unit(k, 0) >= p:
            return None
        lo, hi = self.duration
        duration = lo + (hi - lo) * self.unit(k, 1)
        start = k * self.window + self.unit(k, 2) * (self.window - duration)
        if not start <= t < start + duration:
            return None
        return t - start, duration, k

    def unit(self, k: int, field: int) -> float:
        """The episode's own random number ``field`` (0-2 are taken by ``at``)."""
        return hash_unit(self.seed, self.stream, 8 * k + field)


def _ramp(elapsed: float, duration: float, rise: float) -> float:
    """0 -> 1 over ``rise`` seconds at the start, 1 -> 0 over ``rise`` seconds at the end."""
    return smoothstep(elapsed / rise) * smoothstep((duration - elapsed) / rise)


class Behaviour:
    """The latent behaviours of one synthetic mouse (one seed).

    head_px: the typical head displacement in frame pixels (the face's size sets it).
    """

    def __init__(self, seed: int, head_px: float) -> None:
        self.seed, self.head_px = seed, head_px
        rng = np.random.default_rng([seed, 0xB1])
        self._arousal = _Wave(rng, [(20, 40), (50, 110), (150, 300)])
        self._sniff_drift = _Wave(rng, [(3, 9)])
        self._sniff_depth = _Wave(rng, [(2, 6), (9, 20)])
        self._whisk_drift = _Wave(rng, [(2, 5), (8, 20)])
        self._illumination = _Wave(rng, [(3, 8), (25, 70)])
        self._head = [_Wave(rng, [(1.5, 4), (0.4, 1.2), (5, 12)]) for _ in range(2)]
        self._whisk_centre = rng.uniform(8.5, 10.5)
        self._whisk_swing = min(rng.uniform(1.5, 3.0), self._whisk_centre - WHISK_HZ[0],
                                WHISK_HZ[1] - self._whisk_centre)
        self._rest_setpoint = rng.uniform(-4.0, 4.0)
        self._whisking = _Episodes(seed, 1, 2.5, (0.5, 2.2))
        self._blinks = _Episodes(seed, 2, 3.5, (0.16, 0.32))
        self._licks = _Episodes(seed, 3, 7.0, (0.8, 3.0))
        self._grooming = _Episodes(seed, 4, 12.0, (2.5, 6.0))
        self._shifts = _Episodes(seed, 5, 5.0, (0.3, 0.9))
        self._saccade_window = 1.8

    def at(self, t: float) -> dict[str, float]:
        """Every latent at ``t`` seconds, keyed by :data:`LATENT_NAMES`."""
        arousal = self._arousal(t)
        groom, groom_phase = self._groom(t)
        amplitude, bout = self._whisk_envelope(t, arousal)
        amplitude *= 1.0 - groom
        bout *= 1.0 - groom
        w_phase = self._whisk_phase(t)
        setpoint = self._rest_setpoint + 12.0 * bout
        s_lo, s_hi = SNIFF_HZ
        s_cycles = s_lo * t + (s_hi - s_lo) * (0.6 * self._arousal.integral(t) + 0.4 * self._sniff_drift.integral(t))
        s_phase = _TAU * (s_cycles % 1.0)
        illumination = 0.9 + 0.2 * self._illumination(t)
        pupil = 0.3 + 0.45 * self._arousal(t - 1.0) + 0.1 * bout - 0.3 * (illumination - 1.0)
        gaze_x, gaze_y = self._gaze(t)
        head_x, head_y = self._head_offset(t, groom, groom_phase)
        return {
            "arousal": arousal,
            "whisk_phase": w_phase,
            "whisk_amplitude": amplitude,
            "whisk_setpoint": setpoint,
            "whisk_angle": setpoint + amplitude * math.cos(w_phase),
            "sniff_phase": s_phase,
            "sniff": (0.3 + 0.7 * self._sniff_depth(t)) * math.sin(s_phase),
            "pupil": min(max(pupil, 0.15), 0.9),
            "blink": max(self._blink(t), 0.5 * groom),
            "gaze_x": gaze_x,
            "gaze_y": gaze_y,
            "lick": self._lick(t) * (1.0 - groom),
            "grooming": groom,
            "groom_phase": groom_phase,
            "head_x": head_x,
            "head_y": head_y,
            "illumination": illumination,
        }

    def _whisk_phase(self, t: float) -> float:
        cycles = self._whisk_centre * t + 2.0 * self._whisk_swing * (self._whisk_drift.integral(t) - 0.5 * t)
        return _TAU * (cycles % 1.0)

    def _whisk_envelope(self, t: float, arousal: float) -> tuple[float, float]:
        """(amplitude in degrees, bout envelope in [0, 1]); both 0 between bouts."""
        ep = self._whisking.at(t, p=0.2 + 0.6 * arousal)
        if ep is None:
            return 0.0, 0.0
        elapsed, duration, k = ep
        envelope = _ramp(elapsed, duration, 0.12)
        peak = 8.0 + 22.0 * self._whisking.unit(k, 3)
        wobble = 1.0 + 0.25 * math.sin(_TAU * 1.3 * elapsed + _TAU * self._whisking.unit(k, 4))
        return peak * envelope * wobble, envelope

    def _blink(self, t: float) -> float:
        ep = self._blinks.at(t, p=0.45)
        if ep is None:
            return 0.0
        elapsed, duration, k = ep
        x = elapsed / duration
        shape = smoothstep(x / 0.35) if x < 0.35 else 1.0 - smoothstep((x - 0.35) / 0.65)
        return (0.85 + 0.15 * self._blinks.unit(k, 3)) * shape

    def _gaze_target(self, k: int) -> tuple[float, float]:
        return 2.0 * hash_unit(self.seed, 6, 2 * k) - 1.0, hash_unit(self.seed, 6, 2 * k + 1) - 0.5

    def _gaze(self, t: float) -> tuple[float, float]:
        """Fixations joined by 50 ms saccades, one saccade at a random time in each window."""
        w = self._saccade_window
        k = math.floor(t / w)
        when = k * w + hash_unit(self.seed, 7, k) * (w - 0.05)
        (x0, y0), (x1, y1) = self._gaze_target(k - 1), self._gaze_target(k)
        a = smoothstep((t - when) / 0.05)
        return x0 + a * (x1 - x0), y0 + a * (y1 - y0)

    def _lick(self, t: float) -> float:
        ep = self._licks.at(t, p=0.35)
        if ep is None:
            return 0.0
        elapsed, duration, k = ep
        rate = 6.0 + 2.0 * self._licks.unit(k, 3)
        depth = 0.6 + 0.4 * self._licks.unit(k, 4)
        cycle = max(0.0, math.sin(_TAU * rate * elapsed))
        return depth * _ramp(elapsed, duration, 0.1) * cycle ** 1.3

    def _groom(self, t: float) -> tuple[float, float]:
        ep = self._grooming.at(t, p=0.45)
        if ep is None:
            return 0.0, 0.0
        elapsed, duration, k = ep
        rate = 3.5 + 2.0 * self._grooming.unit(k, 3)
        return _ramp(elapsed, duration, 0.4), _TAU * ((rate * elapsed) % 1.0)

    def _head_offset(self, t: float, groom: float, groom_phase: float) -> tuple[float, float]:
        """Slow drift, occasional postural shifts, and a bob with each grooming stroke."""
        ep = self._shifts.at(t, p=0.35)
        bob = (0.4 * groom * math.cos(groom_phase), 0.4 * groom * math.sin(groom_phase))
        out = []
        for axis, wave in enumerate(self._head):
            shift = 0.0
            if ep is not None:
                elapsed, duration, k = ep
                shift = (2.0 * self._shifts.unit(k, 3 + axis) - 1.0) * _ramp(elapsed, duration, 0.12)
            out.append(self.head_px * (2.0 * wave(t) - 1.0 + 0.8 * shift + bob[axis]))
        return out[0], out[1]
