"""What a real rig does to a face that the renderer does not, drawn anew for every training
sample (domain randomisation): which way the face points, the camera's angle and framing, the
light, objects in the scene, the optics and the sensor.

A model that has seen these vary cannot lean on any one of them, which is what carries it from
drawn faces to real ones. Facemap's bodypart names are anatomical (front, back, top, bottom), so
a mirrored face keeps its names: only x changes. Every step keeps the keypoints on the pixels
they label; a keypoint pushed out of the frame or covered by an object is no longer in view.

Strength 1 spans: mirrored half the time; a camera turned up to ~25 degrees in any direction
and rolled up to 15; the face at 45-180 % of its drawn size (from a small part of the frame to a
close-up that crops it) under any crop; a point light with 3x falloff, gamma 0.5-2, burnt-out
patches; a head-post, a lick spout, a platform or stray blobs; down-sampling to a third, blur,
vignetting, sensor noise and JPEG at quality 20.
"""
from __future__ import annotations

import cv2
import numpy as np

_P_MIRROR, _P_VIEW, _P_LIGHT, _P_OBJECTS, _P_SENSOR = 0.5, 0.8, 0.7, 0.5, 0.5


def mirror(frame: np.ndarray, keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frame flipped left-right and its keypoints (K, 3) [x, y, visible] with it."""
    flipped = keypoints.copy()
    flipped[:, 0] = np.where(keypoints[:, 2] > 0, frame.shape[1] - 1 - keypoints[:, 0], 0)
    return np.ascontiguousarray(frame[:, ::-1]), flipped


def augment(frame: np.ndarray, keypoints: np.ndarray, rng: np.random.Generator, strength: float
            ) -> tuple[np.ndarray, np.ndarray]:
    """``frame`` (uint8 camera frame, or a float image Facemap already normalised) and its
    keypoints as another rig would have seen them. Light, objects and sensor apply to uint8
    frames only: a normalised image no longer has a sensor's levels."""
    if strength <= 0:
        return frame, keypoints
    if rng.random() < _P_MIRROR:
        frame, keypoints = mirror(frame, keypoints)
    if rng.random() < _P_VIEW:
        frame, keypoints = view(frame, keypoints, rng, strength)
    if frame.dtype != np.uint8:
        return frame, keypoints
    image = frame.astype(np.float32)
    if rng.random() < _P_LIGHT:
        image = light(image, rng, strength)
    if rng.random() < _P_OBJECTS:
        image, keypoints = objects(image, keypoints, rng, strength)
    if rng.random() < _P_SENSOR:
        image = sensor(image, rng, strength)
    return np.clip(image, 0, 255).astype(np.uint8), keypoints


def view(frame: np.ndarray, keypoints: np.ndarray, rng: np.random.Generator, strength: float
         ) -> tuple[np.ndarray, np.ndarray]:
    """One homography for the camera's angle (side, oblique, from below), its roll and its
    framing (zoom and crop), onto a camera frame of a random aspect; the uncovered border is a
    background of its own, or black (Facemap's padding) for a normalised image."""
    height, width = frame.shape
    # a camera frame may come in any aspect; a normalised image is Facemap's padded square
    aspect = np.exp(rng.uniform(-0.3, 0.3) * strength) if frame.dtype == np.uint8 else 1.0
    out_w, out_h = width, int(np.clip(round(height * aspect), height // 2, 2 * height))
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    corners = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], np.float64)
    zoom = np.exp(rng.uniform(np.log(0.45), np.log(1.8)) * min(strength, 1.0)) * max(out_w / width, out_h / height)
    roll = np.deg2rad(rng.uniform(-15, 15) * strength)
    rotate = np.array([[np.cos(roll), -np.sin(roll)], [np.sin(roll), np.cos(roll)]])
    # turning the camera shortens the far side of the picture against the near one, and the
    # picture in the direction of the turn
    turn = rng.uniform(-0.22, 0.22, size=2) * strength
    placed = corners - centre
    placed[:, 1] *= 1 + turn[0] * np.sign(placed[:, 0])
    placed[:, 0] *= (1 + turn[1] * np.sign(placed[:, 1])) * (1 - abs(turn[0]))
    placed[:, 1] *= 1 - abs(turn[1])
    shift = rng.uniform(-0.25, 0.25, size=2) * strength * np.array([out_w, out_h])
    target = (placed @ rotate.T) * zoom + np.array([(out_w - 1) / 2, (out_h - 1) / 2]) + shift
    warp = cv2.getPerspectiveTransform(corners.astype(np.float32), target.astype(np.float32))
    warped = cv2.warpPerspective(frame, warp, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                 borderValue=0)
    if frame.dtype == np.uint8:  # the uncovered border: a background of its own, a level with some texture
        covered = cv2.warpPerspective(np.ones_like(frame), warp, (out_w, out_h), flags=cv2.INTER_NEAREST, borderValue=0)
        background = _smooth_field(rng, (out_h, out_w), rng.uniform(0, 255), rng.uniform(0, 60))
        warped = np.where(covered > 0, warped, np.clip(background, 0, 255).astype(np.uint8))
    moved = keypoints.copy()
    xy = cv2.perspectiveTransform(keypoints[None, :, :2].astype(np.float64), warp)[0]
    inside = (xy[:, 0] >= 0) & (xy[:, 0] <= out_w - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= out_h - 1)
    moved[:, 2] = (keypoints[:, 2] > 0) & inside
    moved[:, :2] = np.where(moved[:, 2:3] > 0, xy, 0)
    return warped, moved


def light(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """A point infrared source: brighter where it points, falling off away from it, a gamma of
    its own, and sometimes a patch burnt out to white."""
    height, width = image.shape
    centre = rng.uniform(-0.2, 1.2, size=2)
    falloff = _spot((height, width), centre, rng.uniform(0.3, 1.2))
    gain = 1 + strength * rng.uniform(0.3, 2.0) * (falloff - falloff.mean())
    image = image * np.clip(gain, 0.2, None) * np.exp(rng.uniform(-0.5, 0.5) * strength)
    gamma = np.exp(rng.uniform(-0.7, 0.7) * min(strength, 1.0))
    image = 255.0 * (np.clip(image, 0, 255) / 255.0) ** gamma
    if rng.random() < 0.3 * strength:
        image = image + 400 * _spot((height, width), rng.uniform(0, 1, size=2), rng.uniform(0.03, 0.15))
    return image


def _spot(shape: tuple[int, int], centre: np.ndarray, reach: float) -> np.ndarray:
    """A Gaussian of light at ``centre`` (fractions of the frame's rows and columns), ``reach`` a
    fraction of its longer side; drawn coarse and enlarged, as light is smooth."""
    height, width = shape
    small = (max(2, height // 8), max(2, width // 8))
    rows, cols = np.mgrid[0:small[0], 0:small[1]].astype(np.float32)
    rows, cols = rows / (small[0] - 1) * height, cols / (small[1] - 1) * width
    size = reach * max(height, width)
    coarse = np.exp(-((rows - centre[0] * height) ** 2 + (cols - centre[1] * width) ** 2) / (2 * size ** 2))
    return cv2.resize(coarse.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], level: float, spread: float) -> np.ndarray:
    """A level with smooth blotches of +- ``spread`` around it (backgrounds, surfaces)."""
    height, width = shape
    coarse = rng.standard_normal((max(2, height // 32), max(2, width // 32)), dtype=np.float32)
    return level + spread * cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def objects(image: np.ndarray, keypoints: np.ndarray, rng: np.random.Generator, strength: float
            ) -> tuple[np.ndarray, np.ndarray]:
    """Things a rig puts in view: a head-post bar, a lick spout, a platform below the chin,
    stray blobs (a hand, a bead of water). Each is drawn opaque; what it covers is not in view."""
    height, width = image.shape
    cover = np.zeros((height, width), np.uint8)
    drawn = image.copy()
    for _ in range(rng.integers(1, 1 + max(1, round(3 * strength)))):
        mask = np.zeros((height, width), np.uint8)
        kind = rng.integers(4)
        if kind == 0:  # head-post: a wide bar entering from an edge
            y = int(rng.uniform(0, height))
            cv2.line(mask, (int(rng.uniform(-width, 0)), y), (int(rng.uniform(0, width)), int(y + rng.uniform(-60, 60))),
                     255, int(rng.uniform(0.04, 0.12) * height))
        elif kind == 1:  # lick spout: a thin tube
            start = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
            angle = rng.uniform(0, 2 * np.pi)
            end = (int(start[0] + np.cos(angle) * width), int(start[1] + np.sin(angle) * width))
            cv2.line(mask, start, end, 255, max(2, int(rng.uniform(0.01, 0.03) * height)))
        elif kind == 2:  # platform: the bottom of the frame up to a slanted edge
            left, right = rng.uniform(0.7, 1.0, size=2) * height
            cv2.fillPoly(mask, [np.array([[0, int(left)], [width, int(right)], [width, height], [0, height]], np.int32)], 255)
        else:  # a blob
            centre = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
            axes = (int(rng.uniform(0.03, 0.12) * width), int(rng.uniform(0.03, 0.12) * width))
            cv2.ellipse(mask, centre, axes, rng.uniform(0, 180), 0, 360, 255, -1)
        soft = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), rng.uniform(0.5, 3))
        texture = _smooth_field(rng, (height, width), rng.uniform(0, 255), rng.uniform(0, 40))
        drawn = drawn * (1 - soft) + texture * soft
        cover |= mask
    hidden = keypoints.copy()
    for k, (x, y, seen) in enumerate(keypoints):
        if seen > 0 and cover[int(np.clip(round(y), 0, height - 1)), int(np.clip(round(x), 0, width - 1))]:
            hidden[k] = 0
    return drawn, hidden


def sensor(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Optics and sensor: a smaller sensor or a digital zoom (down- and up-sampled), focus or
    motion blur, vignetting, shot and read noise, JPEG/MJPG compression."""
    height, width = image.shape
    if rng.random() < 0.5:
        scale = rng.uniform(max(0.33, 1 - 0.67 * strength), 1.0)
        small = cv2.resize(image, (max(8, int(width * scale)), max(8, int(height * scale))), interpolation=cv2.INTER_AREA)
        image = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        if rng.random() < 0.5:
            image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.0 + strength))
        else:
            length = int(rng.integers(3, 4 + round(6 * strength)))
            kernel = np.zeros((length, length), np.float32)
            kernel[length // 2] = 1 / length
            turn = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), rng.uniform(0, 180), 1)
            kernel = cv2.warpAffine(kernel, turn, (length, length))
            image = cv2.filter2D(image, -1, kernel / max(kernel.sum(), 1e-6))
    if rng.random() < 0.5:
        image = image * (1 - rng.uniform(0, 0.6) * strength * (1 - _spot((height, width), np.array([0.5, 0.5]), 0.5)))
    if rng.random() < 0.7:
        shot = np.sqrt(np.clip(image, 0, None)) * rng.uniform(0, 0.8) * strength
        image = image + rng.standard_normal(image.shape, dtype=np.float32) * (shot + rng.uniform(0, 8) * strength)
    if rng.random() < 0.5:
        quality = int(rng.uniform(max(20, 95 - 75 * strength), 95))
        ok, jpeg = cv2.imencode(".jpg", np.clip(image, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
        image = cv2.imdecode(jpeg, cv2.IMREAD_GRAYSCALE).astype(np.float32)
    return image
