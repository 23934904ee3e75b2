"""Labelled frames for training the tracker, made into network inputs exactly as inference makes them.

Three sources of frames with true keypoints:

- synthetic faces: ``SyntheticCamera`` frames of seeds below ``EVAL_SEED_START`` (seeds from there
  up are kept for evaluation), rendered once into a cache folder because drawing a face costs
  several milliseconds, a fifth of a training sample's time;
- synthetic views: 3D heads (``head_views``) seen from the side, obliquely from the front and
  from below, the camera angles a profile drawing cannot show; cached the same way;
- Facemap's refined data (``*_Facemap_refined_data.npy``, written by its GUI while the user
  corrects keypoints): frames that Facemap stored already normalized, cropped and padded.

A sample goes through the inference path: a uint8 frame through ``preprocess.preprocess`` with
the whole-frame geometry, a Facemap image through the same final resize. Its keypoints go to
heatmap cells by the inverse of ``decode.decode``, so a network that hits the targets decodes to
the labelled frame pixels. Augmentation (Facemap's: random zoom and shift, which is its random
crop, small rotations, brightness and contrast; no flips, which would swap the sides of a profile
face) warps the frame before pre-processing, so augmented inputs are still made by the inference
code. Which frames make step ``s``'s batch, and how each is augmented, depend only on the run's
seed and ``s``: a resumed run sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch

from facestream.camera_adapters.synthetic.camera import SyntheticCamera
from facestream.camera_adapters.synthetic.head_views import render_view
from facestream.camera_adapters.synthetic.sampling import FRAME_SPAN, SYNTHETIC_FPS, frame_ids

from ..bodyparts import BODYPARTS, N_KEYPOINTS
from ..model_files import SYNTHETIC_DATA, ModelFileError
from ..preprocess import INPUT_SIZE, Geometry, make_geometry, preprocess
from ..restricted_npy import UnsafeFileError, load_object_npy
from . import rig_augment

HEATMAP_SIZE = INPUT_SIZE // 4  # the network's output maps: one cell per 4x4 input pixels
EVAL_SEED_START = 10_000  # synthetic seeds >= this are never trained on

# Augmentation ranges at strength 1: zoom 1 +- 0.1, rotation +- 10 degrees, shift +- 5 % of the
# frame's sides; with probability 0.5 Facemap's brightness (+- 0.2 of the image's maximum) and
# contrast (x 0.7 .. 1.3 about the mean) jitter on the normalized input.
_ZOOM, _ROTATION_DEG, _SHIFT = 0.1, 10.0, 0.05
_PHOTOMETRIC_P, _BRIGHTNESS, _CONTRAST = 0.5, 0.2, 0.3
_POOL_MIN_FRAMES = 256  # smaller banks render in-process: starting workers costs more


class TrainingError(ModelFileError):
    """Training cannot start or go on (labelled data, settings, checkpoint, output folder).

    One line for the user. It is a ModelFileError because Facemap names its labelled data and its
    checkpoints after the model they make; callers that report model-file problems report these.
    """


@dataclass(frozen=True)
class Batch:
    """Network inputs (B, 1, 256, 256), keypoints in heatmap cells (B, 15, 2) as [row, col], and
    which keypoints are in view (B, 15)."""

    images: torch.Tensor
    cells: torch.Tensor
    visible: torch.Tensor


class LabelledFrames(Protocol):
    """Frames with keypoints (N, 15, 3) [x = column, y = row, visible] in frame pixels."""

    keypoints: np.ndarray

    def __len__(self) -> int: ...

    def frame(self, index: int) -> np.ndarray: ...


class SyntheticFrames:
    """A bank of synthetic frames: uint8 (N, H, W) in a memory-mapped file, N = seeds x frames_per_seed."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.frames = np.load(folder / "frames.npy", mmap_mode="r")
        self.keypoints = np.load(folder / "keypoints.npy")

    def __len__(self) -> int:
        return len(self.keypoints)

    def frame(self, index: int) -> np.ndarray:
        return np.asarray(self.frames[index])


