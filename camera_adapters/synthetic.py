"""A synthetic rig camera: a drawn mouse face in profile whose 15 Facemap keypoints are known.

It lets the whole pipeline run, be timed and be checked for accuracy without a camera or a
video: every frame carries the true keypoints. The face is split in two parts so that either
can be deepened on its own: :class:`FaceModel` says where every part of the face is at time
``t`` (pure functions of the seed and ``t``), :class:`FaceRenderer` draws that pose.
Everything is deterministic for a seed: the pixels of frame ``k`` depend only on the seed,
the frame size, ``k`` and the frame rate.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import cv2
import numpy as np

from facestream.engines.bodyparts import BODYPARTS, N_KEYPOINTS
from .base import Camera, CameraError, Frame

#: the size the face geometry is designed at; other sizes scale it uniformly, centred
DESIGN_SIZE = (640, 480)
#: the frame rate that sets the face's time axis when the camera is unpaced (fps=0)
UNPACED_TIME_BASE_FPS = 50.0

_K = {name: i for i, name in enumerate(BODYPARTS)}
_Points = dict[str, tuple[float, float]]

# Rest pose in design pixels (x=column, y=row), nose pointing right.
_REST: dict[str, tuple[float, float]] = {
    "nosebridge": (468.0, 195.0),
    "nose(top)": (548.0, 236.0),
    "nose(r)": (596.0, 252.0),
    "nose(tip)": (590.0, 276.0),
    "nose(bottom)": (556.0, 292.0),
    "mouth": (505.0, 336.0),
    "lowerlip": (520.0, 356.0),
    "whisker(I)": (452.0, 262.0),
    "whisker(II)": (426.0, 276.0),
    "whisker(III)": (456.0, 292.0),
    "paw": (455.0, 432.0),
}
_EYE_CENTER = (215.0, 178.0)
_EYE_AXES = (50.0, 36.0)  # half-axes along and across the eye
_EYE_TILT_DEG = 14.0  # the eye's long axis runs down towards the nose
_PAW_HIDDEN_DROP = 130.0  # how far below its raised position the paw rests, out of frame

# Whisker shafts: follicle offset from the pad centre, angle (deg, 180 = straight back),
# length, curvature, brightness; all design units.
_WHISKERS: tuple[tuple[float, float, float, float, float, int], ...] = (
    (22, -26, 168, 175, 0.10, 215),
    (8, -20, 174, 215, 0.12, 225),
    (-8, -12, 180, 240, 0.14, 230),
    (28, -8, 184, 200, 0.10, 220),
    (12, -2, 190, 250, 0.16, 235),
    (-6, 6, 196, 235, 0.15, 225),
    (30, 10, 200, 190, 0.12, 210),
    (14, 16, 207, 220, 0.18, 225),
    (-2, 22, 214, 200, 0.16, 215),
    (24, 28, 222, 170, 0.14, 205),
    (8, 34, 230, 150, 0.12, 200),
    (34, 0, 160, 120, 0.08, 190),
    (20, 38, 238, 190, 0.05, 205),
    (36, 36, 248, 170, 0.04, 195),
)
_PAD_CENTER = (445.0, 278.0)
# The head's silhouette, clockwise from far above the frame's top-left corner (so that the
# head fills any aspect ratio): forehead, snout, nose, chin, throat; smoothed into a closed curve.
_HEAD_OUTLINE: tuple[tuple[float, float], ...] = (
    (-700, -500), (310, -500), (320, -60), (345, 40), (400, 125), (460, 190), (530, 222),
    (566, 238), (580, 262), (570, 292), (548, 310), (530, 340), (536, 372), (505, 395),
    (440, 408), (395, 440), (372, 540), (360, 900), (-700, 900),
)

_SHIFT = 4  # cv2 fixed-point bits for sub-pixel drawing
_ONE = 1 << _SHIFT
_AA = cv2.LINE_AA
_MASK64 = (1 << 64) - 1


def _unit(seed: int, stream: int, k: int) -> float:
    """A uniform number in [0, 1) that depends only on (seed, stream, k): splitmix64."""
    z = (seed * 0x9E3779B97F4A7C15 + stream * 0xBF58476D1CE4E5B9 + k * 0x94D049BB133111EB) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return ((z ^ (z >> 31)) >> 11) / float(1 << 53)


def _bump(x: float) -> float:
    """0 at x<=0 and x>=1, rising smoothly to 1 at x=0.5."""
    return 0.0 if x <= 0.0 or x >= 1.0 else 0.5 - 0.5 * math.cos(2.0 * math.pi * x)


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass(frozen=True)
class FacePose:
    """Where everything is at one instant, in frame pixels.

    keypoints: float32 (15, 3) [x, y, visible] in Facemap order; x is the column, y the row,
    integer values are pixel centres. offset: the head's integer shift (columns, rows) applied
    to the static parts of the face. whisk: whisker protraction in [-1, 1]. mouth_open and
    eye_open in [0, 1]. scale: frame pixels per design pixel.
    """

    keypoints: np.ndarray
    offset: tuple[int, int]
    whisk: float
    mouth_open: float
    eye_open: float
    scale: float


class FaceModel:
    """The face's geometry and its deterministic motion: blinks, saccades, whisking, sniffing,
    mouth opening, a paw that is sometimes raised into view, and small head jitter."""

    def __init__(self, width: int, height: int, seed: int) -> None:
        self.width, self.height, self.seed = width, height, seed

        def u(k: int) -> float:  # this animal's constants
            return _unit(seed, 0, k)

        fit = min(width / DESIGN_SIZE[0], height / DESIGN_SIZE[1])
        self.scale = fit * (0.95 + 0.10 * u(0))
        dx, dy = (u(1) - 0.5) * 30.0, (u(2) - 0.5) * 30.0
        self._origin = (
            width / 2.0 + fit * dx - self.scale * DESIGN_SIZE[0] / 2.0,
            height / 2.0 + fit * dy - self.scale * DESIGN_SIZE[1] / 2.0,
        )
        self.jitter_max = max(1, int(math.ceil(3.0 * self.scale)))
        self._whisk_hz = 7.0 + 4.0 * u(3)
        self._whisk_phase = 2.0 * math.pi * u(4)
        self._whisk_bout_s = 4.0 + 3.0 * u(5)
        self._whisk_bout_phase = 2.0 * math.pi * u(6)
        self._sniff_hz = 4.0 + 6.0 * u(7)
        self._sniff_phase = 2.0 * math.pi * u(8)
        self._jitter_phase = [2.0 * math.pi * u(9 + i) for i in range(4)]

    def to_frame(self, x: float, y: float) -> tuple[float, float]:
        """Design pixels to frame pixels (without head jitter)."""
        return self._origin[0] + self.scale * x, self._origin[1] + self.scale * y

    # --- motion, each a pure function of t (seconds) -------------------------------------------

    def _event(self, stream: int, t: float, window_s: float, duration_s: float, p: float) -> float:
        """A bump of ``duration_s`` placed at random in some windows of ``window_s``: 0..1."""
        k = math.floor(t / window_s)
        if _unit(self.seed, stream, 2 * k) >= p:
            return 0.0
        start = k * window_s + _unit(self.seed, stream, 2 * k + 1) * (window_s - duration_s)
        return _bump((t - start) / duration_s)

    def eye_open(self, t: float) -> float:
        return 1.0 - 0.95 * self._event(1, t, 3.0, 0.3, 0.6)

    def _gaze(self, k: int) -> tuple[float, float]:
        return 6.0 * (_unit(self.seed, 2, 2 * k) - 0.5), 4.0 * (_unit(self.seed, 2, 2 * k + 1) - 0.5)

    def saccade(self, t: float) -> tuple[float, float]:
        """The eye's shift: a new gaze every 1.2 s, reached in 40 ms."""
        window = 1.2
        k = math.floor(t / window)
        (x0, y0), (x1, y1) = self._gaze(k - 1), self._gaze(k)
        a = _smoothstep((t - k * window) / 0.04)
        return x0 + a * (x1 - x0), y0 + a * (y1 - y0)

    def whisk(self, t: float) -> float:
        bout = math.sin(2.0 * math.pi * t / self._whisk_bout_s + self._whisk_bout_phase)
        envelope = min(max(1.5 * bout + 0.5, 0.0), 1.0)
        return envelope * math.sin(2.0 * math.pi * self._whisk_hz * t + self._whisk_phase)

    def sniff(self, t: float) -> float:
        depth = 0.6 + 0.4 * math.sin(2.0 * math.pi * t / 5.3 + self._sniff_phase)
        return depth * math.sin(2.0 * math.pi * self._sniff_hz * t + self._sniff_phase)

    def mouth_open(self, t: float) -> float:
        return self._event(3, t, 2.5, 0.5, 0.5)

    def paw_raise(self, t: float) -> float:
        """0 when the paw rests out of frame, 1 when fully raised (grooming)."""
        window, duration = 8.0, 2.6
        k = math.floor(t / window)
        if _unit(self.seed, 4, 2 * k) >= 0.5:
            return 0.0
        x = (t - k * window - _unit(self.seed, 4, 2 * k + 1) * (window - duration)) / duration
        return _smoothstep(x / 0.2) * _smoothstep((1.0 - x) / 0.2)

    def head_offset(self, t: float) -> tuple[int, int]:
        ph = self._jitter_phase
        tau = 2.0 * math.pi * t
        jx = math.sin(0.7 * tau + ph[0]) + 0.5 * math.sin(1.9 * tau + ph[1])
        jy = math.sin(0.5 * tau + ph[2]) + 0.5 * math.sin(2.3 * tau + ph[3])
        m = self.jitter_max
        return (
            int(np.clip(round(jx * m / 1.5), -m, m)),
            int(np.clip(round(jy * m / 1.5), -m, m)),
        )

    # --- the pose ------------------------------------------------------------------------------

    def pose(self, t: float) -> FacePose:
        """The face at ``t`` seconds: the keypoints and what the renderer needs besides them."""
        eye_open, whisk, sniff = self.eye_open(t), self.whisk(t), self.sniff(t)
        mouth, paw = self.mouth_open(t), self.paw_raise(t)
        design: _Points = dict(_REST)

        sx, sy = self.saccade(t)
        cx, cy = _EYE_CENTER[0] + sx, _EYE_CENTER[1] + sy
        a, b = _EYE_AXES[0], _EYE_AXES[1] * max(eye_open, 0.03)
        ca, sa = math.cos(math.radians(_EYE_TILT_DEG)), math.sin(math.radians(_EYE_TILT_DEG))
        design["eye(back)"] = (cx - a * ca, cy - a * sa)
        design["eye(front)"] = (cx + a * ca, cy + a * sa)
        design["eye(top)"] = (cx + b * sa, cy - b * ca)
        design["eye(bottom)"] = (cx - b * sa, cy + b * ca)

        for name, gain in (("whisker(I)", 5.0), ("whisker(II)", 4.0), ("whisker(III)", 4.5)):
            x, y = design[name]
            design[name] = (x + gain * whisk * 0.94, y - gain * whisk * 0.34)
        for name, (gx, gy) in {
            "nose(tip)": (3.0, -1.0), "nose(r)": (3.0, -1.5),
            "nose(top)": (1.5, -1.5), "nose(bottom)": (1.5, 1.0),
        }.items():
            x, y = design[name]
            design[name] = (x + gx * sniff, y + gy * sniff)
        x, y = design["mouth"]
        design["mouth"] = (x - 3.0 * mouth, y + 4.0 * mouth)
        x, y = design["lowerlip"]
        design["lowerlip"] = (x - 3.0 * mouth, y + 12.0 * mouth)
        x, y = design["paw"]
        groom = math.sin(2.0 * math.pi * 3.0 * t) * paw
        design["paw"] = (x + 6.0 * groom, y + _PAW_HIDDEN_DROP * (1.0 - paw) + 4.0 * groom)

        ox, oy = self.head_offset(t)
        kp = np.zeros((N_KEYPOINTS, 3), np.float32)
        for name, (x, y) in design.items():
            fx, fy = self.to_frame(x, y)
            kp[_K[name]] = (fx + ox, fy + oy, 1.0)
        x, y = kp[:, 0], kp[:, 1]
        kp[:, 2] = (x >= 0) & (x <= self.width - 1) & (y >= 0) & (y <= self.height - 1)
        return FacePose(kp, (ox, oy), whisk, mouth, eye_open, self.scale)


