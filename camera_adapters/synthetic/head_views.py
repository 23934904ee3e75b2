"""A mouse head in 3D, seen by cameras at the angles rigs use: training frames the 2D face
cannot give.

The synthetic camera's face is drawn in profile, and a homography of a profile (rig_augment's
``view``) only shears it: it never shows a snout that points toward the camera, the far side's
whisker pad, or a face seen from below the chin. Rigs film faces from the side, obliquely from the
front and from below-front, so this module builds each animal from ellipsoids (cranium, cheek,
muzzle, the two whisker pads, the nose, the lower jaw), puts Facemap's keypoints on its surface
and renders it from a random camera: perspective, a z-buffer (a keypoint behind the head is not
in view), a point infrared light near the camera (bright snout and pad, darker cheek, wet
highlights on the nose and the eye), fine fur that follows the hair, and thin whiskers in 3D
rows that fan out from both pads.

Head coordinates are millimetres: x forward (toward the nose), y up, z out of the animal's
labelled side (the side a profile camera sees). Bodypart names are anatomical, so the labelled
side's eye, pad and mouth corner carry the names; a mirrored frame (rig_augment) stands for a
camera on the other side.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from facestream.engines.bodyparts import BODYPARTS, N_KEYPOINTS
from .face_texture import fur, soft_noise

_K = {name: i for i, name in enumerate(BODYPARTS)}
_RENDER_SCALE = 2  # the z-buffer is drawn at half the frame's size; shading and fur at full size
_SPACING_PX = 1.3  # surface samples this far apart in the z-buffer's pixels, each splat 2x2
_DEPTH_SLACK_MM = 0.3  # a line of sight may graze the surface this close to its keypoint
_GRAZE_MM = 0.6  # and cut this far through the head elsewhere

_PARTS = ("cranium", "cheek", "muzzle", "pad", "pad_far", "nose", "jaw")
_EYE = len(_PARTS)  # part index of the eye's surface


@dataclass(frozen=True)
class Ellipsoid:
    centre: np.ndarray  # (3,)
    axes: np.ndarray  # (3,) semi-axes along the rotated x, y, z
    rotation: np.ndarray  # (3, 3) columns: the ellipsoid's axes in head coordinates

    def inside(self, points: np.ndarray) -> np.ndarray:
        local = (points - self.centre) @ self.rotation / self.axes
        return (local**2).sum(-1) < 1.0

    def surface(self, direction) -> np.ndarray:
        """The surface point in ``direction`` (its own, unscaled axes) from the centre."""
        d = np.asarray(direction, np.float64)
        d = d / np.linalg.norm(d)
        return self.centre + self.rotation @ (self.axes * d)

    def samples(self, spacing: float) -> tuple[np.ndarray, np.ndarray]:
        """Surface points about ``spacing`` mm apart and their outward normals."""
        big = float(self.axes.max())
        n_t = max(8, int(math.ceil(math.pi * big / spacing)))
        t = (np.arange(n_t) + 0.5) / n_t * math.pi
        points, normals = [], []
        for theta in t:  # rings of latitude, as many points as each ring's length needs
            ring = 2 * math.pi * big * math.sin(theta)
            n_p = max(6, int(math.ceil(ring / spacing)))
            phi = (np.arange(n_p) + 0.5 * (len(points) % 2)) / n_p * 2 * math.pi
            unit = np.stack([np.full(n_p, math.cos(theta)), np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi)], 1)
            points.append(unit * self.axes)
            normals.append(unit / self.axes)
        p = np.concatenate(points) @ self.rotation.T + self.centre
        n = np.concatenate(normals) @ self.rotation.T
        return p, n / np.linalg.norm(n, axis=1, keepdims=True)


def _pitch(deg: float) -> np.ndarray:
    """Rotation about z (nose up for positive degrees)."""
    r = math.radians(deg)
    return np.array([[math.cos(r), -math.sin(r), 0.0], [math.sin(r), math.cos(r), 0.0], [0.0, 0.0, 1.0]])


def _ellipsoid(centre, axes, pitch: float = 0.0) -> Ellipsoid:
    return Ellipsoid(np.array(centre, np.float64), np.array(axes, np.float64), _pitch(pitch))


class Head:
    """One animal: its shape, eye, whiskers and fur, drawn from ``seed``."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng([seed, 0x3D])
        j = lambda s: 1 + rng.uniform(-s, s)  # noqa: E731 (a jitter factor)
        snout = j(0.12)  # a longer or shorter muzzle
        self.parts = {
            "cranium": _ellipsoid((-5.5, 1.0, 0), (11.5 * j(0.06), 6.5 * j(0.08), 7.3 * j(0.06))),
            "cheek": _ellipsoid((-8.5, -4.0, 0), (11.0, 7.5 * j(0.1), 8.2 * j(0.06))),
            "muzzle": _ellipsoid((5.5 * snout, -1.4, 0), (9.2 * snout, 4.0 * j(0.08), 4.3 * j(0.08)), -8 * j(0.5)),
            "nose": _ellipsoid((14.0 * snout, -2.6, 0), (1.7 * j(0.15), 1.6 * j(0.15), 2.0 * j(0.12)), -10),
        }
        pad = (8.0 * snout, -2.5 * j(0.15), 2.1 * j(0.1))
        pad_axes = (4.4 * j(0.12), 3.2 * j(0.12), 2.4 * j(0.12))
        self.parts["pad"] = _ellipsoid(pad, pad_axes, -10)
        self.parts["pad_far"] = _ellipsoid((pad[0], pad[1], -pad[2]), pad_axes, -10)
        self.jaw_open = 0.0
        self._jaw_axes = (6.8 * snout, 2.0 * j(0.15), 3.2 * j(0.1))
        self._jaw_centre = (5.2 * snout, -5.0 * j(0.06), 0)
        self._hinge = np.array([-1.0, -4.5, 0.0])
        # fur reflectance: a darker head and cheek, paler toward the nose, palest on the pads
        self.albedo_head, self.albedo_snout, self.albedo_pad = 0.42 * j(0.25), 0.62 * j(0.2), 0.8 * j(0.15)
        self.pale_from = rng.uniform(0.0, 6.0)  # mm: where the snout's paler fur starts
        # the eye: an ellipse on the cranium, tilted front-down, bulging a little
        cranium = self.parts["cranium"]
        self.eye_centre = cranium.surface((0.55 * j(0.2), 0.35 * j(0.3), 0.76))
        normal = (self.eye_centre - cranium.centre) / cranium.axes**2
        normal /= np.linalg.norm(normal)
        tilt = math.radians(rng.uniform(10, 28))
        forward = np.array([math.cos(tilt), -math.sin(tilt), 0.0])
        self.eye_t1 = forward - normal * (forward @ normal)
        self.eye_t1 /= np.linalg.norm(self.eye_t1)
        self.eye_t2 = np.cross(normal, self.eye_t1)
        if self.eye_t2[1] < 0:
            self.eye_t2 = -self.eye_t2
        self.eye_axes = (1.9 * j(0.12), 1.9 * j(0.12) * rng.uniform(0.72, 0.92))
        self.eye_open = rng.uniform(0.55, 1.0) if rng.random() < 0.25 else 1.0
        # whiskers: rows of follicles on each pad, arcs sweeping back and out
        self.whiskers = self._whisker_layout(rng)
        self.fur_contrast = rng.uniform(0.1, 0.35)

    def _whisker_layout(self, rng: np.random.Generator) -> list[tuple[float, float, float, float]]:
        """(u, v, length mm, bend) per follicle: u back-front and v bottom-top on the pad."""
        out = []
        rows = rng.integers(4, 6)
        for r in range(rows):
            v = -0.65 + 1.3 * r / (rows - 1)
            cols = rng.integers(4, 8)
            for c in range(cols):
                u = -0.85 + 1.3 * c / (cols - 1) + rng.uniform(-0.05, 0.05)
                length = (28 - 16 * (u + 0.85) / 1.3) * rng.uniform(0.6, 1.1)
                out.append((u, v + rng.uniform(-0.05, 0.05), length, rng.uniform(0.2, 0.6)))
        return out

    def jaw(self) -> Ellipsoid:
        """The lower jaw, turned down about its hinge by ``jaw_open`` degrees."""
        turn = _pitch(-self.jaw_open)
        centre = self._hinge + turn @ (np.array(self._jaw_centre) - self._hinge)
        return Ellipsoid(centre, np.array(self._jaw_axes), turn @ _pitch(-4))

    def ellipsoids(self) -> list[Ellipsoid]:
        return [self.parts[p] for p in _PARTS[:-1]] + [self.jaw()]

    def keypoints(self) -> np.ndarray:
        """(15, 3) head coordinates of Facemap's keypoints on this head's surface; the paw row is NaN."""
        kp = np.full((N_KEYPOINTS, 3), np.nan)
        cranium = self.parts["cranium"]
        a, b = self.eye_axes
        b_open = b * self.eye_open
        for name, offset in (("eye(front)", a * self.eye_t1), ("eye(back)", -a * self.eye_t1),
                             ("eye(top)", b_open * self.eye_t2), ("eye(bottom)", -b * self.eye_t2)):
            kp[_K[name]] = _onto(cranium, self.eye_centre + offset)
        nose = self.parts["nose"]
        kp[_K["nose(top)"]] = nose.surface((0.25, 1.0, 0.25))
        kp[_K["nose(r)"]] = nose.surface((1.0, 0.05, 0.3))
        kp[_K["nose(tip)"]] = nose.surface((0.75, -0.65, 0.25))
        kp[_K["nose(bottom)"]] = nose.surface((-0.3, -1.0, 0.35))
        pad = self.parts["pad"]
        for name, (u, v) in (("whisker(I)", (-0.2, 0.45)), ("whisker(II)", (-0.55, 0.1)), ("whisker(III)", (-0.2, -0.3))):
            kp[_K[name]] = pad.surface((u, v, math.sqrt(max(0.05, 1 - u * u - v * v))))
        kp[_K["nosebridge"]] = self.parts["muzzle"].surface((0.45, 1.0, 0.0))
        jaw = self.jaw()
        kp[_K["lowerlip"]] = jaw.surface((0.95, -0.3, 0.0))
        kp[_K["mouth"]] = jaw.surface((0.75, 0.4, 0.5))  # the corner, under the pad's front
        return _outermost(kp, self.ellipsoids())

    def whisker_curves(self, protraction: float) -> list[tuple[np.ndarray, bool]]:
        """3D polylines of every whisker and whether it grows from the far pad. ``protraction``
        (degrees) turns the fan forward."""
        curves = []
        for side, pad in ((1.0, self.parts["pad"]), (-1.0, self.parts["pad_far"])):
            for u, v, length, bend in self.whiskers:
                root = pad.surface((u, v, side * math.sqrt(max(0.05, 1 - u * u - v * v))))
                psi = math.radians(55 + 40 * (u + 0.85) / 1.3 + protraction)  # from backward toward forward
                elev = math.radians(40 * v - 8)
                s = np.linspace(0, 1, 12)[:, None]
                psis = psi - bend * s[:, 0]  # the shaft bends back along its length
                elevs = elev - 0.5 * bend * s[:, 0]
                step = np.stack([-np.cos(psis) * np.cos(elevs), np.sin(elevs), side * np.sin(psis) * np.cos(elevs)], 1)
                curve = root + np.cumsum(step * length / len(s), axis=0)
                curves.append((np.vstack([root, curve]), side < 0))
        return curves