class RefinedFrames:
    """Facemap's refined frames: normalized float32 squares, each of its own size."""

    def __init__(self, path: Path, images: list[np.ndarray], keypoints: np.ndarray) -> None:
        self.path = path
        self.images = images
        self.keypoints = keypoints

    def __len__(self) -> int:
        return len(self.keypoints)

    def frame(self, index: int) -> np.ndarray:
        return self.images[index]


def _render_seed(kind: str, width: int, height: int, seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    frames = np.empty((count, height, width), np.uint8)
    keypoints = np.empty((count, N_KEYPOINTS, 3), np.float32)
    if kind == "views":
        for i in range(count):
            frames[i], keypoints[i] = render_view(seed, i, width, height)
        return frames, keypoints
    camera = SyntheticCamera(width, height, fps=SYNTHETIC_FPS, seed=seed)
    for i, frame_id in enumerate(frame_ids(seed, count)):
        frames[i], keypoints[i] = camera.render(int(frame_id))
    return frames, keypoints


def synthetic_frames(
    width: int,
    height: int,
    seeds: int,
    frames_per_seed: int,
    cache_dir: Path,
    progress: Callable[[int], None] | None = None,
    kind: str = "synthetic",
) -> SyntheticFrames:
    """The bank of seeds ``0 .. seeds - 1``, rendered into ``cache_dir`` unless already there.

    ``kind`` "synthetic" draws the synthetic camera's faces (profiles that sniff, whisk, lick
    and groom); "views" draws 3D heads from random rig cameras (``head_views``: side, oblique
    from the front, from below), ``frames_per_seed`` cameras per animal.

    The folder's name holds the settings and a fingerprint of the renderer's output, so a
    changed face renderer makes a new bank instead of reusing frames it would no longer draw.
    ``progress`` is called with the number of seeds rendered so far. Larger banks render in
    worker processes started with "spawn" (forking a process that already runs torch and OpenCV
    threads can hang), so a script that calls this must guard its entry point with
    ``if __name__ == "__main__":``.
    """
    if kind not in SYNTHETIC_DATA:
        raise TrainingError(f"unknown kind of synthetic frames {kind!r}; choose one of {', '.join(SYNTHETIC_DATA)}")
    if not 1 <= seeds <= EVAL_SEED_START:
        raise TrainingError(f"synthetic seeds must be 1 .. {EVAL_SEED_START} (higher seeds are for evaluation), got {seeds}")
    if not 1 <= frames_per_seed <= FRAME_SPAN:
        raise TrainingError(f"frames per seed must be 1 .. {FRAME_SPAN}, got {frames_per_seed}")
    probe = [_render_seed(kind, width, height, s, 1) for s in sorted({0, seeds - 1})]
    digest = hashlib.sha256(b"".join(f.tobytes() + k.tobytes() for f, k in probe)).hexdigest()[:12]
    folder = cache_dir / f"{kind}-{width}x{height}-{seeds}x{frames_per_seed}-{digest}"
    if (folder / "keypoints.npy").is_file():
        return SyntheticFrames(folder)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=folder.name + ".tmp"))
    try:
        frames = np.lib.format.open_memmap(
            tmp / "frames.npy", mode="w+", dtype=np.uint8, shape=(seeds * frames_per_seed, height, width)
        )
        keypoints = np.empty((seeds * frames_per_seed, N_KEYPOINTS, 3), np.float32)
        jobs = [(kind, width, height, seed, frames_per_seed) for seed in range(seeds)]
        for seed, (f, k) in enumerate(_map(jobs, pool=seeds * frames_per_seed >= _POOL_MIN_FRAMES)):
            rows = slice(seed * frames_per_seed, (seed + 1) * frames_per_seed)
            frames[rows], keypoints[rows] = f, k
            if progress is not None:
                progress(seed + 1)
        frames.flush()
        del frames
        np.save(tmp / "keypoints.npy", keypoints)
        tmp.chmod(0o755)
        try:
            os.replace(tmp, folder)
        except OSError:  # another run finished the same bank first
            if not (folder / "keypoints.npy").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return SyntheticFrames(folder)


