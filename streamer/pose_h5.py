"""Keypoints files in Facemap's layout, written as rows arrive.

Facemap (and its users' scripts) read ``/Facemap/<bodypart>/{x, y, likelihood}``, float32 of
shape (nframes,). facestream's own columns (frame ids, timestamps, predicted activity) go in a
group ``/facestream`` beside it, so the Facemap part stays exactly Facemap's.

Every dataset is chunked and resizable; ``append`` grows them all together and ``flush``
makes what is written readable even if the process is killed afterwards.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from facestream.engines.bodyparts import BODYPARTS

_CHUNK = 1024


class PoseFile:
    def __init__(self, path: str | Path, columns: dict[str, tuple[tuple[int, ...], str]]):
        """Create ``path`` (it must not exist). ``columns``: facestream's extra columns,
        name -> (shape of one row, dtype)."""
        self.path = Path(path)
        self._f = h5py.File(self.path, "w-")
        self.rows = 0
        self._keypoint_sets = []
        for bp in BODYPARTS:
            group = self._f.create_group(f"Facemap/{bp}")
            self._keypoint_sets.append([self._dataset(group, k, (), "float32") for k in ("x", "y", "likelihood")])
        own = self._f.create_group("facestream")
        self._columns = {name: self._dataset(own, name, shape, dtype) for name, (shape, dtype) in columns.items()}

    @staticmethod
    def _dataset(group: h5py.Group, name: str, row: tuple[int, ...], dtype: str) -> h5py.Dataset:
        return group.create_dataset(name, shape=(0, *row), maxshape=(None, *row), chunks=(_CHUNK, *row), dtype=dtype)

    def append(self, keypoints: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        """Add rows: ``keypoints`` (n, 15, 3) [x, y, likelihood]; ``columns`` each (n, *row shape)."""
        n = len(keypoints)
        if n == 0:
            return
        end = self.rows + n
        for b, datasets in enumerate(self._keypoint_sets):
            for j, ds in enumerate(datasets):
                ds.resize((end,))
                ds[self.rows:end] = keypoints[:, b, j]
        for name, ds in self._columns.items():
            ds.resize((end, *ds.shape[1:]))
            ds[self.rows:end] = columns[name]
        self.rows = end

    def set_attrs(self, **attrs: Any) -> None:
        """facestream's metadata, as JSON strings on the /facestream group."""
        for key, value in attrs.items():
            self._f["facestream"].attrs[key] = json.dumps(value)

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()