def _outermost(points: np.ndarray, parts: list[Ellipsoid], step: float = 0.05, reach: float = 4.0) -> np.ndarray:
    """Each point moved out from the head's centre line to the first place no part encloses: a
    keypoint placed on one part's surface may lie inside a neighbour that bulges over it."""
    out = points.copy()
    for k, p in enumerate(points):
        if np.isnan(p).any():
            continue
        away = p - np.array([p[0], -1.5, 0.0])
        away /= np.linalg.norm(away)
        trail = p + np.arange(0, reach, step)[:, None] * away
        enclosed = np.zeros(len(trail), bool)
        for part in parts:
            enclosed |= part.inside(trail)
        free = np.flatnonzero(~enclosed)
        out[k] = trail[free[0]] if len(free) else p
    return out


def _onto(ellipsoid: Ellipsoid, point: np.ndarray) -> np.ndarray:
    """``point`` moved along the line from the ellipsoid's centre onto its surface."""
    local = (point - ellipsoid.centre) @ ellipsoid.rotation / ellipsoid.axes
    return ellipsoid.centre + (point - ellipsoid.centre) / np.linalg.norm(local)


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: ``rotation`` rows are its right, down and viewing axes in head coordinates."""

    position: np.ndarray
    rotation: np.ndarray
    focal: float  # pixels
    centre: tuple[float, float]  # principal point (x, y)

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        return (points - self.position) @ self.rotation.T

    def project(self, cam: np.ndarray) -> np.ndarray:
        z = np.maximum(cam[..., 2], 1e-3)
        return np.stack([self.focal * cam[..., 0] / z + self.centre[0], self.focal * cam[..., 1] / z + self.centre[1]], -1)


def camera_at(head: Head, width: int, height: int, azimuth: float, elevation: float, roll: float = 0.0,
              along: float = 0.5, fill: float = 0.6, focal: float = 1.5, aim: np.ndarray | None = None) -> Camera:
    """A camera ``azimuth`` degrees from the labelled side's profile toward the front (90 looks
    at the nose) and ``elevation`` above the head (negative: from below), rolled ``roll``, aimed
    at the point ``along`` the way from the eye to the nose (plus ``aim`` mm), so far that the
    eye-to-nose distance is ``fill`` of the frame's width; ``focal`` in frame widths."""
    az, el = math.radians(azimuth), math.radians(elevation)
    view = np.array([math.sin(az) * math.cos(el), math.sin(el), math.cos(az) * math.cos(el)])
    kp = head.keypoints()
    eye, nose = kp[_K["eye(front)"]], kp[_K["nose(r)"]]
    target = eye + along * (nose - eye) + (0 if aim is None else aim)
    focal_px = width * focal
    distance = focal_px * np.linalg.norm(nose - eye) / fill / width
    forward = -view
    right = np.cross(forward, np.array([0.0, 1.0, 0.0]))  # image x: toward the nose in a profile
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    r = math.radians(roll)
    right, down = math.cos(r) * right + math.sin(r) * down, -math.sin(r) * right + math.cos(r) * down
    return Camera(target + view * distance, np.stack([right, down, forward]), focal_px, ((width - 1) / 2, (height - 1) / 2))


