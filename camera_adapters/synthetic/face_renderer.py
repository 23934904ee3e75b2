"""Draws a :class:`FacePose` as an infrared rig frame (grayscale uint8).

The expensive parts are drawn once per session on a canvas a little larger than the frame:
background, the head's silhouette, fur, shading, the bright whisker pad with its follicles,
the nose and the closed mouth. Each frame copies the canvas, warps the snout (sniffing, the pad
moving with the whiskers, the jaw opening), draws what moves on its own (open mouth and
tongue, eye, whiskers, paw), cuts the frame out at the head's offset, applies the session's
contrast and the current illumination, and adds sensor noise.

Each seed also draws its own look: background and fur levels, contrast, gamma, glow of the
pad and nose, light direction, whisker count and shade, eye and paw brightness, noise level.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from .face_behaviour import hash_unit
from .face_model import FaceModel, FacePose
from .face_texture import SensorNoise, hair, soft_noise

_SHIFT = 4  # cv2 fixed-point bits for sub-pixel drawing
_ONE = 1 << _SHIFT
_AA = cv2.LINE_AA


def _fixed(points) -> np.ndarray:
    """Points (n, 2) in cv2's fixed-point coordinates (``shift=_SHIFT``)."""
    return np.round(np.asarray(points, np.float64) * _ONE).astype(np.int32)


def _closed_curve(points: np.ndarray, steps: int = 8) -> np.ndarray:
    """A closed Catmull-Rom spline through ``points`` (n, 2)."""
    p = np.asarray(points, np.float64)
    u = np.arange(steps)[:, None] / steps
    c = 0.5 * np.hstack([-u**3 + 2 * u**2 - u, 3 * u**3 - 5 * u**2 + 2, -3 * u**3 + 4 * u**2 + u, u**3 - u**2])
    out = [c @ np.stack([p[(i + j) % len(p)] for j in (-1, 0, 1, 2)]) for i in range(len(p))]
    return np.concatenate(out)


