"""Keypoints files in Facemap's layout, written as rows arrive.

Facemap (and its users' scripts) read ``/Facemap/<bodypart>/{x, y, likelihood}``, float32 of
shape (nframes,). facestream's own columns (frame ids, timestamps, predicted activity) go in a
group ``/facestream`` beside it, so the Facemap part stays exactly Facemap's.

Every dataset is chunked and resizable; ``append`` grows them all together and ``flush``
makes what is written readable even if the process is killed afterwards.

HDF5 takes the file's space a whole chunk at a time: the first row of every ``CHUNK_ROWS``
allocates a chunk of every dataset at once (``chunk_set_bytes``, 740 KB with 128 activity
columns), and the rows after it fill that space. ``growth_bytes`` says what appending rows
will take, and ``reserve`` makes the disk set that much aside past the file's end (Linux
``fallocate``, keeping the file's size), so the recorder sees a full disk coming instead of
failing in the middle of a write, even when another program fills the disk. HDF5 that fails
in the middle of a write leaves a file that does not open (``actual len exceeds EOA``).
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from facestream.engines.bodyparts import BODYPARTS

CHUNK_ROWS = 1024
_CHUNK = CHUNK_ROWS
_KEEP_SIZE = 1  # FALLOC_FL_KEEP_SIZE: allocate past the end without changing the file's size
_CANNOT_RESERVE = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL, errno.ENODEV}

try:
    _fallocate = ctypes.CDLL(None, use_errno=True).fallocate
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    _fallocate.restype = ctypes.c_int
except Exception:  # not Linux (no fallocate, or no C library to load this way)
    _fallocate = None


def chunk_set_bytes(columns: dict[str, tuple[tuple[int, ...], str]]) -> int:
    """The bytes of one chunk of every dataset of a file with these extra ``columns``: what the
    file grows by when its rows pass a multiple of ``CHUNK_ROWS``."""
    keypoints = len(BODYPARTS) * 3 * np.dtype("float32").itemsize
    own = sum(int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize for shape, dtype in columns.values())
    return CHUNK_ROWS * (keypoints + own)


def new_chunks(rows: int, n: int) -> int:
    """How many chunks of each dataset appending ``n`` rows to ``rows`` allocates."""
    def chunks(r: int) -> int:
        return -(-r // CHUNK_ROWS)  # rows r take ceil(r / CHUNK_ROWS) chunks

    return chunks(rows + n) - chunks(rows)


class PoseFile:
    def __init__(self, path: str | Path, columns: dict[str, tuple[tuple[int, ...], str]]):
        """Create ``path`` (it must not exist). ``columns``: facestream's extra columns,
        name -> (shape of one row, dtype)."""
        self.path = Path(path)
        self._f = h5py.File(self.path, "w-")
        self.rows = 0
        self.chunk_set_bytes = chunk_set_bytes(columns)
        self.reserved = False  # whether space past the file's end is set aside on the disk
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

    def growth_bytes(self, n: int) -> int:
        """The bytes of new chunks that appending ``n`` rows allocates (0 while they fit in the
        chunks already there)."""
        return new_chunks(self.rows, n) * self.chunk_set_bytes

    @property
    def room(self) -> int:
        """Rows that still fit in the chunks already allocated."""
        return -self.rows % CHUNK_ROWS

    def reserve(self, nbytes: int) -> bool:
        """Have the disk hold every byte of the file up to ``nbytes`` past its end, so that
        writing there cannot fail for want of space. False where the filesystem cannot (nothing
        reserved); OSError (ENOSPC) where the disk has not that much free."""
        if _fallocate is None:
            return False
        try:
            fd = self._f.id.get_vfd_handle()
        except Exception:  # another HDF5 file driver than the default one
            return False
        end = max(os.fstat(fd).st_size, self._f.id.get_filesize()) + nbytes
        if _fallocate(fd, _KEEP_SIZE, 0, end) != 0:
            code = ctypes.get_errno()
            if code in _CANNOT_RESERVE:
                return False
            raise OSError(code, os.strerror(code), str(self.path))
        self.reserved = True
        return True

    def set_attrs(self, **attrs: Any) -> None:
        """facestream's metadata, as JSON strings on the /facestream group."""
        for key, value in attrs.items():
            self._f["facestream"].attrs[key] = json.dumps(value)

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()
            if self.reserved:  # give back what is still set aside past the end (shrinking a file frees it)
                try:
                    size = self.path.stat().st_size
                    os.truncate(self.path, size + 1)
                    os.truncate(self.path, size)
                except OSError:
                    pass