def random_camera(head: Head, width: int, height: int, rng: np.random.Generator) -> Camera:
    """A rig's camera: from the side, obliquely from the front or from below-front, rolled, at a
    distance where the eye-to-nose span fills 30-100 % of the frame's width, aimed anywhere from
    eye to nose."""
    azimuth = rng.uniform(-15, 25) if rng.random() < 0.4 else rng.uniform(20, 65)
    elevation = rng.uniform(-15, 20) if rng.random() < 0.65 else rng.uniform(-50, -15)
    return camera_at(head, width, height, azimuth, elevation, roll=rng.uniform(-20, 20), along=rng.uniform(0.25, 0.85),
                     fill=rng.uniform(0.3, 1.0), focal=rng.uniform(0.9, 2.5), aim=rng.normal(0, 1.5, 3))


def render(head: Head, camera: Camera, width: int, height: int, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray]:
    """One uint8 frame (height, width) and its keypoints (15, 3) [x, y, in view]."""
    h2, w2 = height // _RENDER_SCALE, width // _RENDER_SCALE
    mm_per_px = _RENDER_SCALE * float(np.linalg.norm(camera.position - head.eye_centre)) / camera.focal
    p, n, label, tone = _surface(head, _SPACING_PX * mm_per_px)
    cam = camera.to_camera(p)
    ncam = n @ camera.rotation.T
    front = (cam[:, 2] > 1.0) & (ncam[:, 2] < 0.3)  # before the lens, facing it (or nearly)
    normal, part, albedo, cover = _zbuffer(camera, cam[front], ncam[front], label[front], tone[front], h2, w2)
    keypoints = _visible_keypoints(head, camera, width, height)

    big = lambda img, interp=cv2.INTER_LINEAR: cv2.resize(img, (width, height), interpolation=interp)  # noqa: E731
    normal = cv2.GaussianBlur(normal, (0, 0), 1.2)  # soften the creases between parts
    normal = big(normal)
    normal /= np.linalg.norm(normal, axis=2, keepdims=True) + 1e-6
    part = big(part, cv2.INTER_NEAREST)
    alpha = cv2.GaussianBlur(big(cover), (0, 0), rng.uniform(0.6, 1.5))
    albedo = big(cv2.GaussianBlur(albedo, (0, 0), 0.7))
    image = _shade(head, camera, normal, part, albedo, width, height, rng)
    background = _background(rng, height, width)
    far = np.zeros((height, width), np.float32)
    near = np.zeros((height, width), np.float32)
    shade_far, shade_near = _whiskers(head, camera, rng, far, near)
    out = background * (1 - far) + shade_far * far
    out = out * (1 - alpha) + image * alpha
    out = out * (1 - near) + shade_near * near
    return np.clip(out, 0, 255).astype(np.uint8), keypoints


