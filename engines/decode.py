"""Network outputs to keypoints in frame pixels, following Facemap's predict() and adjust_keypoints().

Per keypoint: the argmax of its 64x64 heatmap gives a cell (i_row, i_col); the offset maps at that
cell refine it: row = 4 * (i_row - 6 * row_offset), col = 4 * (i_col - 6 * col_offset) in 256x256
input pixels (stride 4; offsets were trained as displacement / (-2 * sigma), sigma = 3 cells). The
likelihood is the map's largest sigmoid(heatmap), in [0.5, 1) since the heatmap is post-ReLU.
Input pixels go back to the frame through the padding and crop in ``Geometry``.
"""
from __future__ import annotations

import numpy as np

from .preprocess import INPUT_SIZE, Geometry

OFFSET_SCALE = np.float32(-6.0)  # -2 * sigma, sigma = 3 heatmap cells


def decode(
    heatmap: np.ndarray, row_offset: np.ndarray, col_offset: np.ndarray, geometry: Geometry
) -> np.ndarray:
    """Keypoints (B, K, 3) float32 as [x = column, y = row, likelihood] from (B, K, h, w) maps."""
    batch, keypoints, height, width = heatmap.shape
    stride = np.float32(INPUT_SIZE / width)
    flat = heatmap.reshape(batch, keypoints, height * width)
    cell = flat.argmax(axis=-1)[..., None]
    peak = np.take_along_axis(flat, cell, axis=-1)[..., 0]
    d_row = np.take_along_axis(row_offset.reshape(flat.shape), cell, axis=-1)[..., 0]
    d_col = np.take_along_axis(col_offset.reshape(flat.shape), cell, axis=-1)[..., 0]
    cell_row = (cell[..., 0] // width).astype(np.float32)
    cell_col = (cell[..., 0] % width).astype(np.float32)
    row = (d_row * OFFSET_SCALE + cell_row) * stride
    col = (d_col * OFFSET_SCALE + cell_col) * stride

    row1, _, col1, _ = geometry.crop
    top, _, left, _ = geometry.pad
    scale = np.float32(geometry.scale)
    out = np.empty((batch, keypoints, 3), dtype=np.float32)
    out[..., 0] = col * scale - left + col1
    out[..., 1] = row * scale - top + row1
    out[..., 2] = 1 / (1 + np.exp(-peak))
    return out
