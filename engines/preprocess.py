"""Facemap's tracker input from a uint8 frame, with numpy and OpenCV instead of torch.

Facemap (pose.py, transforms.preprocess_img) turns frames into network input in four steps:
float32; ``normalize99`` = (x - p1) / (p99 - p1) with torch.quantile (linear interpolation) over
the whole uncropped batch; crop to the bbox; zero-pad a non-square crop to a square; bilinear
resize to 256x256 (F.interpolate, align_corners=False, no antialias). Without a user bbox Facemap
uses the whole frame as the bbox, so the same steps apply.

Here each frame is normalized with its own percentiles. Facemap pools them over its batch: its
command-line/API default batch size is 1 (identical to this), its GUI default is 4 (the four
frames share one p1/p99). Percentiles come from a 256-bin histogram, reproducing torch.quantile's
float32 rank and lerp arithmetic exactly; normalization is a 256-entry lookup table computed with
the same float32 operations as Facemap's; cv2.resize INTER_LINEAR on float32 equals the bilinear
F.interpolate to about 3e-7. One deliberate difference: a blank frame (p99 == p1) is divided by 1
instead of 0, which in Facemap gives NaN input and meaningless keypoints.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

INPUT_SIZE = 256
LOW_Q = 0.01
HIGH_Q = 0.99


@dataclass(frozen=True)
class Geometry:
    """Where the network's input square lies in the frame.

    crop: (row1, row2, col1, col2), Facemap's bbox order [x1, x2, y1, y2] (rows, then columns).
    pad: (top, bottom, left, right) zeros added around the crop to make it ``side`` x ``side``.
    A network-input pixel (r, c) is frame pixel (r * scale - top + row1, c * scale - left + col1).
    """

    frame_shape: tuple[int, int]
    crop: tuple[int, int, int, int]
    pad: tuple[int, int, int, int]

    @property
    def side(self) -> int:
        row1, row2, col1, col2 = self.crop
        top, bottom, _, _ = self.pad
        return row2 - row1 + top + bottom

    @property
    def scale(self) -> float:
        return self.side / INPUT_SIZE


class BboxError(ValueError):
    """A bbox is malformed or lies outside the frame; the message is one line."""


def check_bbox(bbox: object) -> tuple[int, int, int, int] | None:
    """``bbox`` as (row1, row2, col1, col2), Facemap's order, or None for the whole frame; the one
    place a bbox's form is checked (settings, flags and the tracker's API all come here)."""
    if bbox is None:
        return None
    try:
        values = tuple(bbox)  # type: ignore[arg-type]
    except TypeError:
        values = ()
    integers = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
    if len(values) != 4 or not integers:
        raise BboxError(f"bbox must be 4 integers (row1, row2, col1, col2), got {bbox!r}")
    row1, row2, col1, col2 = (int(v) for v in values)
    if min(row1, col1) < 0:
        raise BboxError(f"bbox {list(values)} has a negative start; rows and columns start at 0")
    for axis, start, stop in (("rows", row1, row2), ("cols", col1, col2)):
        if stop <= start:
            raise BboxError(
                f"bbox {axis} {start}:{stop} are empty or reversed; give (row1, row2, col1, col2), "
                "row1 < row2, col1 < col2"
            )
    return row1, row2, col1, col2


def make_geometry(
    frame_shape: tuple[int, int], bbox: tuple[int, int, int, int] | None = None
) -> Geometry:
    """Crop and padding for a frame shape and an optional bbox (row1, row2, col1, col2) that
    ``check_bbox`` accepted; BboxError if it does not lie inside the frame.

    Padding follows Facemap's pad_img_to_square: when the two sides differ by an odd number the
    square grows by one pixel, and each side's padding is split with the smaller half first (top, left).
    """
    height, width = frame_shape
    if bbox is not None and (bbox[1] > height or bbox[3] > width):
        row1, row2, col1, col2 = bbox
        raise BboxError(
            f"bbox rows {row1}:{row2}, cols {col1}:{col2} lies outside the {height}x{width} "
            "(rows x cols) frame; the order is (row1, row2, col1, col2)"
        )
    crop = (0, height, 0, width) if bbox is None else tuple(int(v) for v in bbox)
    rows, cols = crop[1] - crop[0], crop[3] - crop[2]
    side = max(rows, cols)
    if (side - min(rows, cols)) % 2:
        side += 1
    pad_rows, pad_cols = side - rows, side - cols
    pad = (pad_rows // 2, pad_rows - pad_rows // 2, pad_cols // 2, pad_cols - pad_cols // 2)
    return Geometry(frame_shape=(height, width), crop=crop, pad=pad)


def percentiles(frame: np.ndarray) -> tuple[np.float32, np.float32]:
    """(p1, p99) of a uint8 frame, equal to torch.quantile(frame.float(), 0.01 / 0.99)."""
    # calcHist counts in float32, exact below 2**24 pixels (a 4096x4096 frame); twice bincount's speed
    cumulative = np.cumsum(cv2.calcHist([frame], [0], None, [256], [0, 256]).ravel().astype(np.int64))
    last = np.float32(frame.size - 1)
    low, high = (_quantile(cumulative, np.float32(q) * last) for q in (LOW_Q, HIGH_Q))
    return low, high


def _quantile(cumulative: np.ndarray, rank: np.float32) -> np.float32:
    """The sorted value at a fractional float32 rank, interpolated the way torch.lerp does."""
    below = int(rank)
    weight = np.float32(rank - np.float32(below))
    low, high = (
        np.float32(np.searchsorted(cumulative, r, side="right")) for r in (below, int(np.ceil(rank)))
    )
    if weight < 0.5:
        return np.float32(low + weight * (high - low))
    return np.float32(high - (high - low) * (np.float32(1) - weight))


def normalization_table(p1: np.float32, p99: np.float32) -> np.ndarray:
    """float32 value of each uint8 level after Facemap's normalize99: (v - p1) / (p99 - p1)."""
    spread = p99 - p1 if p99 > p1 else np.float32(1)
    return (np.arange(256, dtype=np.float32) - p1) / spread


def preprocess(frame: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Network input (256, 256) float32 for one uint8 (H, W) frame."""
    row1, row2, col1, col2 = geometry.crop
    table = normalization_table(*percentiles(frame))
    image = cv2.LUT(frame[row1:row2, col1:col2], table)
    top, bottom, left, right = geometry.pad
    if top or bottom or left or right:
        image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=0)
    return cv2.resize(image, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
