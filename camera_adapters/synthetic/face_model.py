"""The synthetic mouse face's geometry: one random animal per seed, posed by its behaviour.

A tracker trained on these frames must generalise across animals and rigs, so each seed draws
its own face shape (eye size and tilt, snout length, pad and mouth placement), its own size,
rotation and position in the frame, and keeps every face keypoint inside the frame. The
geometry lives in design units (a 640x480 frame, nose to the right) and is mapped once per
seed into canvas pixels: the frame plus a margin the head can move within.

Everything that decides where a keypoint is lives here (eye and lids, the snout's local
deformations, the follicles, the paw, the rig's props that may hide keypoints) so that the
renderer only decides how it looks; the renderer draws the same shapes from the same
:class:`FacePose` and :class:`Prop` outlines.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from facestream.engines.bodyparts import BODYPARTS, N_KEYPOINTS
from .face_behaviour import Behaviour

#: the frame size the face is designed at; other sizes scale it to fit
DESIGN_SIZE = (640, 480)

_K = {name: i for i, name in enumerate(BODYPARTS)}

# Design positions (x = column, y = row) of the face at rest, nose to the right.
_EYE_CENTRE = (178.0, 150.0)
_EYE_HALF_LENGTH = 56.0
_PAD_KEYPOINTS = {"whisker(I)": (386.0, 214.0), "whisker(II)": (357.0, 227.0), "whisker(III)": (391.0, 251.0)}
_PAD_CENTRE = (380.0, 238.0)
_NOSE = {"nose(top)": (546.0, 263.0), "nose(r)": (601.0, 293.0), "nose(tip)": (579.0, 333.0),
         "nose(bottom)": (533.0, 330.0)}
_MOUTH_CORNER = (510.0, 374.0)
_MOUTH_FRONT = (549.0, 368.0)
_JAW_HINGE_BEHIND = 50.0  # the jaw turns about a point this far behind the mouth corner
_JAW_TURN_DEG = 15.0  # how far a full lick turns the jaw down
_SNOUT = (*_NOSE, "nosebridge", "lowerlip")  # keypoints the snout's deformations move
# The head's silhouette, clockwise from far above the frame's top-left corner; "@name" marks a
# point that is a keypoint (it lies on the outline exactly).
_OUTLINE: tuple[tuple[float, float] | str, ...] = (
    (-700, -500), (300, -500), (320, -60), (352, 30), (398, 100), "@nosebridge", (500, 203),
    (546, 236), (581, 257), "@nose(r)", (597, 315), "@nose(tip)", (567, 345), (557, 356),
    _MOUTH_FRONT, "@lowerlip", (530, 402), (498, 421), (455, 438), (418, 470), (398, 540), (390, 900),
    (-700, 900),
)
_CHIN = _OUTLINE.index((498, 421))  # the chin's lowest point below the mouth, on the outline
_ON_OUTLINE = {"nosebridge": (446.0, 156.0), "lowerlip": (544.0, 383.0)}
_PAW_REST = (470.0, 640.0)  # below the frame: the paw is out of view unless grooming
_PAW_REST_IN_VIEW = (500.0, 462.0)  # some animals rest a paw on the platform below the chin
_PAW_STROKE_CENTRE = (500.0, 318.0)
_PAW_STROKE_RADII = (42.0, 26.0)
_PAW_PALM = (36.0, 26.0)  # half-axes
_PAW_DIGIT_R = 8.0
_FOREARM_R = 19.0
_MOTION_MARGIN = 22.0  # design units the keypoints may move from rest (sniff, jaw, whisk)


@dataclass(frozen=True)
class Eye:
    """The eye in canvas pixels: its corners, the lid openings and where it looks.

    The lids are arcs from ``back`` to ``front``; each arc's height above (upper) or below
    (lower) the chord at the middle is ``upper`` / ``lower`` (negative when the lid has crossed
    the chord, in a blink). ``ball`` is the eyeball's centre, ``radius`` its half-height when
    open; ``pupil_r`` the pupil's radius and ``pupil_at`` its centre after the gaze shift.
    """

    back: tuple[float, float]
    front: tuple[float, float]
    upper: float
    lower: float
    ball: tuple[float, float]
    radius: float
    pupil_at: tuple[float, float]
    pupil_r: float

    def lids(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` points along the upper and the lower lid, back corner to front corner."""
        b, f = np.array(self.back), np.array(self.front)
        u = np.linspace(0.0, 1.0, n)[:, None]
        chord = b + u * (f - b)
        d = f - b
        up = np.array([d[1], -d[0]]) / np.hypot(*d)  # the chord's normal pointing up
        profile = 2.0 * np.sqrt(u * (1.0 - u))
        return chord + profile * self.upper * up, chord - profile * self.lower * up