def _map(jobs: list[tuple[str, int, int, int, int]], pool: bool):
    """Render seeds in order: in worker processes, one per core, or here."""
    if not pool or (os.cpu_count() or 1) < 2:
        yield from (_render_seed(*job) for job in jobs)
        return
    with ProcessPoolExecutor(max_workers=os.cpu_count(), mp_context=get_context("spawn")) as workers:
        yield from workers.map(_render_seed, *zip(*jobs))


def load_refined_data(path: str | Path) -> RefinedFrames:
    """Facemap's ``*_Facemap_refined_data.npy``: labelled frames made in its refinement GUI.

    Facemap writes this file with ``np.save`` of a dict, a pickle; it is read with an unpickler
    that builds numpy arrays and plain containers only (``restricted_npy``), so a crafted file
    cannot run code. Its contents are then checked: ``imgs`` (a list of image stacks, each
    (N, side, side) or one (side, side) image, normalized, cropped and padded by Facemap),
    ``keypoints`` (a list of (N, 15, 2 or 3) [x, y, likelihood] arrays in those images' pixels,
    NaN where a keypoint is not in view), ``bbox`` (crops [row1, row2, col1, col2] of the
    original frames) and ``bodyparts`` (Facemap's 15 names, in any order).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise TrainingError(f"{path}: no such labelled-data file")
    try:
        data = load_object_npy(path)
    except UnsafeFileError as exc:
        raise TrainingError(f"{path}: refused: {exc}") from None
    except Exception as exc:  # numpy and pickle raise several types for unreadable files
        raise TrainingError(f"{path}: not a numpy file ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(data, dict):
        raise TrainingError(f"{path}: not Facemap's refined data (a dict saved by np.save), found {type(data).__name__}")
    missing = [k for k in ("imgs", "keypoints", "bbox", "bodyparts") if k not in data]
    if missing:
        raise TrainingError(f"{path}: not Facemap's refined data: no {', '.join(missing)}")
    order = _bodypart_order(data["bodyparts"], path)
    _check_bbox(data["bbox"], path)
    image_sets, keypoint_sets = _sets(data["imgs"], "imgs", path), _sets(data["keypoints"], "keypoints", path)
    if len(image_sets) != len(keypoint_sets):
        raise TrainingError(f"{path}: {len(image_sets)} image sets but {len(keypoint_sets)} keypoint sets")
    images: list[np.ndarray] = []
    keypoints: list[np.ndarray] = []
    for n, (stack, points) in enumerate(zip(image_sets, keypoint_sets)):
        stack, points = _numeric(stack), _numeric(points)
        stack = stack[None] if stack is not None and stack.ndim == 2 else stack
        if stack is None or stack.ndim != 3 or min(stack.shape) == 0:
            raise TrainingError(f"{path}: imgs[{n}] is not a stack of grayscale images (shape {np.shape(stack)})")
        if points is None or points.ndim != 3 or points.shape[1:2] != (N_KEYPOINTS,) or points.shape[2] not in (2, 3):
            raise TrainingError(f"{path}: keypoints[{n}] must be (N, {N_KEYPOINTS}, 2 or 3), got shape {np.shape(points)}")
        if len(points) != len(stack):
            raise TrainingError(f"{path}: set {n} has {len(stack)} images but {len(points)} keypoint rows")
        geometry = make_geometry(stack.shape[1:])
        for image, xy in zip(stack, points[:, order, :2].astype(np.float32)):
            square, labelled = _square(image, xy, geometry)
            images.append(square)
            keypoints.append(labelled)
    stacked = np.stack(keypoints) if keypoints else np.empty((0, N_KEYPOINTS, 3), np.float32)
    if not stacked[..., 2].any():
        raise TrainingError(f"{path}: no labelled keypoint inside its image")
    return RefinedFrames(path, images, stacked)


def _numeric(value: object) -> np.ndarray | None:
    """``value`` as a real-valued array, or None."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        return None
    return array if array.dtype.kind in "biuf" else None


