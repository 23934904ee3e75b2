"""Labelled real frames to score a tracker on (``facestream eval --labels PATH``).

PATH is either Facemap's ``*_Facemap_refined_data.npy`` (the refinement GUI's labelled frames,
read by ``datasets.load_refined_data``) or a folder of images (png or jpg, grayscale or colour)
with ``labels.csv`` beside them: columns ``image,bodypart,x,y`` (extra columns are ignored), x the
column and y the row in that image's pixels, one row per keypoint in view. A bodypart with no row
for an image is not in view there; an image in the folder with no row at all has none in view.
Names are Facemap's 15 bodyparts (``bodyparts.BODYPARTS``).

Every problem with the input is a ``LabelsError``, one line for the user.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..bodyparts import BODYPARTS, N_KEYPOINTS
from .datasets import TrainingError, load_refined_data

LABELS_CSV = "labels.csv"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
COLUMNS = ("image", "bodypart", "x", "y")


class LabelsError(TrainingError):
    """Labelled frames that cannot be read or make no sense; one line for the user."""


@dataclass
class LabelledFrames:
    """Images and their labels: ``labels[i]`` is (15, 3) [x = column, y = row, in view (1/0)] in
    ``images[i]``'s pixels, in ``BODYPARTS`` order (x, y are 0 where not in view)."""

    source: Path
    kind: str  # "folder" or "refined"
    names: list[str]
    images: list[np.ndarray]  # uint8 grayscale (H, W), as a camera delivers them
    labels: np.ndarray  # (N, 15, 3) float64

    def __len__(self) -> int:
        return len(self.images)


def load_labelled(path: str | Path) -> LabelledFrames:
    """The labelled frames at ``path`` (a folder with labels.csv, or Facemap's refined data)."""
    path = Path(path).expanduser()
    if path.is_dir():
        return _folder(path)
    if path.is_file() and path.suffix == ".npy":
        return _refined(path)
    if not path.exists():
        raise LabelsError(f"{path}: no such folder or file")
    raise LabelsError(f"{path}: not a folder of images with {LABELS_CSV} nor a *_Facemap_refined_data.npy")


def _folder(folder: Path) -> LabelledFrames:
    csv_path = folder / LABELS_CSV
    if not csv_path.is_file():
        raise LabelsError(f"{folder}: no {LABELS_CSV} in it (columns {','.join(COLUMNS)})")
    rows = _read_csv(csv_path)
    named = sorted({row[0] for row in rows})
    present = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    missing = [name for name in named if not (folder / name).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise LabelsError(f"{csv_path}: image {missing[0]} is not in {folder}{more}")
    names = sorted(set(named) | set(present))
    if not names:
        raise LabelsError(f"{folder}: no images (png or jpg) and no rows in {LABELS_CSV}")
    index = {name: i for i, name in enumerate(names)}
    images = [_read_image(folder / name) for name in names]
    labels = np.zeros((len(names), N_KEYPOINTS, 3), np.float64)
    for name, part, x, y, line in rows:
        i, k = index[name], BODYPARTS.index(part)
        if labels[i, k, 2]:
            raise LabelsError(f"{csv_path}, line {line}: a second row for {part} in {name}")
        height, width = images[i].shape
        if not (0 <= x <= width - 1 and 0 <= y <= height - 1):
            raise LabelsError(
                f"{csv_path}, line {line}: {part} at x {x:g}, y {y:g} lies outside {name} ({width}x{height}, "
                "x = column, y = row)"
            )
        labels[i, k] = (x, y, 1.0)
    return LabelledFrames(folder, "folder", names, images, labels)


def _read_csv(path: Path) -> list[tuple[str, str, float, float, int]]:
    """(image, bodypart, x, y, line number) per row."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            absent = [c for c in COLUMNS if c not in header]
            if absent:
                raise LabelsError(f"{path}: needs the columns {','.join(COLUMNS)}; missing {', '.join(absent)}")
            reader.fieldnames = header
            raw = [(row, reader.line_num) for row in reader]
    except UnicodeDecodeError:
        raise LabelsError(f"{path}: not a text csv file") from None
    except csv.Error as exc:
        raise LabelsError(f"{path}: not a csv file ({exc})") from None
    unknown = sorted({(row["bodypart"] or "").strip() for row, _ in raw} - set(BODYPARTS))
    if unknown:
        raise LabelsError(
            f"{path}: unknown bodypart name(s) {', '.join(repr(u) for u in unknown[:5])}; "
            f"Facemap's are {', '.join(BODYPARTS)}"
        )
    rows = []
    for row, line in raw:
        image = (row["image"] or "").strip()
        if not image:
            raise LabelsError(f"{path}, line {line}: no image name")
        try:
            x, y = float(row["x"]), float(row["y"])
        except (TypeError, ValueError):
            raise LabelsError(f"{path}, line {line}: x and y must be numbers, got {row['x']!r}, {row['y']!r}") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise LabelsError(f"{path}, line {line}: x and y must be finite (leave a keypoint out of view out of the csv)")
        rows.append((image, row["bodypart"].strip(), x, y, line))
    return rows


def _read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)  # colour is converted; 16-bit is scaled to 8
    if image is None or image.size == 0:
        raise LabelsError(f"{path}: not a readable image")
    return image


def _refined(path: Path) -> LabelledFrames:
    """Facemap's refined frames: normalized float squares, made uint8 by a linear map per image.

    The tracker normalizes each frame by its own 1st and 99th percentiles, which a linear map
    does not change (but for 8-bit rounding), so it sees what Facemap's network saw.
    """
    try:
        refined = load_refined_data(path)
    except LabelsError:
        raise
    except TrainingError as exc:
        raise LabelsError(str(exc)) from None
    images = []
    for image in refined.images:
        image = np.asarray(image, np.float64)
        lo, hi = float(np.nanmin(image)), float(np.nanmax(image))
        scaled = (image - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(image)
        images.append(np.clip(np.rint(np.nan_to_num(scaled)), 0, 255).astype(np.uint8))
    labels = np.asarray(refined.keypoints, np.float64)
    names = [f"{path.name}[{i}]" for i in range(len(images))]
    return LabelledFrames(path, "refined", names, images, labels)


def mirrored(frames: LabelledFrames) -> LabelledFrames:
    """The same frames flipped left-right: x -> width - 1 - x. Bodypart names stay (Facemap's are
    anatomical: the nose's right point is still nose(r) when the picture is mirrored)."""
    labels = frames.labels.copy()
    for i, image in enumerate(frames.images):
        seen = labels[i, :, 2] > 0
        labels[i, seen, 0] = image.shape[1] - 1 - labels[i, seen, 0]
    images = [np.ascontiguousarray(image[:, ::-1]) for image in frames.images]
    return LabelledFrames(frames.source, frames.kind, frames.names, images, labels)