@dataclass(frozen=True)
class Paw:
    """The raised paw in canvas pixels: the palm ellipse, the digits and the forearm."""

    palm: tuple[float, float]
    palm_axes: tuple[float, float]
    angle: float  # degrees, the palm's long axis
    digits: tuple[tuple[float, float], ...]
    digit_r: float
    elbow: tuple[float, float]
    forearm_r: float

    def covers(self, points: np.ndarray) -> np.ndarray:
        """Which of ``points`` (n, 2) lie on the paw."""
        p = np.asarray(points, np.float64)
        c, s = math.cos(math.radians(self.angle)), math.sin(math.radians(self.angle))
        dx, dy = p[:, 0] - self.palm[0], p[:, 1] - self.palm[1]
        a, b = self.palm_axes
        inside = ((dx * c + dy * s) / a) ** 2 + ((-dx * s + dy * c) / b) ** 2 <= 1.0
        for d in self.digits:
            inside |= np.hypot(p[:, 0] - d[0], p[:, 1] - d[1]) <= self.digit_r
        w, e = np.array(self.palm), np.array(self.elbow)
        seg = e - w
        along = np.clip(((p - w) @ seg) / (seg @ seg), 0.0, 1.0)
        inside |= np.hypot(*(p - (w + along[:, None] * seg)).T) <= self.forearm_r
        return inside


@dataclass(frozen=True)
class FacePose:
    """The face at one instant.

    keypoints: float32 (15, 3) [x, y, visible] in frame pixels, Facemap's order; visible is 0
    outside the frame and where the paw covers the point. latents: the behaviour (see
    face_behaviour). shift: integer (columns, rows) the frame is cut from the canvas at
    (head motion). Everything else is in canvas pixels: snout: coefficients of the snout's
    deformation basis (:meth:`FaceModel.snout_basis`); eye; follicles (n, 2) after the pad's
    motion; paw (None when it is out of view).
    """

    keypoints: np.ndarray
    latents: dict[str, float]
    shift: tuple[int, int]
    snout: np.ndarray
    eye: Eye
    follicles: np.ndarray
    paw: Paw | None
    whisk_sweep: float  # degrees the whiskers turned during the exposure (for motion blur)


@dataclass(frozen=True)
class Prop:
    """A piece of the rig, fixed in the frame (frame pixels): ``kind`` is "platform" (a bright
    floor below the chin), "bar" (a head-post bar) or "spout" (a lick spout in front of the
    mouth). A prop in ``front`` of the face hides the keypoints it covers; one behind only
    shows where the face is not."""

    kind: str
    outline: np.ndarray
    front: bool


def _rotation(deg: float) -> np.ndarray:
    r = math.radians(deg)
    return np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])