def _brief(value: object, limit: int = 80) -> str:
    """``value`` as one short line, for an error message (arrays print over several lines)."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _bodypart_order(bodyparts: object, path: Path) -> list[int]:
    listed = isinstance(bodyparts, list | tuple) or (isinstance(bodyparts, np.ndarray) and bodyparts.ndim == 1)
    names = [_brief(b, 40) for b in bodyparts] if listed else []
    if sorted(names) != sorted(BODYPARTS):
        unknown = sorted(set(names) - set(BODYPARTS))[:5] or ["-"]
        absent = sorted(set(BODYPARTS) - set(names)) or ["-"]
        raise TrainingError(
            f"{path}: bodyparts must be Facemap's {N_KEYPOINTS} (unknown: {', '.join(unknown)}; missing: {', '.join(absent)})"
        )
    return [names.index(b) for b in BODYPARTS]


def _check_bbox(bbox: object, path: Path) -> None:
    try:
        boxes = np.asarray(bbox, dtype=np.float64)
    except (TypeError, ValueError):
        boxes = np.empty(0)
    if boxes.ndim not in (1, 2) or boxes.size == 0 or boxes.shape[-1] != 4 or not np.isfinite(boxes).all():
        raise TrainingError(f"{path}: bbox must be [row1, row2, col1, col2] per video, got {_brief(bbox)}")
    boxes = boxes.reshape(-1, 4)
    if (boxes[:, 1] <= boxes[:, 0]).any() or (boxes[:, 3] <= boxes[:, 2]).any() or (boxes < 0).any():
        raise TrainingError(f"{path}: bbox {boxes.tolist()} is not [row1, row2, col1, col2] with row1 < row2, col1 < col2")


def _sets(value: object, key: str, path: Path) -> Sequence:
    if isinstance(value, np.ndarray) and value.dtype != object:
        return [value]
    if isinstance(value, list | tuple) or (isinstance(value, np.ndarray) and value.ndim > 0):
        if len(value) > 0:
            return value
    raise TrainingError(f"{path}: {key} must be a non-empty list of arrays, got {type(value).__name__}")


def _square(image: np.ndarray, xy: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """The image zero-padded to a square as inference pads, and its keypoints with a visible column."""
    top, bottom, left, right = geometry.pad
    square = cv2.copyMakeBorder(image.astype(np.float32), top, bottom, left, right, cv2.BORDER_CONSTANT, value=0)
    labelled = np.zeros((N_KEYPOINTS, 3), np.float32)
    labelled[:, 0] = xy[:, 0] + left
    labelled[:, 1] = xy[:, 1] + top
    side = square.shape[0]
    inside = np.isfinite(xy).all(axis=1) & _inside(labelled[:, :2], side, side)
    labelled[:, 2] = inside
    labelled[~inside, :2] = 0
    return square, labelled


def _inside(xy: np.ndarray, height: int, width: int) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return (xy[:, 0] >= 0) & (xy[:, 0] <= width - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= height - 1)


def to_cells(xy: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Frame pixels (K, 2) [x = column, y = row] to heatmap cells (K, 2) [row, col]: decode()'s inverse."""
    row1, _, col1, _ = geometry.crop
    top, _, left, _ = geometry.pad
    stride = geometry.scale * INPUT_SIZE / HEATMAP_SIZE
    return np.stack([(xy[:, 1] - row1 + top) / stride, (xy[:, 0] - col1 + left) / stride], axis=1).astype(np.float32)


def network_input(frame: np.ndarray) -> tuple[np.ndarray, Geometry]:
    """The whole frame as inference feeds it: ``preprocess`` for a uint8 camera frame; for a
    Facemap image (float, already normalized and padded square) only preprocess's final resize."""
    geometry = make_geometry(frame.shape)
    if frame.dtype == np.uint8:
        return preprocess(frame, geometry), geometry
    return cv2.resize(frame, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR), geometry