def _surface(head: Head, spacing: float) -> tuple[np.ndarray, ...]:
    """Samples about ``spacing`` mm apart over the head's outer surface (each ellipsoid's, where
    no other encloses it): points, normals, part index (``_EYE`` on the eye) and fur reflectance."""
    parts = head.ellipsoids()
    points, normals, labels = [], [], []
    for i, e in enumerate(parts):
        p, n = e.samples(spacing)
        outside = np.ones(len(p), bool)
        for j, other in enumerate(parts):
            if j != i:
                outside &= ~other.inside(p)
        points.append(p[outside])
        normals.append(n[outside])
        labels.append(np.full(outside.sum(), i, np.uint8))
    p, n, label = np.concatenate(points), np.concatenate(normals), np.concatenate(labels)
    rel = p - head.eye_centre
    a, b = head.eye_axes
    on_eye = (label == _PARTS.index("cranium")) & (((rel @ head.eye_t1) / a) ** 2 + ((rel @ head.eye_t2) / b) ** 2 <= 1)
    on_eye &= (rel @ head.eye_t2) <= b * head.eye_open
    label[on_eye] = _EYE
    tone = head.albedo_head + (head.albedo_snout - head.albedo_head) / (1 + np.exp(-(p[:, 0] - head.pale_from) / 1.5))
    for pad in (head.parts["pad"], head.parts["pad_far"]):
        reach = ((p - pad.centre) / (1.3 * pad.axes)) ** 2
        tone += (head.albedo_pad - head.albedo_snout) * np.exp(-reach.sum(1))
    tone[on_eye] = 0.03
    # the eyeball bulges: its normals tilt outward from the eye's centre, which places the highlight
    bulge = (rel[on_eye] @ head.eye_t1)[:, None] / a * head.eye_t1 + (rel[on_eye] @ head.eye_t2)[:, None] / b * head.eye_t2
    n[on_eye] = n[on_eye] + 0.9 * bulge
    n[on_eye] /= np.linalg.norm(n[on_eye], axis=1, keepdims=True)
    return p, n, label, tone