class FaceModel:
    """One animal (one seed) in one frame size: its anatomy, its behaviour and its poses."""

    def __init__(self, width: int, height: int, seed: int, props: bool = True) -> None:
        """``props=False`` leaves the rig's props out (they never move a keypoint, only hide it)."""
        self.width, self.height, self.seed = width, height, seed
        rng = np.random.default_rng([seed, 0xFACE])
        fit = min(width / DESIGN_SIZE[0], height / DESIGN_SIZE[1])
        self.scale = fit * rng.uniform(0.87, 1.15)
        self.rotation = rng.uniform(-8.0, 8.0)
        self.behaviour = Behaviour(seed, head_px=2.5 * self.scale)
        self.margin = int(math.ceil(2.3 * self.behaviour.head_px)) + 2
        self._draw_shape(rng)
        self._place(rng)
        self._snout_setup()
        self._rig(np.random.default_rng([seed, 0x816]), props)

    # --- anatomy ------------------------------------------------------------------------------

    def _draw_shape(self, rng: np.random.Generator) -> None:
        """This animal's face in design units: the rest layout bent by a smooth random field."""
        self.eye_a = _EYE_HALF_LENGTH * rng.uniform(0.88, 1.12)
        self.eye_b = self.eye_a * rng.uniform(0.78, 0.92)
        self.eye_tilt = rng.uniform(12.0, 28.0)
        nose_centre = np.mean(list(_NOSE.values()), axis=0)
        snout = rng.uniform(-12.0, 12.0) * np.array([1.0, 0.6])  # a longer or shorter snout
        anchors = np.array([_EYE_CENTRE, _ON_OUTLINE["nosebridge"], _PAD_CENTRE, nose_centre,
                            _MOUTH_CORNER, (480.0, 420.0), (330.0, 20.0)])
        moves = rng.normal(0.0, 6.0, anchors.shape)
        moves[3:6] += snout
        moves[2] += 0.5 * snout
        nose_size = rng.uniform(0.85, 1.15)

        def bend(points) -> np.ndarray:
            p = np.asarray(points, np.float64).reshape(-1, 2)
            d2 = ((p[:, None, :] - anchors[None]) ** 2).sum(-1)
            w = np.exp(-d2 / (2.0 * 90.0**2)) + 1e-12
            p = p + (w @ moves) / w.sum(1, keepdims=True)
            near = np.exp(-((p - nose_centre - moves[3]) ** 2).sum(-1) / (2.0 * 60.0**2))[:, None]
            return p + (nose_size - 1.0) * near * (p - nose_centre - moves[3])

        names = [*_NOSE, *_PAD_KEYPOINTS, *_ON_OUTLINE]
        rest = {**_NOSE, **_PAD_KEYPOINTS, **_ON_OUTLINE}
        self.points = dict(zip(names, bend([rest[n] for n in names])))
        self.eye_centre = bend([_EYE_CENTRE])[0]
        self.pad_centre = bend([_PAD_CENTRE])[0]
        self.mouth_corner, self.mouth_front = bend([_MOUTH_CORNER, _MOUTH_FRONT])
        self.outline = np.array([self.points[p[1:]] if isinstance(p, str) else bend([p])[0] for p in _OUTLINE])
        self.follicles = bend(self._follicle_grid(rng))
        self.paw_stroke_centre = bend([_PAW_STROKE_CENTRE])[0] + rng.normal(0.0, 6.0, 2)

    def _follicle_grid(self, rng: np.random.Generator) -> np.ndarray:
        """Whisker follicles in rows on the pad, in rest design units; the first three are the
        pad keypoints whisker(I), (II), (III)."""
        u = np.array([math.cos(math.radians(22)), math.sin(math.radians(22))])  # along a row
        v = np.array([-u[1], u[0]])  # down across the rows
        keypoints = [np.array(p) for p in _PAD_KEYPOINTS.values()]
        out = list(keypoints)
        for row in range(5):
            for col in range(6):
                p = np.array(_PAD_CENTRE) + (col - 2.5) * 14.0 * u + (row - 2.0) * 12.0 * v + rng.normal(0, 1.5, 2)
                if min(np.hypot(*(p - k)) for k in keypoints) > 8.0:
                    out.append(p)
        return np.array(out)

    def _place(self, rng: np.random.Generator) -> None:
        """Size, rotation and position in the frame, keeping the keypoints inside it."""
        w, h = self.width, self.height
        self._linear = self.scale * _rotation(self.rotation)
        centre = np.array(DESIGN_SIZE, np.float64) / 2.0
        self._design_centre = centre
        rest = self._rest_keypoints()
        spread = (rest - centre) @ self._linear.T
        pad = _MOTION_MARGIN * self.scale + 0.02 * min(w, h) + self.margin
        lo = pad - spread.min(axis=0)
        hi = np.array([w - 1.0, h - 1.0]) - pad - spread.max(axis=0)
        wish = np.array([w, h]) * (0.5 + rng.uniform(-0.1, 0.1, 2))
        self._offset = np.where(lo <= hi, np.clip(wish, lo, hi), (lo + hi) / 2.0) + self.margin

    def _rest_keypoints(self) -> np.ndarray:
        """The face keypoints (not the paw) at rest, in design units."""
        eye = [self.eye_centre + self.eye_a * np.array(d) for d in ((-1, 0), (1, 0), (0, -0.9), (0, 0.9))]
        return np.array(eye + [p for n, p in self.points.items()] + [self.mouth_corner])

    def to_canvas(self, points) -> np.ndarray:
        """Design units (n, 2) to canvas pixels."""
        return (np.asarray(points, np.float64) - self._design_centre) @ self._linear.T + self._offset

    def direction(self, v) -> np.ndarray:
        """A design-space vector (n, 2) to canvas pixels (rotated and scaled, not moved)."""
        return np.asarray(v, np.float64) @ self._linear.T

    @property
    def canvas_size(self) -> tuple[int, int]:
        """(width, height) of the canvas: the frame and a margin on each side."""
        return self.width + 2 * self.margin, self.height + 2 * self.margin

    # --- the rig -------------------------------------------------------------------------------

    def _rig(self, rng: np.random.Generator, props: bool) -> None:
        """What varies between rigs and animals beyond the face's shape: a resting squint, where
        an idle paw rests, the camera's exposure time, and the props around the face."""
        self.squint = rng.uniform(0.1, 0.35) if rng.random() < 0.3 else 0.0
        self.paw_rests_in_view = bool(rng.random() < 0.35)
        self.paw_rest = np.array(_PAW_REST_IN_VIEW if self.paw_rests_in_view else _PAW_REST)
        self.paw_rest = self.paw_rest + (rng.normal(0.0, 8.0, 2) if self.paw_rests_in_view else 0.0)
        self.exposure = rng.uniform(0.001, 0.008)  # seconds
        self.props: tuple[Prop, ...] = self._props(rng) if props else ()
        self._hiding = np.zeros((self.height, self.width), np.uint8)
        for prop in self.props:
            if prop.front:
                cv2.fillPoly(self._hiding, [np.round(prop.outline).astype(np.int32)], 1)

    def _props(self, rng: np.random.Generator) -> tuple[Prop, ...]:
        s, w, h = self.scale, self.width, self.height
        lip, front, eye_c, chin = self.to_canvas([self.points["lowerlip"], self.mouth_front, self.eye_centre,
                                                  self.outline[_CHIN]]) - self.margin

        def bar(start: np.ndarray, end: np.ndarray, half: float) -> np.ndarray:
            d = end - start
            v = np.array([-d[1], d[0]]) * half / np.hypot(*d)
            return np.array([start - v, end - v, end + v, start + v])

        out = []
        if rng.random() < 0.6:
            top = max(lip[1], chin[1]) + rng.uniform(15.0, 90.0) * s
            slope = math.tan(math.radians(rng.uniform(-8.0, 8.0)))
            edge = [(-w, top - w * slope), (2 * w, top + w * slope)]
            out.append(Prop("platform", np.array([*edge, (2 * w, 3 * h), (-w, 3 * h)]), bool(rng.random() < 0.3)))
        if rng.random() < 0.35:
            end = eye_c + np.array([rng.uniform(-80.0, 200.0), -rng.uniform(120.0, 200.0)]) * s
            angle = math.radians(self.rotation + rng.uniform(-20.0, 20.0))
            start = end - 2.0 * (w + h) * np.array([math.cos(angle), math.sin(angle)])
            out.append(Prop("bar", bar(start, end, rng.uniform(8.0, 22.0) * s), True))
        if rng.random() < 0.5:
            tip = front + np.array([rng.uniform(12.0, 40.0), rng.uniform(-5.0, 20.0)]) * s
            angle = math.radians(rng.uniform(-15.0, 65.0))
            u = np.array([math.cos(angle), math.sin(angle)])
            r = rng.uniform(3.5, 8.0) * s
            v = np.array([-u[1], u[0]]) * r
            cap = [tip + math.cos(a) * v - math.sin(a) * r * u for a in np.linspace(0.0, math.pi, 9)]
            out.append(Prop("spout", np.array([*cap, tip - v + 2.0 * (w + h) * u, tip + v + 2.0 * (w + h) * u]), True))
        return tuple(out)

    def hidden_by_props(self, xy: np.ndarray) -> np.ndarray:
        """Which frame points (n, 2) a prop in front of the face covers."""
        xi, yi = np.round(xy[:, 0]).astype(int), np.round(xy[:, 1]).astype(int)
        inside = (xi >= 0) & (xi < self.width) & (yi >= 0) & (yi < self.height)
        out = np.zeros(len(xy), bool)
        out[inside] = self._hiding[yi[inside], xi[inside]] > 0
        return out

    # --- the snout's deformations --------------------------------------------------------------

    def _snout_setup(self) -> None:
        """Canvas anchors of the snout's deformations (see :meth:`snout_basis`)."""
        s = self.scale
        nose = np.mean([self.points[n] for n in _NOSE], axis=0)
        self._bumps = [
            (self.to_canvas([nose])[0], (70.0 * s) ** 2, self.direction([(4.0, -1.8)])[0]),
            (self.to_canvas([self.pad_centre])[0], (85.0 * s) ** 2, self.direction([(5.0, -1.5)])[0]),
        ]
        self.mouth_line = self.to_canvas([self.mouth_corner, self.mouth_front])
        c, f = self.mouth_line
        self._mouth_u = (f - c) / np.hypot(*(f - c))
        self._hinge = c - _JAW_HINGE_BEHIND * s * self._mouth_u
        self._jaw_reach = float(np.hypot(*(f - c))) + 30.0 * s
        # the canvas points the snout's deformations move: follicles, snout keypoints, mouth corner
        self._moving = np.vstack([self.to_canvas(self.follicles), self.to_canvas([self.points[n] for n in _SNOUT]),
                                  self.mouth_line[:1]])

    def snout_support(self) -> list[tuple[float, float, float, float]]:
        """Canvas boxes (x0, y0, x1, y1) that together hold every point the snout warp moves."""
        boxes = [(c[0] - r, c[1] - r, c[0] + r, c[1] + r) for c, r in
                 ((centre, math.sqrt(r2)) for centre, r2, _ in self._bumps)]
        c, u, s = self.mouth_line[0], self._mouth_u, self.scale
        v = np.array([-u[1], u[0]])
        corners = [c + a * u + b * v for a in (-10.0 * s, self._jaw_reach + 20.0 * s) for b in (-2.0 * s, 100.0 * s)]
        (x0, y0), (x1, y1) = np.min(corners, axis=0), np.max(corners, axis=0)
        return boxes + [(x0, y0, x1, y1)]

    def snout_basis(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Displacement fields (3, *x.shape, 2) in canvas pixels at canvas points (x, y).

        Field 0 moves the nose forward (one unit of ``sniff``), field 1 the whisker pad forward
        (30 degrees of protraction), field 2 opens the jaw (a full lick). A pose's ``snout``
        coefficients weight them; the renderer warps the canvas by their sum, so whatever is
        drawn there moves by it.
        """
        x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
        out = np.zeros((3, *x.shape, 2), np.float32)
        s = self.scale
        for i, (centre, r2max, push) in enumerate(self._bumps):
            weight = np.clip(1.0 - ((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / r2max, 0.0, 1.0) ** 2
            out[i, ..., 0], out[i, ..., 1] = weight * push[0], weight * push[1]
        c, u, hinge = self.mouth_line[0], self._mouth_u, self._hinge
        along = (x - c[0]) * u[0] + (y - c[1]) * u[1]
        across = (y - c[1]) * u[0] - (x - c[0]) * u[1]  # positive below the mouth line
        weight = (_smooth((across + 2.0 * s) / (4.0 * s)) * _smooth(1.0 - (across - 60.0 * s) / (40.0 * s))
                  * _smooth((along + 10.0 * s) / (10.0 * s)) * _smooth(1.0 - (along - self._jaw_reach) / (20.0 * s))
                  * math.radians(_JAW_TURN_DEG))
        out[2, ..., 0] = -weight * (y - hinge[1])
        out[2, ..., 1] = weight * (x - hinge[0])
        return out

    def _displace(self, points: np.ndarray, coef: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where canvas points (n, 2) end up after the snout warp with coefficients ``coef``:
        the one-step estimate p + d(p) and the two-step one p + d(p + d(p)).

        The renderer pulls each output pixel q from q - d(q); a point p lands where
        q - d(q) = p, which the two-step estimate solves by fixed-point iteration. On the
        mouth line itself the warp tears the lips apart and the one-step estimate is the
        corner of the opening.
        """
        first = points + np.tensordot(coef, self.snout_basis(points[:, 0], points[:, 1]), axes=1)
        return first, points + np.tensordot(coef, self.snout_basis(first[:, 0], first[:, 1]), axes=1)

    # --- the pose ------------------------------------------------------------------------------

    def latents(self, t: float) -> dict[str, float]:
        """The behaviour at ``t`` seconds (see face_behaviour)."""
        return self.behaviour.at(t)

    def pose(self, t: float) -> FacePose:
        """The face at ``t`` seconds: the keypoints and what the renderer needs besides them."""
        lat = self.latents(t)
        coef = np.array([lat["sniff"], lat["whisk_angle"] / 30.0, lat["lick"]], np.float32)
        shift = (int(round(lat["head_x"])), int(round(lat["head_y"])))
        eye = self._eye(lat)
        paw = self._paw(lat)
        first, moved = self._displace(self._moving, coef)
        before = self.latents(t - self.exposure)["whisk_angle"]
        follicles = moved[:len(self.follicles)]

        canvas = np.zeros((N_KEYPOINTS, 2))
        upper, lower = eye.lids(3)
        for name, p in (("eye(back)", eye.back), ("eye(front)", eye.front), ("eye(top)", upper[1]),
                        ("eye(bottom)", lower[1])):
            canvas[_K[name]] = p
        for i, name in enumerate(_PAD_KEYPOINTS):
            canvas[_K[name]] = follicles[i]
        canvas[[_K[n] for n in _SNOUT]] = moved[len(self.follicles):-1]
        canvas[_K["mouth"]] = first[-1]
        canvas[_K["paw"]] = paw.palm if paw else self.to_canvas([self.paw_rest])[0]

        kp = np.zeros((N_KEYPOINTS, 3), np.float32)
        kp[:, :2] = canvas - self.margin + np.array(shift)
        x, y = kp[:, 0], kp[:, 1]
        visible = (x >= 0) & (x <= self.width - 1) & (y >= 0) & (y <= self.height - 1)
        if paw is None:
            visible[_K["paw"]] = False
        else:
            covered = paw.covers(canvas)
            covered[_K["paw"]] = False
            visible &= ~covered
        visible &= ~self.hidden_by_props(kp[:, :2])
        kp[:, 2] = visible
        return FacePose(kp, lat, shift, coef, eye, follicles, paw, lat["whisk_angle"] - before)

    def _eye(self, lat: dict[str, float]) -> Eye:
        s, a, b = self.scale, self.eye_a, self.eye_b
        axis = np.array([math.cos(math.radians(self.eye_tilt)), math.sin(math.radians(self.eye_tilt))])
        down = np.array([-axis[1], axis[0]])
        back, front, centre = self.to_canvas([self.eye_centre - a * axis, self.eye_centre + a * axis, self.eye_centre])
        closure = max(lat["blink"], self.squint)
        radius = 0.97 * b * s
        look = self.eye_centre + 0.22 * a * lat["gaze_x"] * axis + 0.3 * b * lat["gaze_y"] * down
        return Eye(
            back=tuple(back), front=tuple(front),
            upper=b * s * (1.0 - 1.25 * closure), lower=b * s * (1.0 - 0.75 * closure),
            ball=tuple(centre), radius=radius,
            pupil_at=tuple(self.to_canvas([look])[0]), pupil_r=lat["pupil"] * radius,
        )

    def _paw(self, lat: dict[str, float]) -> Paw | None:
        g, phase = lat["grooming"], lat["groom_phase"]
        if g <= 0.0 and not self.paw_rests_in_view:
            return None
        stroke = _rotation(-30.0) @ np.array([_PAW_STROKE_RADII[0] * math.cos(phase),
                                               _PAW_STROKE_RADII[1] * math.sin(phase)])
        palm = self.paw_rest + g * (self.paw_stroke_centre + stroke - self.paw_rest)
        angle = -35.0 + 15.0 * math.sin(phase)  # design degrees, the palm's long axis
        ax = np.array([math.cos(math.radians(angle)), math.sin(math.radians(angle))])
        ay = np.array([-ax[1], ax[0]])
        a, b = _PAW_PALM
        digits = [palm + 1.05 * (a * math.cos(math.radians(th)) * ax + b * math.sin(math.radians(th)) * ay)
                  for th in (-100.0, -62.0, -25.0, 12.0)]
        elbow = palm + np.array([-90.0, 260.0])
        pts = self.to_canvas([palm, elbow, *digits])
        s = self.scale
        return Paw(
            palm=tuple(pts[0]), palm_axes=(a * s, b * s), angle=angle + self.rotation,
            digits=tuple(tuple(p) for p in pts[2:]), digit_r=_PAW_DIGIT_R * s,
            elbow=tuple(pts[1]), forearm_r=_FOREARM_R * s,
        )


def _smooth(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)