class FaceRenderer:
    """The look of one session; ``render(pose, frame_id)`` draws a frame."""

    def __init__(self, model: FaceModel) -> None:
        self.model = model
        rng = np.random.default_rng([model.seed, 0x1A6E])
        self._look(rng)
        self._static = self._draw_static(rng)
        self._snout_setup()
        self._whiskers = self._whisker_set(rng)
        skin = 1.0 + 0.10 * soft_noise(rng, (2 * self._ch, 2 * self._cw), (12, 40, 160))
        self._paw_texture = np.clip(self._paw_level * skin, 0, 255).astype(np.uint8)
        self._curve = 255.0 * (np.arange(256) / 255.0) ** self._gamma * self._gain
        self._noise = SensorNoise(rng, (model.height, model.width), self._noise_sigma)

    def _look(self, rng: np.random.Generator) -> None:
        self._bg_level = rng.uniform(6.0, 40.0)
        self._fur_level = rng.uniform(65.0, 110.0)
        self._fur_contrast = rng.uniform(0.10, 0.20)
        self._glow = rng.uniform(60.0, 110.0)
        self._pad_glow = rng.uniform(45.0, 80.0)
        self._body_glow = rng.uniform(0.0, 160.0)
        self._light_angle = rng.uniform(0.0, 2.0 * math.pi)
        self._light_slope = rng.uniform(0.0, 0.35)
        self._gamma = rng.uniform(0.8, 1.25)
        self._gain = rng.uniform(0.9, 1.15)
        self._iris_level = int(rng.uniform(9.0, 22.0))
        self._pupil_level = int(rng.uniform(2.0, 8.0))
        self._highlights = [(rng.uniform(-0.45, -0.15), rng.uniform(-0.5, -0.2), rng.uniform(0.07, 0.11))]
        if rng.random() < 0.7:
            hx, hy, r = self._highlights[0]
            self._highlights.append((hx + rng.uniform(0.15, 0.3), hy + rng.uniform(-0.05, 0.05), 0.6 * r))
        self._paw_level = rng.uniform(170.0, 235.0)
        self._tongue_level = int(rng.uniform(120.0, 190.0))
        self._whisker_shade = rng.uniform(110.0, 170.0)
        self._noise_sigma = rng.uniform(2.5, 7.0)
        self._ch, self._cw = self.model.canvas_size[1], self.model.canvas_size[0]

    # --- once per session ------------------------------------------------------------------------

    def _draw_static(self, rng: np.random.Generator) -> np.ndarray:
        m, s = self.model, self.model.scale
        h, w = self._ch, self._cw
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

        def glow(design_xy, sigma: float) -> np.ndarray:
            cx, cy = m.to_canvas([design_xy])[0]
            return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2.0 * (sigma * s) ** 2))

        light = 1.0 + self._light_slope * (
            (math.cos(self._light_angle) * (xx - w / 2) + math.sin(self._light_angle) * (yy - h / 2)) / max(w, h))
        background = self._bg_level * (1.0 + 0.35 * soft_noise(rng, (h, w), (3, 6, 12))) * light
        background += 0.25 * self._bg_level * (yy / h)

        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [_fixed(_closed_curve(m.to_canvas(m.outline)))], 255, _AA, _SHIFT)
        alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 0.6 + 1.0 * s)

        nose_xy = np.mean([m.points[n] for n in ("nose(top)", "nose(r)", "nose(tip)", "nose(bottom)")], axis=0)
        tip = m.to_canvas([m.points["nose(tip)"]])[0]
        flow = np.arctan2(yy - tip[1], xx - tip[0]) + 0.35 * soft_noise(rng, (h, w), (4, 8))
        strands = np.tanh(0.6 * (hair(rng, flow, 26.0 * s + 3.0, 0.55, sparse=1.0)
                                 - hair(rng, flow, 22.0 * s + 3.0, 0.55, sparse=1.2)))
        haze = hair(rng, flow + 0.15 * soft_noise(rng, (h, w), (6,)), 20.0 * s + 3.0, 1.2 * s + 0.3)
        patches = soft_noise(rng, (h, w), (6, 12, 24, 48))
        rhinarium = glow(nose_xy, 26.0)
        texture = (self._fur_contrast * (strands + 0.6 * haze) + 0.07 * patches) * (1.0 - 0.7 * rhinarium)

        head = self._fur_level * light * (1.0 + texture)
        head += self._glow * glow(0.55 * nose_xy + 0.45 * m.pad_centre, 110.0)
        head += self._pad_glow * glow(m.pad_centre, 45.0) + 0.6 * self._pad_glow * rhinarium
        head += self._body_glow * glow((40.0, 560.0), 170.0)

        marks = np.zeros((h, w), np.float32)
        for p in m.to_canvas(m.follicles):
            cv2.circle(marks, tuple(_fixed(p)), int(1.7 * s * _ONE), 1.0, -1, _AA, _SHIFT)
        corner, front = m.mouth_line
        cv2.line(marks, tuple(_fixed(corner)), tuple(_fixed(front)), 0.7, max(1, round(1.5 * s)), _AA, _SHIFT)
        nostril = m.to_canvas([0.55 * np.array(m.points["nose(r)"]) + 0.45 * np.array(m.points["nose(top)"])])[0]
        cv2.ellipse(marks, tuple(_fixed(nostril)), tuple(_fixed((7.0 * s, 2.6 * s))),
                    40.0 + m.rotation, 0, 360, 0.8, -1, _AA, _SHIFT)
        marks = cv2.GaussianBlur(marks, (0, 0), 0.5 + 0.3 * s)
        head *= 1.0 - 0.55 * marks

        img = background * (1.0 - alpha) + head * alpha
        return np.clip(img, 0, 255).astype(np.uint8)

    def _snout_setup(self) -> None:
        """The snout warp's regions and its deformation basis there."""
        self._snout = []
        for x0, y0, x1, y1 in self.model.snout_support():
            x0, y0 = max(int(x0) - 2, 0), max(int(y0) - 2, 0)
            x1, y1 = min(int(x1) + 3, self._cw), min(int(y1) + 3, self._ch)
            if x1 <= x0 or y1 <= y0:
                continue
            yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
            basis = self.model.snout_basis(xx, yy).reshape(3, -1)
            grid = np.dstack([xx - np.float32(x0), yy - np.float32(y0)])
            self._snout.append(((slice(y0, y1), slice(x0, x1)), grid, basis))

    def _whisker_set(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Per follicle: rest angle (design radians), length, bend (radians), thickness, shade."""
        m = self.model
        u = np.array([math.cos(math.radians(22)), math.sin(math.radians(22))])  # along the rows
        rel = m.follicles - m.pad_centre
        row = rel @ np.array([-u[1], u[0]]) / 12.0  # about -2 (top) .. 2 (bottom)
        back = -(rel @ u)
        n = len(rel)
        shades = self._whisker_shade + rng.normal(0.0, 18.0, n)
        return {
            "angle": np.radians(165.0 - 9.0 * row + rng.normal(0.0, 4.0, n)),
            "length": (rng.uniform(110.0, 260.0, n) + 2.0 * back) * (1.0 + 0.1 * row),
            "bend": rng.uniform(-0.05, 0.3, n),
            "thick": 1 + (rng.random(n) < 0.5 * m.scale),
            "shade": np.clip(np.round(shades / 20.0) * 20.0, 60, 220).astype(int),  # a few levels, drawn together
        }

    # --- every frame -----------------------------------------------------------------------------

    def render(self, pose: FacePose, frame_id: int) -> np.ndarray:
        m = self.model
        canvas = self._static.copy()
        self._warp_snout(canvas, pose)
        self._draw_mouth(canvas, pose)
        self._draw_whiskers(canvas, pose)
        self._draw_eye(canvas, pose)
        if pose.paw is not None:
            self._draw_paw(canvas, pose)
        sx, sy = pose.shift
        g = m.margin
        img = canvas[g - sy:g - sy + m.height, g - sx:g - sx + m.width]
        lut = np.clip(self._curve * pose.latents["illumination"], 0, 255).astype(np.uint8)
        img = cv2.LUT(img, lut)
        return self._noise.apply(img, hash_unit(m.seed, 0x5E, frame_id))

    def _warp_snout(self, canvas: np.ndarray, pose: FacePose) -> None:
        """Each region is pulled from the static canvas by the whole deformation, so regions
        that overlap agree."""
        for roi, grid, basis in self._snout:
            source = grid - (pose.snout @ basis).reshape(grid.shape)
            canvas[roi] = cv2.remap(self._static[roi], source, None, cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE)

    def _draw_mouth(self, canvas: np.ndarray, pose: FacePose) -> None:
        """The open mouth: dark between the upper lip and the lowered jaw, and the tongue."""
        lick = pose.latents["lick"]
        if lick < 0.02:
            return
        m, s = self.model, self.model.scale
        corner, front = m.mouth_line
        u = (front - corner) / np.hypot(*(front - corner))
        down = np.array([-u[1], u[0]])
        line = corner + np.linspace(-10.0 * s, np.hypot(*(front - corner)), 8)[:, None] * u
        below = line + 2.5 * s * down
        basis = m.snout_basis(below[:, 0], below[:, 1])
        lower = below + np.tensordot(pose.snout, basis, axes=1) - 2.5 * s * down
        cv2.fillPoly(canvas, [_fixed(np.vstack([line, lower[::-1]]))], 18, _AA, _SHIFT)
        if lick > 0.3:
            gap = lower[-1] - line[-1]
            centre = line[-1] + 0.5 * gap + (lick - 0.3) * 12.0 * s * u
            axes = ((5.0 + 8.0 * lick) * s, 0.45 * np.hypot(*gap))
            angle = math.degrees(math.atan2(gap[1], gap[0])) - 90.0
            cv2.ellipse(canvas, tuple(_fixed(centre)), tuple(_fixed(axes)), angle, 0, 360, self._tongue_level,
                        -1, _AA, _SHIFT)

    def _draw_whiskers(self, canvas: np.ndarray, pose: FacePose) -> None:
        m, wh = self.model, self._whiskers
        whisk = pose.latents["whisk_angle"]
        shorten = 1.0 - 0.35 * min(max((whisk + 10.0) / 50.0, 0.0), 1.0)
        f = np.linspace(0.0, 1.0, 8)
        theta = (wh["angle"] + math.radians(m.rotation - 0.35 * whisk))[:, None] - wh["bend"][:, None] * f
        step = (m.scale * shorten / 7.0) * wh["length"][:, None]
        d = np.stack([np.cos(theta) * step, np.sin(theta) * step], axis=-1)
        along = np.concatenate([np.zeros_like(d[:, :1]), np.cumsum(d[:, :-1], axis=1)], axis=1)
        shafts = _fixed(pose.follicles[:, None, :] + along)
        for shade in np.unique(wh["shade"]):
            pick = wh["shade"] == shade
            for thick in np.unique(wh["thick"][pick]):
                group = shafts[pick & (wh["thick"] == thick)]
                cv2.polylines(canvas, list(group[:, :4]), False, int(shade), int(thick), _AA, _SHIFT)
            cv2.polylines(canvas, list(shafts[pick, 3:]), False, int(shade), 1, _AA, _SHIFT)

    def _draw_eye(self, canvas: np.ndarray, pose: FacePose) -> None:
        eye, s = pose.eye, self.model.scale
        upper, lower = eye.lids(24)
        edge = eye.radius + 6.0
        x0 = int(max(min(eye.back[0], eye.front[0]) - 6.0, 0))
        x1 = int(min(max(eye.back[0], eye.front[0]) + 7.0, self._cw))
        y0 = int(max(eye.ball[1] - edge - 0.5 * abs(eye.front[1] - eye.back[1]), 0))
        y1 = int(min(eye.ball[1] + edge + 0.5 * abs(eye.front[1] - eye.back[1]) + 1, self._ch))
        origin = np.array([x0, y0])
        roi = canvas[y0:y1, x0:x1]
        mask = np.zeros(roi.shape, np.uint8)
        cv2.fillPoly(mask, [_fixed(np.vstack([upper, lower[::-1]]) - origin)], 255, _AA, _SHIFT)
        ball = np.full(roi.shape, self._iris_level, np.uint8)
        pupil = tuple(_fixed(np.array(eye.pupil_at) - origin))
        cv2.circle(ball, pupil, int((eye.pupil_r + 1.5 * s) * _ONE), (self._iris_level + self._pupil_level) // 2,
                   -1, _AA, _SHIFT)
        cv2.circle(ball, pupil, int(eye.pupil_r * _ONE), self._pupil_level, -1, _AA, _SHIFT)
        for hx, hy, r in self._highlights:
            at = np.array(eye.ball) - origin + eye.radius * np.array([hx, hy])
            cv2.circle(ball, tuple(_fixed(at)), max(int(r * eye.radius * _ONE), _ONE), 248, -1, _AA, _SHIFT)
        a = mask.astype(np.float32) / 255.0
        shadow = cv2.GaussianBlur(a, (0, 0), 3.0 * s + 0.5)
        roi[:] = (roi * (1.0 - a) * (1.0 - 0.4 * shadow) + ball * a).astype(np.uint8)
        cv2.polylines(canvas, [_fixed(upper)], False, 22, max(1, round(1.5 * s)), _AA, _SHIFT)
        if eye.upper + eye.lower > 4.0 * s:
            rim = lower[5:19] + np.array([0.0, -1.2 * s])
            cv2.polylines(canvas, [_fixed(rim)], False, 175, 1, _AA, _SHIFT)

    def _draw_paw(self, canvas: np.ndarray, pose: FacePose) -> None:
        """A furred forearm from below the frame and a bright, bare hand on it."""
        paw, s = pose.paw, self.model.scale
        pts = np.array([paw.palm, paw.elbow, *paw.digits])
        reach = max(paw.palm_axes) + paw.digit_r + paw.forearm_r + 2.0
        x0, y0 = np.maximum(np.floor(pts.min(axis=0) - reach).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(pts.max(axis=0) + reach).astype(int), (self._cw, self._ch))
        if x1 <= x0 or y1 <= y0:
            return
        origin = np.array([x0, y0])
        roi = canvas[y0:y1, x0:x1]
        arm, hand = np.zeros(roi.shape, np.uint8), np.zeros(roi.shape, np.uint8)
        cv2.line(arm, tuple(_fixed(np.array(paw.palm) - origin)), tuple(_fixed(np.array(paw.elbow) - origin)),
                 255, max(1, round(2 * paw.forearm_r)), _AA, _SHIFT)
        cv2.ellipse(hand, tuple(_fixed(np.array(paw.palm) - origin)), tuple(_fixed(paw.palm_axes)),
                    paw.angle, 0, 360, 255, -1, _AA, _SHIFT)
        for d in paw.digits:
            cv2.circle(hand, tuple(_fixed(np.array(d) - origin)), int(paw.digit_r * _ONE), 255, -1, _AA, _SHIFT)
        tx, ty = np.round(np.array([self._cw, self._ch]) + origin - np.array(paw.palm)).astype(int)
        tx = int(np.clip(tx, 0, 2 * self._cw - roi.shape[1]))
        ty = int(np.clip(ty, 0, 2 * self._ch - roi.shape[0]))
        skin = self._paw_texture[ty:ty + roi.shape[0], tx:tx + roi.shape[1]].astype(np.float32)
        a_arm = cv2.GaussianBlur(arm.astype(np.float32) / 255.0, (0, 0), 1.5 * s + 0.5)
        a_hand = hand.astype(np.float32) / 255.0
        shade = 0.75 + 0.25 * cv2.GaussianBlur(a_hand, (0, 0), 4.0 * s + 0.5)
        out = roi * (1.0 - a_arm) + (0.5 * skin) * a_arm
        out = out * (1.0 - a_hand) + skin * shade * a_hand
        roi[:] = np.clip(out, 0, 255).astype(np.uint8)
        for d in paw.digits:
            cv2.circle(canvas, tuple(_fixed(d)), int(paw.digit_r * _ONE), int(0.6 * self._paw_level), 1, _AA, _SHIFT)
