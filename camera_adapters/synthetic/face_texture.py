"""Procedural textures for the synthetic camera: fur, soft noise, shading and sensor noise.

A tracker learns from texture as much as from shape, so the fur is made the way fur looks under
infrared light at rig resolution: fine, noisy, a few pixels long, following the direction the
hair grows (white noise smeared along a flow field, a line-integral convolution), with single
guard hairs catching the light, over patchy multi-scale shading. All of it is drawn once per
session; the per-frame cost is only the sensor noise, which comes from a bank large enough that
no pattern repeats visibly.
"""
from __future__ import annotations

import cv2
import numpy as np


def soft_noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, ...]) -> np.ndarray:
    """Multi-scale smooth noise of ``shape`` with unit standard deviation.

    Each octave is a grid of ``cells`` random values along the longer side, upsampled
    smoothly; finer octaves weigh half as much as the one before.
    """
    h, w = shape
    out = np.zeros(shape, np.float32)
    for i, n in enumerate(cells):
        gh, gw = max(2, round(n * h / max(h, w))), max(2, round(n * w / max(h, w)))
        grid = rng.standard_normal((gh + 2, gw + 2), dtype=np.float32)
        up = cv2.resize(grid, (w + 2 * w // gw, h + 2 * h // gh), interpolation=cv2.INTER_CUBIC)
        oy, ox = h // gh, w // gw
        out += 0.5**i * up[oy:oy + h, ox:ox + w]
    return out / (out.std() + 1e-6)


def hair(rng: np.random.Generator, angle: np.ndarray, length: float, grain: float, sparse: float = 0.0) -> np.ndarray:
    """Strands of about ``length`` pixels running along ``angle`` (radians, per pixel).

    White noise, blurred to ``grain`` pixels, averaged along straight segments in the local
    hair direction; unit standard deviation. ``sparse`` > 0 keeps only the noise above that
    many standard deviations, so that single strands stand out instead of a streaky haze.
    """
    h, w = angle.shape
    noise = rng.standard_normal((h, w), dtype=np.float32)
    if sparse > 0:
        noise = np.maximum(noise - sparse, 0.0)
    if grain > 0.3:
        noise = cv2.GaussianBlur(noise, (0, 0), grain)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cos, sin = np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)
    steps = max(3, int(length) | 1)
    acc = np.zeros((h, w), np.float32)
    offsets = np.linspace(-length / 2, length / 2, steps).tolist()
    for s, weight in zip(offsets, np.hanning(steps + 2)[1:-1].tolist()):
        acc += weight * cv2.remap(noise, xx + s * cos, yy + s * sin, cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REFLECT)
    return acc / (acc.std() + 1e-6)


def fur(rng: np.random.Generator, flow: np.ndarray, scale: float) -> np.ndarray:
    """Fine fur along ``flow`` (radians per pixel) for a face drawn at ``scale``: a grainy
    short-strand layer, bright guard hairs and dark gaps between tufts; about unit spread."""
    grain = hair(rng, flow, 3.0 + 3.0 * scale, 0.0)
    bright = hair(rng, flow, 6.0 + 6.0 * scale, 0.0, sparse=2.0)
    dark = hair(rng, flow + 0.3, 5.0 + 5.0 * scale, 0.0, sparse=1.8)
    return 0.6 * grain + 0.5 * np.tanh(bright) - 0.25 * np.tanh(dark)


def dome_normals(mask: np.ndarray, radius: float) -> tuple[np.ndarray, ...]:
    """Surface normals (nx, ny, nz) and the height of a rounded body whose silhouette is ``mask``
    (uint8, nonzero inside): a dome that rises over ``radius`` pixels from the edge, so that
    shading turns bright or dark toward the silhouette as the light dictates."""
    d = cv2.distanceTransform((mask > 127).astype(np.uint8), cv2.DIST_L2, 5)
    x = np.minimum(d / radius, 1.0)
    height = radius * np.sqrt(1.0 - (1.0 - x) ** 2)
    height = cv2.GaussianBlur(height, (0, 0), 0.15 * radius + 1.0)
    gy, gx = np.gradient(height)
    norm = np.sqrt(gx * gx + gy * gy + 1.0)
    return -gx / norm, -gy / norm, 1.0 / norm, height


class SensorNoise:
    """Fresh-looking sensor noise for every frame from a bank drawn once.

    The bank holds a few noise fields a little larger than the frame; frame ``k`` takes one
    field at an offset, both chosen by a hash of ``k``, so thousands of distinct patterns come
    from a few megabytes. The noise is stored with a bias (uint8 has no sign) that ``apply``
    takes off again.
    """

    LAYERS = 6
    SLACK = 64

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> None:
        h, w = shape
        self.shape = shape
        self.bias = int(np.ceil(3 * sigma))
        bank = rng.standard_normal((self.LAYERS, h + self.SLACK, w + self.SLACK), dtype=np.float32)
        self._bank = np.clip(self.bias + sigma * bank, 0, 2 * self.bias).astype(np.uint8)

    def apply(self, img: np.ndarray, key: float) -> np.ndarray:
        """``img`` plus the noise field that ``key`` (uniform in [0, 1)) picks."""
        h, w = self.shape
        k = int(key * self.LAYERS * self.SLACK * self.SLACK)
        layer, rest = divmod(k, self.SLACK * self.SLACK)
        dy, dx = divmod(rest, self.SLACK)
        noisy = cv2.add(img, self._bank[layer, dy:dy + h, dx:dx + w])
        return cv2.subtract(noisy, self.bias)
