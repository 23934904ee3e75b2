"""Facemap's motion SVD, live: motion energy of a region projected onto spatial components.

As Facemap's ``process.py`` does it: the region is binned spatially (the mean of each
``bin`` x ``bin`` block, the remainder of a row or column left out), motion energy is the
absolute difference of two consecutive binned frames, the mean motion energy is subtracted
and the result projected onto the top spatial singular vectors of motion energy ("motSVD").

Facemap learns its components from frames sampled across the whole video; live, they are
learned from the run's first ``learn_seconds`` (at least ``components`` + 1 frames, at most
``MAX_LEARN_FRAMES``), by an SVD
in a background thread, so no frame waits for it; until they are ready ``step`` returns None
(and frame messages carry no ``motion_svd``). Or they come from a file (``save``/``load``:
.npz with ``components``, ``mean``, ``bin``, ``region``), learned by an earlier run.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facestream.streamer.config import ConfigError

MAX_LEARN_FRAMES = 1000  # Facemap's chunk of frames for one SVD


class MotionSVDError(ConfigError):
    """A region or components that cannot be used (a bad file, another region or binning); one line."""


@dataclass(frozen=True)
class Components:
    """Spatial components (pixels, n) of binned motion energy, its mean (pixels,), and where
    they apply: ``region`` [row1, row2, col1, col2] of the frame, ``bin``."""

    components: np.ndarray
    mean: np.ndarray
    region: tuple[int, int, int, int]
    bin: int

    def save(self, path: str | Path) -> None:
        with open(path, "wb") as f:  # np.savez would add .npz to a name without it
            np.savez(f, components=self.components, mean=self.mean, region=np.asarray(self.region), bin=self.bin)

    @classmethod
    def load(cls, path: str | Path) -> "Components":
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in ("components", "mean", "region", "bin")}
        except FileNotFoundError:
            raise MotionSVDError(f"motion SVD components file not found: {path}") from None
        except KeyError as e:
            raise MotionSVDError(f"motion SVD components file {path} has no {e.args[0]}") from None
        except (OSError, ValueError) as e:
            raise MotionSVDError(f"motion SVD components file {path} is not a readable .npz: {e}") from None
        u, mean, region = arrays["components"], arrays["mean"], arrays["region"]
        if u.ndim != 2 or mean.shape != (u.shape[0],) or region.shape != (4,) or arrays["bin"].shape != ():
            raise MotionSVDError(f"motion SVD components file {path}: components must be (pixels, n), mean (pixels,), "
                                 "region 4 numbers and bin one")
        return cls(u.astype(np.float32), mean.astype(np.float32), tuple(int(v) for v in region), int(arrays["bin"]))


def binned_size(region: tuple[int, int, int, int], bin: int) -> tuple[int, int]:
    """(rows, columns) of the binned region."""
    r1, r2, c1, c2 = region
    return (r2 - r1) // bin, (c2 - c1) // bin


def spatial_bin(pixels: np.ndarray, region: tuple[int, int, int, int], bin: int) -> np.ndarray:
    """The region's block means, float32, flattened (Facemap's ``spatial_bin``)."""
    r1, r2, c1, c2 = region
    rows, cols = binned_size(region, bin)
    crop = pixels[r1:r1 + rows * bin, c1:c1 + cols * bin]
    crop = crop.astype(np.float32)
    if bin == 1:
        return crop.ravel()
    # INTER_AREA at an integer factor is exactly the block mean
    return cv2.resize(crop, (cols, rows), interpolation=cv2.INTER_AREA).ravel()


def learn_components(motion: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean (pixels,) and the top ``n`` spatial singular vectors (pixels, n) of motion
    energy (frames, pixels), through the frames' Gram matrix as Facemap's ``svdecon`` does."""
    mean = motion.mean(axis=0)
    x = motion - mean
    values, vectors = np.linalg.eigh(x @ x.T)
    keep = np.argsort(values)[::-1][:n]
    s = np.sqrt(np.maximum(values[keep], 1e-12))
    return mean, ((x.T @ vectors[:, keep]) / s).astype(np.float32)


