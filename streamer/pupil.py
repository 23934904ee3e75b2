"""The pupil, found as Facemap finds it, in an eye region that follows the eye keypoints.

Facemap (facemap/pupil.py) asks the user to draw an elliptical eye region and a "saturation"
threshold; here the region is the ellipse through the four eye keypoints (the corners give its
long axis, the lids its short one), scaled by ``region_scale``, placed anew on every frame (its
bounding box clipped to the frame, and binned when it is larger than 160x160 pixels), and the
threshold is chosen on every frame by Otsu's method on the region's pixels (the pupil is the
darker of the two classes; the brightest 10 %, corneal highlights and the lids' edges, are held
at the 90th percentile for that choice). The rest is Facemap's: pixels inverted and clipped at
the threshold, so only pixels darker than it weigh, by how much darker; a 2D Gaussian fitted by
a few reweighted iterations (centre of mass, covariance, pixels beyond 2 sigma dropped); the
axes from the covariance's eigenvalues times sigma^2, the long one at most twice the short one;
area pi * long * short.

Facemap's ``axlen`` holds the squared axes (the eigenvalues); ``axes`` here are their square
roots, the semi-axes in pixels, so that a uniform dark disc of radius r gives axes (r, r) and
area pi r^2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from facestream.engines.bodyparts import BODYPARTS

_EYE = [BODYPARTS.index(n) for n in ("eye(back)", "eye(front)", "eye(top)", "eye(bottom)")]
_SIGMA = 2.0  # Facemap's pupil_sigma: a uniform disc of radius r has variance r^2 / 4 per axis
_ITERATIONS = 5  # Facemap's
_HIGHLIGHTS = 90  # percentile: brighter pixels (reflections, the lids' edges) do not take part in choosing the threshold
_MIN_PIXELS = 12  # fewer dark pixels than this is no pupil
_MAX_PIXELS = 160 * 160  # a larger region is binned down to about this many pixels


@dataclass(frozen=True)
class Pupil:
    """One frame's pupil, in frame pixels: ``centre`` (x = column, y = row), ``axes`` (long,
    short) semi-axes, ``area``; None when no fit was possible. ``valid``: fitted, with eye
    keypoints at least as likely as the setting asks."""

    area: float | None
    centre: tuple[float, float] | None
    axes: tuple[float, float] | None
    valid: bool

    def as_message(self) -> dict:
        return {"area": self.area, "centre": None if self.centre is None else list(self.centre),
                "axes": None if self.axes is None else list(self.axes), "valid": self.valid}


NO_PUPIL = Pupil(None, None, None, False)


def eye_ellipse(keypoints: np.ndarray, scale: float) -> tuple[tuple[float, float], tuple[float, float], float]:
    """The eye region: (centre x, y), (semi-axes along, across), angle in degrees, from the
    four eye keypoints (15, 3), scaled by ``scale``."""
    back, front, top, bottom = keypoints[_EYE, :2].astype(np.float64)
    centre = (back + front) / 2
    along = front - back
    half = np.hypot(*along) / 2
    normal = np.array([-along[1], along[0]]) / max(2 * half, 1e-9)
    across = (abs((top - centre) @ normal) + abs((bottom - centre) @ normal)) / 2
    angle = float(np.degrees(np.arctan2(along[1], along[0])))
    return (float(centre[0]), float(centre[1])), (half * scale, across * scale), angle


def _moments(lam: np.ndarray, y: np.ndarray, x: np.ndarray) -> tuple[float, float, float, float, float]:
    """Weighted centre (y, x) and covariance (yy, yx, xx, with Facemap's 0.01 ridge) of the pixels."""
    lam = lam / lam.sum()
    my, mx = lam @ y, lam @ x
    dy, dx = y - my, x - mx
    return my, mx, lam @ (dy * dy) + 0.01, lam @ (dy * dx), lam @ (dx * dx) + 0.01


def fit_gaussian(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Facemap's ``fit_gaussian`` (no reflector mask): the weighted pixels' centre (row, col),
    the eigenvalues (long first) of sigma^2 times their covariance, capped at 4:1, and the
    eigenvectors; None without enough pixels."""
    iy, ix = np.nonzero(weights)
    if iy.size < _MIN_PIXELS:
        return None
    lam = weights[iy, ix].astype(np.float64)
    y, x = iy.astype(np.float64), ix.astype(np.float64)
    my, mx, syy, syx, sxx = _moments(lam, y, x)
    for _ in range(_ITERATIONS):
        dy, dx = y - my, x - mx
        # squared Mahalanobis distance under the 2x2 covariance, inverted by hand
        dist = (sxx * dy * dy - 2 * syx * dy * dx + syy * dx * dx) / (syy * sxx - syx * syx)
        lam = np.where(dist <= 2 * _SIGMA ** 2, lam, 0.0)
        if lam.sum() <= 0:
            return None
        my, mx, syy, syx, sxx = _moments(lam, y, x)
    sv, u = np.linalg.eigh(_SIGMA ** 2 * np.array([[syy, syx], [syx, sxx]]))
    sv = sv.min() * np.minimum(4.0, sv / sv.min())
    return np.array([my, mx]), sv[::-1], u[:, ::-1]


def otsu(counts: np.ndarray) -> int | None:
    """Otsu's threshold of a histogram: the level that splits it into two classes of the most
    different means (the dark class is up to and including it); None for a single level."""
    levels = np.arange(counts.size, dtype=np.float64)
    w0 = np.cumsum(counts, dtype=np.float64)
    s0 = np.cumsum(counts * levels)
    total, sum_all = w0[-1], s0[-1]
    w1 = total - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (s0 / w0 - (sum_all - s0) / w1) ** 2
    between = np.where((w0 > 0) & (w1 > 0), between, -1.0)
    return int(np.argmax(between)) if between.max() >= 0 else None


class PupilFinder:
    """The pupil of each frame, from its pixels and its tracked keypoints."""

    def __init__(self, region_scale: float, min_likelihood: float, smooth_px: float):
        self.region_scale = region_scale
        self.min_likelihood = min_likelihood
        self.smooth_px = smooth_px

    def find(self, pixels: np.ndarray, keypoints: np.ndarray) -> Pupil:
        centre, (a, b), angle = eye_ellipse(keypoints, self.region_scale)
        if not (np.isfinite(a) and np.isfinite(b)) or a < 2 or b < 2:
            return NO_PUPIL
        h, w = pixels.shape[:2]
        reach = max(a, b) + 2
        x0, x1 = max(int(centre[0] - reach), 0), min(int(centre[0] + reach) + 1, w)
        y0, y1 = max(int(centre[1] - reach), 0), min(int(centre[1] + reach) + 1, h)
        if x1 - x0 < 3 or y1 - y0 < 3:
            return NO_PUPIL
        # a region of more than _MAX_PIXELS (a close-up eye, or eye keypoints strewn over the frame)
        # is binned f x f first, so that the cost per frame stays bounded
        f = max(1, math.ceil(math.sqrt((x1 - x0) * (y1 - y0) / _MAX_PIXELS)))
        x1, y1 = x0 + (x1 - x0) // f * f, y0 + (y1 - y0) // f * f
        if x1 - x0 < 3 * f or y1 - y0 < 3 * f:
            return NO_PUPIL
        box = pixels[y0:y1, x0:x1]
        if f > 1:
            box = cv2.resize(box, ((x1 - x0) // f, (y1 - y0) // f), interpolation=cv2.INTER_AREA)
        if self.smooth_px > 0:
            box = cv2.GaussianBlur(box, (0, 0), self.smooth_px / f)
        mask = np.zeros(box.shape, np.uint8)
        cv2.ellipse(mask, (round((centre[0] - x0) / f), round((centre[1] - y0) / f)), (round(a / f), round(b / f)), angle,
                    0, 360, 1, -1)
        inside = box[mask > 0]
        if inside.size < _MIN_PIXELS:
            return NO_PUPIL
        counts = np.bincount(inside, minlength=256)
        top = int(np.searchsorted(np.cumsum(counts), _HIGHLIGHTS / 100 * inside.size))
        counts[top] += counts[top + 1:].sum()  # the brightest pixels count as the brightest kept level
        counts[top + 1:] = 0
        threshold = otsu(counts[:top + 1])
        if threshold is None:
            return NO_PUPIL
        # Facemap: 255 - pixel, minus (255 - saturation), clipped at 0; outside the ellipse nothing weighs
        weights = np.where(mask > 0, np.maximum(0.0, threshold + 1.0 - box.astype(np.float32)), 0.0)
        fit = fit_gaussian(weights)
        if fit is None:
            return NO_PUPIL
        mu, sv, _ = fit
        axes = np.sqrt(sv) * f
        likely = bool(np.all(keypoints[_EYE, 2] >= self.min_likelihood))
        centre = (float(mu[1] * f + (f - 1) / 2 + x0), float(mu[0] * f + (f - 1) / 2 + y0))  # a bin's centre
        return Pupil(area=float(np.pi * axes[0] * axes[1]), centre=centre,
                     axes=(float(axes[0]), float(axes[1])), valid=likely)