def _zbuffer(camera: Camera, cam: np.ndarray, ncam: np.ndarray, label: np.ndarray, tone: np.ndarray, h2: int, w2: int
             ) -> tuple[np.ndarray, ...]:
    """The nearest sample's normal, part and reflectance in each cell of an (h2, w2) buffer, and
    which cells the head covers; each sample covers 2x2 cells, so the samples leave no holes."""
    xy = camera.project(cam) / _RENDER_SCALE
    cols = np.floor(xy[:, 0]).astype(np.int64)
    rows = np.floor(xy[:, 1]).astype(np.int64)
    cell, owner = [], []
    for dr in (0, 1):
        for dc in (0, 1):
            r, c = rows + dr, cols + dc
            ok = (r >= 0) & (r < h2) & (c >= 0) & (c < w2)
            cell.append(r[ok] * w2 + c[ok])
            owner.append(np.flatnonzero(ok))
    cell, owner = np.concatenate(cell), np.concatenate(owner)
    order = np.lexsort((cam[owner, 2], cell))
    cell, owner = cell[order], owner[order]
    first = np.r_[True, cell[1:] != cell[:-1]]
    cell, owner = cell[first], owner[first]
    normal = np.zeros((h2 * w2, 3), np.float32)
    normal[cell] = ncam[owner]
    part = np.full(h2 * w2, 255, np.uint8)
    part[cell] = label[owner]
    albedo = np.zeros(h2 * w2, np.float32)
    albedo[cell] = tone[owner]
    cover = np.zeros(h2 * w2, np.float32)
    cover[cell] = 1.0
    return normal.reshape(h2, w2, 3), part.reshape(h2, w2), albedo.reshape(h2, w2), cover.reshape(h2, w2)