def _closed_curve(points: list[tuple[float, float]], steps: int = 8) -> list[tuple[float, float]]:
    """A closed Catmull-Rom spline through ``points``."""
    out, n = [], len(points)
    for i in range(n):
        p0, p1, p2, p3 = (points[(i + j) % n] for j in (-1, 0, 1, 2))
        for k in range(steps):
            u = k / steps
            c = (-u**3 + 2 * u**2 - u, 3 * u**3 - 5 * u**2 + 2, -3 * u**3 + 4 * u**2 + u, u**3 - u**2)
            out.append((
                0.5 * (c[0] * p0[0] + c[1] * p1[0] + c[2] * p2[0] + c[3] * p3[0]),
                0.5 * (c[0] * p0[1] + c[1] * p1[1] + c[2] * p2[1] + c[3] * p3[1]),
            ))
    return out


def _fixed(x: float, y: float) -> tuple[int, int]:
    """A point in cv2's fixed-point coordinates (``shift=_SHIFT``)."""
    return int(round(x * _ONE)), int(round(y * _ONE))


def _poly(points: list[tuple[float, float]]) -> np.ndarray:
    return np.array([_fixed(x, y) for x, y in points], np.int32)


class FaceRenderer:
    """Draws a :class:`FacePose` as an infrared-looking grayscale frame.

    The head, its fur and shading, the whisker pad and the background are drawn once on a
    canvas a little larger than the frame; each frame crops it at the head's offset and draws
    the moving parts (whiskers, nose, mouth, eye, paw) and sensor noise on top.
    """

    _NOISE_FRAMES = 16
    _NOISE_BIAS = 12

    def __init__(self, model: FaceModel) -> None:
        self.model = model
        rng = np.random.default_rng([model.seed, 1])
        self._pad = model.jitter_max
        self._static = self._draw_static(rng)
        h, w = model.height, model.width
        noise = rng.normal(self._NOISE_BIAS, 4.0, size=(self._NOISE_FRAMES, h, w))
        self._noise = np.clip(noise, 0, 2 * self._NOISE_BIAS).astype(np.uint8)

    def _draw_static(self, rng: np.random.Generator) -> np.ndarray:
        m, p = self.model, self._pad
        h, w = m.height + 2 * p, m.width + 2 * p
        s = m.scale

        def at(x: float, y: float) -> tuple[float, float]:
            fx, fy = m.to_frame(x, y)
            return fx + p, fy + p

        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        low = rng.normal(0.0, 1.0, (12, 16)).astype(np.float32)
        low = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
        background = 16.0 + 10.0 * (yy / h) + 4.0 * low

        mask = np.zeros((h, w), np.uint8)
        outline = _closed_curve([at(x, y) for x, y in _HEAD_OUTLINE])
        cv2.fillPoly(mask, [_poly(outline)], 255, _AA, _SHIFT)
        alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 3.0 * s)

        def glow(x: float, y: float, sigma: float) -> np.ndarray:
            cx, cy = at(x, y)
            return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2.0 * (sigma * s) ** 2))

        head = 70.0 + 95.0 * glow(470.0, 290.0, 170.0) + 50.0 * glow(*_PAD_CENTER, 55.0)

        fur = rng.normal(0.0, 1.0, (h, w)).astype(np.float32)
        streak = np.zeros((9, 9), np.float32)
        cv2.line(streak, (0, 6), (8, 2), 1.0, 1)  # hairs run back and slightly up
        fur = cv2.filter2D(fur, -1, streak / streak.sum())
        fur = cv2.GaussianBlur(fur, (0, 0), 0.7)
        grain = cv2.GaussianBlur(rng.normal(0.0, 1.0, (h, w)).astype(np.float32), (0, 0), 0.6)
        head += 40.0 * fur + 16.0 * grain + 12.0 * low

        follicles = np.zeros((h, w), np.float32)
        for row in range(4):
            for col in range(5):
                fx, fy = at(_PAD_CENTER[0] - 36 + 17 * col + 5 * row, _PAD_CENTER[1] - 24 + 15 * row)
                cv2.circle(follicles, _fixed(fx, fy), int(2.2 * s * _ONE), 1.0, -1, _AA, _SHIFT)
        head -= 45.0 * cv2.GaussianBlur(follicles, (0, 0), 0.8)

        img = background * (1.0 - alpha) + head * alpha
        return np.clip(img, 0, 255).astype(np.uint8)

    def render(self, pose: FacePose, frame_index: int) -> np.ndarray:
        m, p = self.model, self._pad
        ox, oy = pose.offset
        img = self._static[p - oy:p - oy + m.height, p - ox:p - ox + m.width].copy()
        pt = {name: (float(x), float(y)) for name, (x, y, _) in zip(BODYPARTS, pose.keypoints)}
        s = pose.scale
        self._draw_whiskers(img, pose)
        self._draw_nose(img, pt, s)
        self._draw_mouth(img, pt, pose.mouth_open, s)
        self._draw_eye(img, pt, pose.eye_open, s)
        self._draw_paw(img, pt["paw"], s)

        img = cv2.add(img, self._noise[int(_unit(m.seed, 5, frame_index) * self._NOISE_FRAMES)])
        return cv2.subtract(img, self._NOISE_BIAS)

    def _draw_whiskers(self, img: np.ndarray, pose: FacePose) -> None:
        s = pose.scale
        ox, oy = pose.offset
        swing = math.radians(18.0) * pose.whisk
        px, py = _PAD_CENTER[0] + 4.0 * pose.whisk, _PAD_CENTER[1] - 1.5 * pose.whisk
        for dx, dy, angle, length, bend, shade in _WHISKERS:
            theta = math.radians(angle) - swing
            bx, by = px + dx, py + dy
            ux, uy = math.cos(theta), math.sin(theta)
            pts = []
            for i in range(7):
                f = i / 6.0
                d = f * length
                sag = bend * length * f * f  # the shaft droops as it goes
                fx, fy = self.model.to_frame(bx + d * ux, by + d * uy + sag)
                pts.append(_fixed(fx + ox, fy + oy))
            arr = np.array(pts, np.int32)
            cv2.polylines(img, [arr[:3]], False, shade, max(1, round(2 * s)), _AA, _SHIFT)
            cv2.polylines(img, [arr[2:]], False, shade - 25, 1, _AA, _SHIFT)

    @staticmethod
    def _draw_nose(img: np.ndarray, pt: _Points, s: float) -> None:
        top, right, tip, bottom = pt["nose(top)"], pt["nose(r)"], pt["nose(tip)"], pt["nose(bottom)"]
        back = ((top[0] + bottom[0]) / 2.0 - 10 * s, (top[1] + bottom[1]) / 2.0)
        cv2.fillPoly(img, [_poly(_closed_curve([top, right, tip, bottom, back], 6))], 150, _AA, _SHIFT)
        nx = 0.25 * top[0] + 0.55 * right[0] + 0.2 * tip[0] - 5 * s
        ny = 0.25 * top[1] + 0.55 * right[1] + 0.2 * tip[1] + 3 * s
        cv2.ellipse(img, _fixed(nx, ny), _fixed(8 * s, 3.5 * s), 40.0, 0, 360, 45, -1, _AA, _SHIFT)

    @staticmethod
    def _draw_mouth(img: np.ndarray, pt: _Points, mouth_open: float, s: float) -> None:
        bx, by = pt["nose(bottom)"]
        mx, my = pt["mouth"]
        lx, ly = pt["lowerlip"]
        upper = (bx - 3 * s, by + 15 * s)
        if mouth_open > 0.05:
            gap = [upper, (mx, my), (lx + 2 * s, ly - 10 * s), (upper[0] + 4 * s, upper[1] + 6 * s)]
            cv2.fillPoly(img, [_poly(gap)], 28, _AA, _SHIFT)
        chin = _fixed(lx - 5 * s, ly - 7 * s)
        cv2.ellipse(img, chin, _fixed(19 * s, 8 * s), -20.0, 0, 360, 165, -1, _AA, _SHIFT)
        lip = [upper, ((upper[0] + mx) / 2.0 + 2 * s, (upper[1] + my) / 2.0 + 3 * s), (mx, my)]
        cv2.polylines(img, [_poly(lip)], False, 40, max(1, round(2 * s)), _AA, _SHIFT)

    @staticmethod
    def _draw_eye(img: np.ndarray, pt: _Points, eye_open: float, s: float) -> None:
        (bx, by), (fx, fy) = pt["eye(back)"], pt["eye(front)"]
        (tx, ty), (ux, uy) = pt["eye(top)"], pt["eye(bottom)"]
        cx, cy = (bx + fx) / 2.0, (by + fy) / 2.0
        a = math.hypot(fx - bx, fy - by) / 2.0
        b = max(math.hypot(ux - tx, uy - ty) / 2.0, 0.5)
        angle = math.degrees(math.atan2(fy - by, fx - bx))
        rim, centre = max(2, round(4 * s)), _fixed(cx, cy)
        cv2.ellipse(img, centre, _fixed(a + rim / 2, b + rim / 2), angle, 0, 360, 140, rim, _AA, _SHIFT)
        cv2.ellipse(img, centre, _fixed(a, b), angle, 0, 360, 14, -1, _AA, _SHIFT)
        if eye_open > 0.4:
            r = math.radians(angle)
            hx = cx - 0.30 * a * math.cos(r) + 0.35 * b * math.sin(r)
            hy = cy - 0.30 * a * math.sin(r) - 0.35 * b * math.cos(r)
            cv2.circle(img, _fixed(hx, hy), int(4.5 * s * _ONE), 250, -1, _AA, _SHIFT)
            cv2.circle(img, _fixed(hx + 9 * s, hy + 1 * s), int(2.5 * s * _ONE), 235, -1, _AA, _SHIFT)

    @staticmethod
    def _draw_paw(img: np.ndarray, paw: tuple[float, float], s: float) -> None:
        x, y = paw
        if y - 40 * s > img.shape[0]:
            return
        wrist, palm = _fixed(x, y + 10 * s), _fixed(x, y)
        cv2.ellipse(img, wrist, _fixed(24 * s, 30 * s), 20.0, 0, 360, 120, -1, _AA, _SHIFT)
        cv2.ellipse(img, palm, _fixed(22 * s, 16 * s), -15.0, 0, 360, 175, -1, _AA, _SHIFT)
        for i in range(4):
            ang = math.radians(-150 + 35 * i)
            dx, dy = 22 * s * math.cos(ang) + 6 * s, 16 * s * math.sin(ang) - 2 * s
            cv2.circle(img, _fixed(x + dx, y + dy), int(5 * s * _ONE), 195, -1, _AA, _SHIFT)


