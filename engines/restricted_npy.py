"""Reading a ``.npy`` file of pickled Python objects without letting it run code.

Facemap saves some of its files (the refinement GUI's labelled frames) with ``np.save`` of a
dict, which numpy stores as a pickle; ``np.load(allow_pickle=True)`` would run whatever a
crafted file asks for. Here the pickle is read by an unpickler that can build only numpy
arrays, dtypes and scalars from plain containers (the "restricting globals" recipe of
Python's ``pickle`` documentation); anything else is refused before it runs.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

_ALLOWED = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype")}


class UnsafeFileError(ValueError):
    """The file asks to build something other than numpy arrays and plain containers."""


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafeFileError(f"it asks to run {module}.{name} (only numpy arrays and plain containers are read)")


def load_object_npy(path: str | Path):
    """The object a ``.npy`` file holds: a plain array as ``np.load`` gives it, or, for an
    object array (``np.save`` of a dict or list), what it holds, rebuilt without running code."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        if not dtype.hasobject:
            return np.load(path, allow_pickle=False)
        array = _ArraysOnly(f).load()
    if not isinstance(array, np.ndarray):
        raise UnsafeFileError(f"it holds a {type(array).__name__}, not an array")
    return array.item() if array.shape == () else array