def _visible_keypoints(head: Head, camera: Camera, width: int, height: int) -> np.ndarray:
    """Keypoints (15, 3) [x, y, in view] in frame pixels: in view when inside the frame and no
    part of the head lies on the line of sight to them (tested on the ellipsoids themselves)."""
    out = np.zeros((N_KEYPOINTS, 3), np.float32)
    parts = head.ellipsoids()
    for k, point in enumerate(head.keypoints()):
        if np.isnan(point).any():
            continue
        cam = camera.to_camera(point[None])[0]
        if cam[2] <= 1.0:
            continue
        x, y = camera.project(cam)
        if 0 <= x <= width - 1 and 0 <= y <= height - 1 and not _behind(camera.position, point, parts):
            out[k] = (x, y, 1.0)
    return out


def _behind(eye: np.ndarray, point: np.ndarray, parts: list[Ellipsoid]) -> bool:
    """Whether a part crosses the line of sight from ``eye`` to ``point`` before it ends (a
    margin of ``_DEPTH_SLACK_MM`` short of the point) for more than a graze: a point on the
    outline, such as the nosebridge in a profile, stays in view."""
    length = float(np.linalg.norm(point - eye))
    stop = 1.0 - _DEPTH_SLACK_MM / length
    for part in parts:
        o = (eye - part.centre) @ part.rotation / part.axes
        d = (point - eye) @ part.rotation / part.axes
        a, b, c = d @ d, 2 * o @ d, o @ o - 1
        disc = b * b - 4 * a * c
        if disc <= 0:
            continue
        near, far = (-b - math.sqrt(disc)) / (2 * a), (-b + math.sqrt(disc)) / (2 * a)
        if (min(far, stop) - max(near, 0.0)) * length > _GRAZE_MM:
            return True
    return False