class SyntheticCamera(Camera):
    """A drawn mouse face with its true keypoints, paced like a free-running camera.

    Frame ``k`` is due at ``open + k / fps``. A read that comes one or more whole frame periods
    late gets the newest frame whose time has come; the ones skipped are counted in
    ``dropped_before`` and their ids are never delivered. ``fps=0`` delivers frames as fast as
    they are read and never drops; the face then moves at ``UNPACED_TIME_BASE_FPS``.
    ``frames > 0`` ends the stream after frame id ``frames - 1``: delivered plus dropped
    frames add up to ``frames``. ``frames=0`` never ends.
    """

    name = "synthetic"

    def __init__(
        self, width: int = 640, height: int = 480, fps: float = 50.0, seed: int = 0, frames: int = 0
    ) -> None:
        if width < 64 or height < 48:
            raise CameraError(f"synthetic camera: {width}x{height} is too small (at least 64x48)")
        if fps < 0 or frames < 0 or seed < 0:
            raise CameraError("synthetic camera: fps, seed and frames must not be negative")
        self._width, self._height, self._fps = int(width), int(height), float(fps)
        self._frames = int(frames)
        self.model = FaceModel(self._width, self._height, int(seed))
        self._renderer: FaceRenderer | None = None
        self._t_open_ns: int | None = None
        self._next = 0

    @property
    def shape(self) -> tuple[int, int]:
        return self._height, self._width

    @property
    def fps(self) -> float:
        return self._fps

    def open(self) -> None:
        if self._renderer is None:
            self._renderer = FaceRenderer(self.model)
        self._next = 0
        self._t_open_ns = time.monotonic_ns()

    def close(self) -> None:
        self._t_open_ns = None

    def render(self, frame_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Pixels and true keypoints of frame ``frame_id``, with no pacing (needs no open())."""
        if self._renderer is None:
            self._renderer = FaceRenderer(self.model)
        pose = self.model.pose(frame_id / (self._fps or UNPACED_TIME_BASE_FPS))
        return self._renderer.render(pose, frame_id), pose.keypoints

    def read(self) -> Frame | None:
        if self._t_open_ns is None:
            raise CameraError("synthetic camera: read() before open()")
        k = self._next
        if self._frames and k >= self._frames:
            return None
        if self._fps > 0:
            period_ns = 1e9 / self._fps
            elapsed = time.monotonic_ns() - self._t_open_ns
            k = max(k, int(elapsed // period_ns))
            if self._frames:
                k = min(k, self._frames - 1)
            t_camera_ns = round(k * period_ns)
            pixels, truth = self.render(k)
            wait_ns = self._t_open_ns + t_camera_ns - time.monotonic_ns()
            if wait_ns > 0:
                time.sleep(wait_ns / 1e9)
        else:
            pixels, truth = self.render(k)
            t_camera_ns = time.monotonic_ns() - self._t_open_ns
        dropped, self._next = k - self._next, k + 1
        return Frame(pixels, k, time.monotonic_ns(), t_camera_ns, dropped, truth)
