"""Draws a :class:`FacePose` as an infrared rig frame (grayscale uint8).

Real rig frames are lit by one infrared source a few centimetres from the snout: the snout and
the pale whisker pad glow, often burnt out, against a darker grey cheek; the fur is fine and
noisy with stray hairs on the silhouette; thin whiskers cross the pad dark and the background
bright; and the rig shows around the face (platform, head-post bar, lick spout, paws). A tracker
trained here must meet all of that, so each seed draws its own rig and animal within the ranges
real ones span: background from black to bright, the light's place, distance and falloff, fur
reflectance and contrast, how much of the snout saturates, gamma and gain, eye softness, lid
rim and highlights, whisker count, fan, length, shade and the camera's exposure (motion blur),
prop shades and sensor noise.

The expensive parts are drawn once per session on a canvas a little larger than the frame:
background and a platform behind the face, the lit head with its soft hairy edge, the pad's
follicles, nose, mouth and chin. Each frame copies the canvas, warps the snout (sniffing, the
pad moving with the whiskers, the jaw opening), draws what moves on its own (open mouth and
tongue, whiskers, eye, paw), cuts the frame out at the head's offset, draws the props in front
(they are fixed to the rig, not the head), applies the session's exposure curve and the current
illumination, and adds sensor noise.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from .face_behaviour import hash_unit
from .face_model import FaceModel, FacePose, Prop
from .face_texture import SensorNoise, dome_normals, fur, soft_noise

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


def _pick(rng: np.random.Generator, ranges: list[tuple[float, float, float]]) -> float:
    """A uniform number from one of ``ranges`` (probability, low, high), picked by probability."""
    r, acc = rng.random(), 0.0
    for p, lo, hi in ranges:
        acc += p
        if r < acc:
            return rng.uniform(lo, hi)
    return rng.uniform(*ranges[-1][1:])


class FaceRenderer:
    """The look of one session; ``render(pose, frame_id)`` draws a frame."""

    def __init__(self, model: FaceModel) -> None:
        self.model = model
        self._ch, self._cw = model.canvas_size[1], model.canvas_size[0]
        rng = np.random.default_rng([model.seed, 0x1A6E])
        self._look(rng)
        self._static = self._draw_static(rng)
        self._whisker_level = self._whisker_tone(rng)
        self._snout_setup()
        self._whiskers = self._whisker_set(rng)
        skin = 1.0 + 0.10 * soft_noise(rng, (2 * self._ch, 2 * self._cw), (12, 40, 160))
        self._paw_texture = np.clip(self._paw_level * skin, 0, 255).astype(np.uint8)
        self._props = [self._prop_layer(rng, p) for p in model.props if p.front]
        self._curve = 255.0 * (np.arange(256) / 255.0) ** self._gamma * self._gain
        self._noise = SensorNoise(rng, (model.height, model.width), self._noise_sigma)

    def _look(self, rng: np.random.Generator) -> None:
        self._bg_level = _pick(rng, [(0.35, 0.0, 15.0), (0.25, 15.0, 50.0), (0.25, 50.0, 120.0), (0.15, 120.0, 220.0)])
        self._bg_blobs = rng.uniform(0.0, 1.5) * max(self._bg_level, 30.0) * (rng.random() < 0.5)
        self._albedo = rng.uniform(0.4, 0.8)  # the fur's reflectance; the pad and snout's is higher
        self._pale = rng.uniform(0.4, 0.9)  # how much paler the short fur of the pad and snout is
        self._fur_contrast = rng.uniform(0.12, 0.3)
        # the snout's brightness (above 255 it burns out), kept apart from a bright background
        self._snout_level = (rng.uniform(200.0, 360.0) if self._bg_level < 110
                             else rng.uniform(0.35, 0.7) * self._bg_level)
        self._light = (rng.uniform(-40.0, 40.0), rng.uniform(500.0, 1500.0), rng.uniform(0.3, 1.2))
        self._ambient = rng.uniform(0.1, 0.4)
        self._sheen, self._shine = rng.uniform(0.0, 0.6), rng.uniform(5.0, 30.0)
        self._edge_soft = rng.uniform(0.4, 1.6)
        self._strays = int(rng.integers(60, 500))
        self._marks = rng.uniform(0.35, 0.7)
        self._gamma = rng.uniform(0.6, 1.4)
        self._gain = rng.uniform(0.8, 1.4)
        self._iris_level = int(rng.uniform(4.0, 22.0))
        self._pupil_level = int(rng.uniform(0.0, 0.6) * self._iris_level)
        self._eye_soft = rng.uniform(0.3, 1.3)
        self._highlight_level = int(rng.uniform(200.0, 255.0))
        self._highlights = [(rng.uniform(-0.45, -0.1), rng.uniform(-0.5, -0.15), rng.uniform(0.05, 0.12))]
        if rng.random() < 0.6:
            hx, hy, r = self._highlights[0]
            self._highlights.append((hx + rng.uniform(0.15, 0.35), hy + rng.uniform(-0.08, 0.08),
                                     rng.uniform(0.4, 0.8) * r))
        self._rim_level = int(rng.uniform(120.0, 255.0))
        self._rim_span = sorted(rng.integers(2, 22, 2) + np.array([0, 3]))
        self._rim_width = 1 + int(rng.random() < 0.4)
        self._paw_level = rng.uniform(150.0, 240.0)
        self._tongue_level = int(rng.uniform(120.0, 190.0))
        self._whisker_shade = _pick(rng, [(0.55, 0.0, 0.3), (0.25, 0.35, 0.6), (0.2, 1.0, 1.0)])
        self._whisker_strength = rng.uniform(0.6, 0.95)
        self._noise_sigma = rng.uniform(1.5, 8.0)

    # --- once per session ------------------------------------------------------------------------

    def _draw_static(self, rng: np.random.Generator) -> np.ndarray:
        m, s = self.model, self.model.scale
        h, w = self._ch, self._cw
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

        def glow(design_xy, sigma: float) -> np.ndarray:
            cx, cy = m.to_canvas([design_xy])[0]
            return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2.0 * (sigma * s) ** 2))

        background = self._bg_level * (1.0 + 0.3 * soft_noise(rng, (h, w), (3, 6, 12)))
        background *= 1.0 + rng.uniform(-0.4, 0.4) * (yy / h - 0.5) + rng.uniform(-0.4, 0.4) * (xx / w - 0.5)
        background += self._bg_blobs * np.maximum(soft_noise(rng, (h, w), (3, 5)) - 0.8, 0.0)
        for prop in m.props:
            if not prop.front:
                alpha, value = self._prop_look(rng, prop, (h, w), m.margin)
                background = background * (1.0 - alpha) + value * alpha

        outline = _closed_curve(m.to_canvas(m.outline))
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [_fixed(outline)], 255, _AA, _SHIFT)
        nx, ny, nz, height = dome_normals(mask, 70.0 * s)

        nose_xy = np.mean([m.points[n] for n in ("nose(top)", "nose(r)", "nose(tip)", "nose(bottom)")], axis=0)
        nose = m.to_canvas([nose_xy])[0]
        tip = m.to_canvas([m.points["nose(tip)"]])[0]
        # one point source in front of the snout, toward the camera
        turn, dist, lift = self._light
        toward = m.direction([(math.cos(math.radians(turn)), math.sin(math.radians(turn)))])[0]
        light = np.array([*(nose + dist * toward), lift * dist * s])
        lx, ly, lz = light[0] - xx, light[1] - yy, light[2] - height
        d2 = lx * lx + ly * ly + lz * lz
        inv = 1.0 / np.sqrt(d2)
        lambert = np.clip((nx * lx + ny * ly + nz * lz) * inv, 0.0, 1.0)
        hz = lz * inv + 1.0
        half = np.sqrt((lx * inv) ** 2 + (ly * inv) ** 2 + hz**2)
        spec = np.clip((nx * lx * inv + ny * ly * inv + nz * hz) / half, 0.0, 1.0) ** self._shine
        falloff = float(d2[int(nose[1]), int(nose[0])]) / d2

        flow = np.arctan2(yy - tip[1], xx - tip[0]) + 0.35 * soft_noise(rng, (h, w), (4, 8))
        texture = fur(rng, flow, s)
        rhinarium = glow(nose_xy, 24.0)
        pale = np.clip(glow(m.pad_centre, 55.0) + glow(nose_xy, 50.0), 0.0, 1.0)
        patches = soft_noise(rng, (h, w), (6, 12, 24, 48))
        albedo = self._albedo * (1.0 + self._pale * pale) * (
            1.0 + (self._fur_contrast * texture + 0.07 * patches) * (1.0 - 0.7 * rhinarium))
        shade = self._ambient + (1.0 - self._ambient) * lambert
        at_nose = self._albedo * (1.0 + self._pale) * float(shade[int(nose[1]), int(nose[0])])
        head = (self._snout_level / max(at_nose, 0.05)) * falloff * (
            albedo * shade + self._sheen * spec * (1.0 + 0.5 * texture))

        marks = np.zeros((h, w), np.float32)
        for p in m.to_canvas(m.follicles):
            cv2.circle(marks, tuple(_fixed(p)), int(1.7 * s * _ONE), 1.0, -1, _AA, _SHIFT)
        corner, front = m.mouth_line
        u = (front - corner) / np.hypot(*(front - corner))
        down = np.array([-u[1], u[0]])
        cv2.line(marks, tuple(_fixed(corner - 6 * s * u)), tuple(_fixed(front)), 1.0, max(1, round(2.5 * s)),
                 _AA, _SHIFT)
        bottom = m.to_canvas([m.points["nose(bottom)"]])[0]
        cv2.line(marks, tuple(_fixed(bottom)), tuple(_fixed(front)), 0.4, max(1, round(2.0 * s)), _AA, _SHIFT)
        cv2.line(marks, tuple(_fixed(corner + 5 * s * down)), tuple(_fixed(front + 4 * s * down)), -0.5,
                 max(1, round(2.0 * s)), _AA, _SHIFT)  # the lower lip catches the light
        nostril = m.to_canvas([0.55 * np.array(m.points["nose(r)"]) + 0.45 * np.array(m.points["nose(top)"])])[0]
        cv2.ellipse(marks, tuple(_fixed(nostril)), tuple(_fixed((7.0 * s, 2.6 * s))),
                    40.0 + m.rotation, 0, 360, 0.8, -1, _AA, _SHIFT)
        marks = cv2.GaussianBlur(marks, (0, 0), 0.5 + 0.4 * s)
        head *= 1.0 - self._marks * marks

        alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 0.4 + self._edge_soft * s)
        alpha = np.clip(alpha + 1.2 * alpha * (1.0 - alpha) * texture, 0.0, 1.0)  # a tufted edge
        alpha = np.maximum(alpha, self._stray_hairs(rng, outline, nx, ny, flow))
        img = background * (1.0 - alpha) + head * alpha
        return np.clip(img, 0, 255).astype(np.uint8)

    def _stray_hairs(self, rng: np.random.Generator, outline: np.ndarray, nx: np.ndarray, ny: np.ndarray,
                     flow: np.ndarray) -> np.ndarray:
        """Coverage (0..1) of single hairs sticking out of the silhouette, leaning with the fur."""
        h, w = self._ch, self._cw
        s = self.model.scale
        seg = np.hypot(*np.diff(outline, axis=0).T)
        at = np.interp(rng.uniform(0.0, seg.sum(), self._strays), np.concatenate([[0.0], np.cumsum(seg)]),
                       np.arange(len(outline)))
        i = np.clip(at.astype(int), 0, len(outline) - 2)
        base = outline[i] + (at - i)[:, None] * (outline[i + 1] - outline[i])
        inside = (base[:, 0] >= 1) & (base[:, 0] < w - 1) & (base[:, 1] >= 1) & (base[:, 1] < h - 1)
        base = base[inside]
        xi, yi = base[:, 0].astype(int), base[:, 1].astype(int)
        normal = np.stack([nx[yi, xi], ny[yi, xi]], axis=1)
        normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-6
        lean = np.stack([np.cos(flow[yi, xi]), np.sin(flow[yi, xi])], axis=1)
        d = normal + lean + rng.normal(0.0, 0.4, normal.shape)
        d /= np.linalg.norm(d, axis=1, keepdims=True) + 1e-6
        length = rng.uniform(3.0, 14.0, (len(base), 1)) * s
        bend = np.stack([-d[:, 1], d[:, 0]], axis=1) * rng.normal(0.0, 0.25, (len(base), 1)) * length
        hairs = np.zeros((h, w), np.uint8)
        for level in (110, 170, 230):
            pick = rng.random(len(base)) < 1.0 / 3.0
            p0, p1 = base[pick] - 2.0 * d[pick], base[pick] + 0.5 * (length[pick] * d[pick] + bend[pick])
            p2 = base[pick] + length[pick] * d[pick] + bend[pick]
            cv2.polylines(hairs, list(_fixed(np.stack([p0, p1, p2], axis=1))), False, level, 1, _AA, _SHIFT)
        return hairs.astype(np.float32) / 255.0

    def _prop_look(self, rng: np.random.Generator, prop: Prop, shape: tuple[int, int], offset: float
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Coverage and brightness of a prop on an image of ``shape`` whose origin is at frame
        point (-offset, -offset)."""
        s = self.model.scale
        outline = prop.outline + offset
        mask = np.zeros(shape, np.uint8)
        cv2.fillPoly(mask, [_fixed(outline)], 255, _AA, _SHIFT)
        yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
        if prop.kind == "platform":
            blur = (rng.uniform(3.0, 14.0) if prop.front else rng.uniform(1.0, 6.0)) * s
            level = rng.uniform(140.0, 320.0)
            value = level * (1.0 + 0.15 * soft_noise(rng, shape, (4, 10, 30)))
            edge_y = outline[:2, 1].mean()
            value *= 1.0 - 0.5 * np.clip((yy - edge_y) / (0.5 * shape[0]), 0.0, 1.0)
        else:  # a bar or a tube: a cylinder with a specular stripe along it
            # the ends of its axis: the bar's short sides; the spout's cap and its far end
            i, j, k, m = (0, 3, 1, 2) if prop.kind == "bar" else (0, 8, 9, 10)
            a, b = (outline[i] + outline[j]) / 2, (outline[k] + outline[m]) / 2
            half = np.hypot(*(outline[j] - outline[i])) / 2
            if prop.kind == "bar":
                base, blur = rng.uniform(15.0, 200.0), rng.uniform(0.5, 2.5) * s
            else:
                base, blur = rng.uniform(60.0, 200.0), rng.uniform(0.3, 1.2) * s
            u = (b - a) / np.hypot(*(b - a))
            across = ((xx - a[0]) * -u[1] + (yy - a[1]) * u[0]) / half
            stripe = rng.uniform(-0.6, 0.6)
            value = base * (1.0 - 0.5 * across**2) + rng.uniform(60.0, 255.0) * np.exp(-((across - stripe) / 0.18) ** 2)
        alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), blur)
        return alpha, value

    def _prop_layer(self, rng: np.random.Generator, prop: Prop) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
        """A prop in front of the face, cut to where it shows: (region, 1 - alpha, value * alpha)."""
        alpha, value = self._prop_look(rng, prop, (self.model.height, self.model.width), 0.0)
        rows, cols = np.flatnonzero(alpha.max(axis=1) > 0.004), np.flatnonzero(alpha.max(axis=0) > 0.004)
        if len(rows) == 0:
            return (slice(0, 0), slice(0, 0)), np.ones((0, 0), np.float32), np.zeros((0, 0), np.float32)
        roi = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
        return roi, 1.0 - alpha[roi], np.clip(value[roi], 0, 255) * alpha[roi]

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
        """Per whisker: its follicle, rest angle (design radians, 0 forward, pi/2 down), length,
        bend (radians along its length) and thickness at the root. Some follicles carry two."""
        m = self.model
        u = np.array([math.cos(math.radians(22)), math.sin(math.radians(22))])  # along the rows
        rel = m.follicles - m.pad_centre
        row = rel @ np.array([-u[1], u[0]]) / 12.0  # about -2 (top) .. 2 (bottom)
        back = -(rel @ u)
        n = len(rel)
        root = np.repeat(np.arange(n), 1 + (rng.random(n) < rng.uniform(0.0, 0.9)))
        root = root[rng.random(len(root)) < rng.uniform(0.7, 1.0)]
        k = len(root)
        fan = rng.uniform(30.0, 130.0)  # where the fan points at rest: forward .. down .. back
        return {
            "root": root,
            "angle": np.radians(fan + rng.uniform(10.0, 18.0) * row[root] - 0.3 * back[root] + rng.normal(0.0, 7.0, k)),
            "length": (rng.uniform(0.4, 1.0, k) * rng.uniform(220.0, 420.0) + 1.5 * back[root]),
            "bend": rng.uniform(-0.1, 0.5, k),
            "thick": 1 + (rng.random(k) < rng.uniform(0.0, 0.25) * m.scale),
        }

    def _whisker_tone(self, rng: np.random.Generator) -> float:
        """The whiskers' shade: a fraction of the pad's brightness (dark on the pad; a mid shade
        also shows bright on a dark background), or bright where the pad is not."""
        x, y = np.round(self.model.to_canvas([self.model.pad_centre])[0]).astype(int)
        pad = float(self._static[y - 3:y + 4, x - 3:x + 4].mean())
        if self._whisker_shade >= 1.0 and pad < 150.0:
            return rng.uniform(max(pad + 70.0, 170.0), 255.0)
        return min(self._whisker_shade, 0.6) * pad

    def _shafts(self, pose: FacePose, whisk: float) -> np.ndarray:
        """Whisker shafts (n, 8, 2) in canvas pixels at protraction ``whisk`` degrees."""
        m, wh = self.model, self._whiskers
        shorten = 1.0 - 0.3 * min(max((whisk + 10.0) / 50.0, 0.0), 1.0)  # protracted whiskers point at the camera
        f = np.linspace(0.0, 1.0, 8)
        theta = (wh["angle"] + math.radians(m.rotation - 0.6 * whisk))[:, None] + wh["bend"][:, None] * f
        step = (m.scale * shorten / 7.0) * wh["length"][:, None]
        d = np.stack([np.cos(theta) * step, np.sin(theta) * step], axis=-1)
        along = np.concatenate([np.zeros_like(d[:, :1]), np.cumsum(d[:, :-1], axis=1)], axis=1)
        return pose.follicles[wh["root"]][:, None, :] + along

    def whisker_paths(self, pose: FacePose) -> np.ndarray:
        """The whiskers (n, 8, 2) of ``pose`` in frame pixels, root first."""
        return self._shafts(pose, pose.latents["whisk_angle"]) - self.model.margin + np.array(pose.shift)

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
        for roi, keep, add in self._props:
            img[roi] = cv2.add(cv2.multiply(img[roi], keep, dtype=cv2.CV_32F), add, dtype=cv2.CV_8U)
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
        """Thin shafts that fade toward the tip, blended toward the session's whisker shade, so a
        mid shade shows dark on the pad and bright on a dark background. A fast sweep during
        the exposure is drawn as the average of several positions (motion blur)."""
        wh = self._whiskers
        whisk, sweep = pose.latents["whisk_angle"], pose.whisk_sweep
        n = 1 if abs(sweep) < 1.0 else min(4, 1 + int(abs(sweep) / 1.5))
        shafts = [self._shafts(pose, whisk - sweep * j / max(n - 1, 1)) for j in range(n)]
        x0, y0 = np.maximum(np.floor(np.min([p.min(axis=(0, 1)) for p in shafts], axis=0)).astype(int) - 2, 0)
        x1, y1 = np.minimum(np.ceil(np.max([p.max(axis=(0, 1)) for p in shafts], axis=0)).astype(int) + 3,
                            (self._cw, self._ch))
        if x1 <= x0 or y1 <= y0:
            return
        roi = canvas[y0:y1, x0:x1]
        cover = np.zeros(roi.shape, np.float32)
        for p in shafts:
            mask = np.zeros(roi.shape, np.uint8)
            q = _fixed(p - np.array([x0, y0]))
            cv2.polylines(mask, list(q[:, 5:]), False, 140, 1, _AA, _SHIFT)
            cv2.polylines(mask, list(q[:, 3:6]), False, 210, 1, _AA, _SHIFT)
            for thick in np.unique(wh["thick"]):
                cv2.polylines(mask, list(q[wh["thick"] == thick, :4]), False, 255, int(thick), _AA, _SHIFT)
            cover += mask
        a = cover * np.float32(self._whisker_strength / (255.0 * n))
        roi[:] = roi + a * (np.float32(self._whisker_level) - roi)

    def _draw_eye(self, canvas: np.ndarray, pose: FacePose) -> None:
        """A dark, soft-edged eye with one or two highlights, a dark upper lid and a wet, bright
        lower rim."""
        eye, s = pose.eye, self.model.scale
        upper, lower = eye.lids(24)
        edge = eye.radius + 8.0
        x0 = int(max(min(eye.back[0], eye.front[0]) - 8.0, 0))
        x1 = int(min(max(eye.back[0], eye.front[0]) + 9.0, self._cw))
        y0 = int(max(eye.ball[1] - edge - 0.5 * abs(eye.front[1] - eye.back[1]), 0))
        y1 = int(min(eye.ball[1] + edge + 0.5 * abs(eye.front[1] - eye.back[1]) + 1, self._ch))
        origin = np.array([x0, y0])
        roi = canvas[y0:y1, x0:x1]
        mask = np.zeros(roi.shape, np.uint8)
        cv2.fillPoly(mask, [_fixed(np.vstack([upper, lower[::-1]]) - origin)], 255, _AA, _SHIFT)
        ball = np.full(roi.shape, self._iris_level, np.uint8)
        pupil = tuple(_fixed(np.array(eye.pupil_at) - origin))
        cv2.circle(ball, pupil, int(eye.pupil_r * _ONE), self._pupil_level, -1, _AA, _SHIFT)
        for hx, hy, r in self._highlights:
            at = np.array(eye.ball) - origin + eye.radius * np.array([hx, hy])
            cv2.circle(ball, tuple(_fixed(at)), max(int(r * eye.radius * _ONE), _ONE), self._highlight_level, -1,
                       _AA, _SHIFT)
        a = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), self._eye_soft * s + 0.3)
        shadow = cv2.GaussianBlur(a, (0, 0), 3.0 * s + 0.5)
        roi[:] = (roi * (1.0 - a) * (1.0 - 0.4 * shadow) + ball * a).astype(np.uint8)
        cv2.polylines(canvas, [_fixed(upper)], False, self._iris_level + 8, max(1, round(1.5 * s)), _AA, _SHIFT)
        if eye.upper + eye.lower > 4.0 * s:
            i, j = self._rim_span
            rim = lower[i:j] + np.array([0.0, -0.8 * s])
            cv2.polylines(canvas, [_fixed(rim)], False, self._rim_level, self._rim_width, _AA, _SHIFT)

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
        a_hand = cv2.GaussianBlur(hand.astype(np.float32) / 255.0, (0, 0), 0.4 + 0.4 * s)
        shade = 0.75 + 0.25 * cv2.GaussianBlur(a_hand, (0, 0), 4.0 * s + 0.5)
        out = roi * (1.0 - a_arm) + (0.5 * skin) * a_arm
        out = out * (1.0 - a_hand) + skin * shade * a_hand
        roi[:] = np.clip(out, 0, 255).astype(np.uint8)
