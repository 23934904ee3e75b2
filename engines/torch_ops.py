"""Facemap's pre-processing and decoding as torch operations, for engines that keep frames on a GPU.

The same steps as ``preprocess`` and ``decode`` (numpy), batched and device-agnostic, built only
from operations a CUDA graph can capture (no data-dependent shapes, no host synchronisation):
histograms by ``scatter_add_`` instead of ``bincount``, percentile ranks by counting.
The resize is ``F.interpolate`` (bilinear, align_corners=False), the very call Facemap makes.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from .decode import OFFSET_SCALE
from .preprocess import HIGH_Q, INPUT_SIZE, LOW_Q, Geometry


def percentiles(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(p1, p99), each float32 (B,), of uint8 frames (B, H, W); equal to torch.quantile per frame."""
    batch = frames.shape[0]
    flat = frames.reshape(batch, -1).long()
    hist = torch.zeros(batch, 256, dtype=torch.int64, device=frames.device)
    hist.scatter_add_(1, flat, torch.ones_like(flat))
    cumulative = hist.cumsum(1)
    last = np.float32(flat.shape[1] - 1)
    out = []
    for q in (LOW_Q, HIGH_Q):
        rank = np.float32(q) * last
        below, above = int(rank), int(np.ceil(rank))
        weight = float(np.float32(rank - np.float32(below)))
        # the sorted value at integer rank r is the number of levels whose cumulative count <= r
        low = (cumulative <= below).sum(1).float()
        high = (cumulative <= above).sum(1).float()
        # torch.lerp's two formulas, as numpy's _quantile reproduces them
        out.append(low + weight * (high - low) if weight < 0.5 else high - (high - low) * (1 - weight))
    return out[0], out[1]


def preprocess(frames: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Network input float32 (B, 1, 256, 256) from uint8 frames (B, H, W) on any device."""
    p1, p99 = percentiles(frames)
    spread = torch.where(p99 > p1, p99 - p1, torch.ones_like(p1))
    row1, row2, col1, col2 = geometry.crop
    image = (frames[:, None, row1:row2, col1:col2].float() - p1[:, None, None, None]) / spread[:, None, None, None]
    top, bottom, left, right = geometry.pad
    if top or bottom or left or right:
        image = F.pad(image, (left, right, top, bottom))
    return F.interpolate(image, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)


def decode(heatmap: torch.Tensor, row_offset: torch.Tensor, col_offset: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Keypoints float32 (B, K, 3) [x = column, y = row, likelihood] from (B, K, h, w) maps."""
    batch, keypoints, height, width = heatmap.shape
    stride = INPUT_SIZE / width
    flat = heatmap.float().reshape(batch, keypoints, height * width)
    peak, cell = flat.max(dim=-1)
    d_row = row_offset.float().reshape(flat.shape).gather(-1, cell[..., None])[..., 0]
    d_col = col_offset.float().reshape(flat.shape).gather(-1, cell[..., None])[..., 0]
    scale_offset = float(OFFSET_SCALE)
    row = (d_row * scale_offset + torch.div(cell, width, rounding_mode="floor").float()) * stride
    col = (d_col * scale_offset + (cell % width).float()) * stride
    row1, _, col1, _ = geometry.crop
    top, _, left, _ = geometry.pad
    scale = float(geometry.scale)
    return torch.stack([col * scale - left + col1, row * scale - top + row1, torch.sigmoid(peak)], dim=-1)