def make_sample(
    frame: np.ndarray, keypoints: np.ndarray, rng: np.random.Generator, strength: float, rig_strength: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One augmented training sample: input (256, 256), cells (15, 2) [row, col], visible (15,).

    The frame is first made to look as another rig would have seen it (``rig_augment`` at
    ``rig_strength``, which defaults to ``strength``; 0 skips it), then given Facemap's own zoom,
    rotation, shift and contrast jitter at ``strength``."""
    frame, keypoints = rig_augment.augment(frame, keypoints, rng, strength if rig_strength is None else rig_strength)
    visible = keypoints[:, 2] > 0
    xy = keypoints[:, :2].astype(np.float64)
    if strength > 0:
        height, width = frame.shape
        zoom = 1 + rng.uniform(-1, 1) * _ZOOM * strength
        angle = rng.uniform(-1, 1) * _ROTATION_DEG * strength
        shift = rng.uniform(-1, 1, size=2) * _SHIFT * strength * np.array([width, height])
        warp = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, zoom)
        warp[:, 2] += shift
        border = cv2.BORDER_REPLICATE if frame.dtype == np.uint8 else cv2.BORDER_CONSTANT
        frame = cv2.warpAffine(frame, warp, (width, height), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=0)
        xy = xy @ warp[:, :2].T + warp[:, 2]
        visible &= _inside(xy, height, width)
    image, geometry = network_input(frame)
    if strength > 0 and rng.random() < _PHOTOMETRIC_P:
        image = _brightness_contrast(image, rng, strength)
    cells = to_cells(xy, geometry)
    cells[~visible] = 0
    return image.astype(np.float32), cells, visible


def _brightness_contrast(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Facemap's contrast jitter: shift by a fraction of the maximum, scale about the mean, clip."""
    top = image.max()
    mean = image.mean()
    shifted = image + rng.uniform(-1, 1) * _BRIGHTNESS * strength * top
    scaled = (shifted - mean) * (1 + rng.uniform(-1, 1) * _CONTRAST * strength) + mean
    return np.clip(scaled, min(image.min(), 0), top)


class TrainingSet:
    """All labelled frames of a run, served as augmented batches keyed by step.

    Epoch ``e`` visits every frame once in the order of a permutation drawn from (seed, e); the
    sample at position ``j`` of step ``s``'s batch is augmented with a generator drawn from
    (seed, s, j). Nothing else is random, so ``batch(s)`` is a pure function of ``s``.
    """

    def __init__(self, sources: Sequence[LabelledFrames], batch_size: int, seed: int, strength: float,
                 rig_strength: float | None = None) -> None:
        self.sources = list(sources)
        self.batch_size = batch_size
        self.seed = seed
        self.strength = strength
        self.rig_strength = rig_strength
        self._starts = np.cumsum([0] + [len(s) for s in self.sources])
        self._epoch = -1
        self._order = np.empty(0, np.int64)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def batch(self, step: int) -> Batch:
        images, cells, visible = [], [], []
        for j in range(self.batch_size):
            source, index = self._locate(self._index(step * self.batch_size + j))
            rng = np.random.default_rng([self.seed, step, j])
            image, c, v = make_sample(source.frame(index), source.keypoints[index], rng, self.strength, self.rig_strength)
            images.append(image)
            cells.append(c)
            visible.append(v)
        return Batch(
            images=torch.from_numpy(np.stack(images)[:, None]),
            cells=torch.from_numpy(np.stack(cells)),
            visible=torch.from_numpy(np.stack(visible)),
        )

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, len(self))
        if epoch != self._epoch:
            self._order = np.random.default_rng([self.seed, epoch]).permutation(len(self))
            self._epoch = epoch
        return int(self._order[offset])

    def _locate(self, index: int) -> tuple[LabelledFrames, int]:
        k = int(np.searchsorted(self._starts, index, side="right")) - 1
        return self.sources[k], index - int(self._starts[k])