class MotionSVD:
    """One camera's motion SVD: ``step(pixels)`` each frame, in order."""

    def __init__(self, frame_shape: tuple[int, int], region: tuple[int, int, int, int] | None, bin: int,
                 n_components: int, learn_seconds: float, components: Components | None = None, save: str = ""):
        """``region`` [row1, row2, col1, col2] of the frame (None: all of it); ``components``
        loaded from a file, else learned from the first ``learn_seconds`` and written to
        ``save`` if it is named."""
        height, width = frame_shape[:2]
        region = (0, height, 0, width) if region is None else tuple(region)
        if region[1] > height or region[3] > width:
            raise MotionSVDError(f"motion SVD region {list(region)} (rows, columns) is not inside the {width}x{height} frame")
        rows, cols = binned_size(region, bin)
        if rows < 1 or cols < 1:
            raise MotionSVDError(f"motion SVD region {list(region)} is smaller than one {bin}x{bin} bin")
        if components is None and rows * cols < n_components:
            raise MotionSVDError(f"motion SVD region {list(region)} binned by {bin} has {rows * cols} pixels, "
                                 f"fewer than the {n_components} components asked for")
        if components is not None and (components.region != tuple(region) or components.bin != bin
                                       or components.components.shape[0] != rows * cols):
            raise MotionSVDError(
                f"motion SVD components were learned on region {list(components.region)} binned by {components.bin}, "
                f"not on this camera's region {list(region)} binned by {bin}")
        self.region, self.bin = tuple(region), bin
        self.n_components = n_components if components is None else components.components.shape[1]
        self.learn_ns = round(learn_seconds * 1e9)
        self.save_path = save
        self.components: Components | None = None
        self._projection: tuple[np.ndarray, np.ndarray] | None = None  # mean, components as rows (n, pixels)
        if components is not None:
            self._use(components)
        self.source = "file" if components is not None else "learned"
        self.error: str | None = None  # why learning failed (saving the file), one line
        self._previous: np.ndarray | None = None
        self._learning: list[np.ndarray] = []
        self._t_first: int | None = None
        self._thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return self.components is not None

    def step(self, pixels: np.ndarray, t_ns: int) -> np.ndarray | None:
        """This frame's motion SVD (n_components,), or None while components are being learned
        (and for the first frame, which has no motion yet)."""
        binned = spatial_bin(pixels, self.region, self.bin)
        previous, self._previous = self._previous, binned
        if previous is None:
            self._t_first = t_ns
            return None
        motion = np.abs(binned - previous)
        projection = self._projection
        if projection is not None:
            mean, rows = projection
            # einsum, not BLAS: OpenBLAS threads a product this size, and on a busy CPU its
            # threads cost tens of milliseconds now and then; this is one thread, 0.2 ms
            return np.einsum("ji,i->j", rows, motion - mean)
        if self._thread is None:
            self._learning.append(motion)
            enough = t_ns - self._t_first >= self.learn_ns and len(self._learning) > self.n_components
            if enough or len(self._learning) >= MAX_LEARN_FRAMES:
                self._thread = threading.Thread(target=self._learn, name="facestream-motion-svd", daemon=True)
                self._thread.start()
        return None

    def _learn(self) -> None:
        motion = np.stack(self._learning)
        self._learning = []
        try:
            mean, u = learn_components(motion, self.n_components)
        except (np.linalg.LinAlgError, MemoryError) as e:
            self.error = f"motion SVD components could not be learned: {e}"
            return
        learned = Components(u, mean, self.region, self.bin)
        if self.save_path:
            try:
                learned.save(self.save_path)
            except OSError as e:
                self.error = f"cannot save motion SVD components to {self.save_path}: {e.strerror or e}"
        self._use(learned)

    def _use(self, components: Components) -> None:
        self._projection = components.mean, np.ascontiguousarray(components.components.T)
        self.components = components

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for components being learned; whether they are ready."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.ready

    def describe(self) -> dict:
        """For ``meta``: the region, binning, components and whether they are ready."""
        return {"region": list(self.region), "bin": self.bin, "components": self.n_components,
                "source": self.source, "ready": self.ready, "error": self.error}