def _shade(head: Head, camera: Camera, normal: np.ndarray, part: np.ndarray, albedo: np.ndarray, width: int,
           height: int, rng: np.random.Generator) -> np.ndarray:
    """Infrared shading: a point source near the camera with falloff, fur albedo, wet highlights."""
    light = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.3), 1.0])  # toward the light, camera axes
    light /= np.linalg.norm(light)
    diffuse = np.clip(-(normal @ light), 0, 1)
    # hair runs back along the head: its direction in the image is the head's -x axis, projected
    back = -camera.rotation @ np.array([1.0, 0.0, 0.0])
    flow = np.full((height, width), math.atan2(back[1], back[0]), np.float32)
    flow += 0.5 * soft_noise(rng, (height, width), (4, 8))
    scale = width / 640
    texture = fur(rng, flow, scale)
    albedo *= 1 + head.fur_contrast * np.clip(texture, -2.5, 2.5) * (part != _EYE)
    # the pad and snout glow: the light is close, so what is near it is brighter
    gain = rng.uniform(170, 380)
    image = gain * albedo * (rng.uniform(0.08, 0.25) + diffuse)
    # wet highlights on the eye and the nose
    half = light + np.array([0.0, 0.0, 1.0])
    half /= np.linalg.norm(half)
    spec = np.clip(-(normal @ half), 0, 1) ** 60
    wet = (part == _EYE) * 900.0 + (part == _PARTS.index("nose")) * rng.uniform(50, 250)
    image += wet * spec
    return image


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    level = rng.choice([rng.uniform(0, 40), rng.uniform(40, 230)], p=[0.55, 0.45])
    return np.clip(level + rng.uniform(0, 40) * soft_noise(rng, (height, width), (3, 6)), 0, 255)


def _whiskers(head: Head, camera: Camera, rng: np.random.Generator, far: np.ndarray, near: np.ndarray
              ) -> tuple[float, float]:
    """Draw the whiskers' coverage into ``far`` (behind the head) and ``near``; return the shade
    each layer takes (whiskers under infrared are bright on black and dark on a bright pad)."""
    protraction = rng.uniform(-25, 35)
    blur = rng.uniform(0, 6) if rng.random() < 0.4 else 0.0
    follicle = rng.uniform(0.6, 1.6) * camera.focal / float(np.linalg.norm(camera.position - head.eye_centre)) * 0.12
    for curve, is_far in head.whisker_curves(protraction):
        cam = camera.to_camera(curve)
        if (cam[:, 2] <= 1.0).any():
            continue
        xy = camera.project(cam)
        layer = far if is_far else near
        if not is_far:  # the follicle: a dark-rimmed pore where the shaft leaves the pad
            cv2.circle(layer, (int(round(xy[0, 0] * 16)), int(round(xy[0, 1] * 16))), int(16 * follicle), 0.5, -1,
                       cv2.LINE_AA, 4)
        strength = rng.uniform(0.35, 0.9)
        passes = 3 if blur else 1
        for k in range(passes):
            turn = (k - 1) * blur / 12 if blur else 0.0  # motion blur: a few faint copies along the sweep
            pts = xy + turn * (xy - xy[0]) @ np.array([[0.0, 1.0], [-1.0, 0.0]])
            tmp = np.zeros_like(layer)
            cv2.polylines(tmp, [np.round(pts * 16).astype(np.int32)], False, strength / passes, 1, cv2.LINE_AA, 4)
            np.maximum(layer, layer + tmp, out=layer)
    np.clip(far, 0, 1, out=far)
    np.clip(near, 0, 1, out=near)
    dark = rng.random() < 0.7
    return (rng.uniform(150, 255), rng.uniform(0, 50) if dark else rng.uniform(170, 255))


def render_view(seed: int, index: int, width: int = 640, height: int = 480) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``index`` of animal ``seed``: a random camera, jaw and whisking."""
    head = Head(seed)
    rng = np.random.default_rng([seed, index, 0x71E3])
    head.jaw_open = rng.uniform(0, 14) if rng.random() < 0.4 else 0.0
    camera = random_camera(head, width, height, rng)
    return render(head, camera, width, height, rng)
