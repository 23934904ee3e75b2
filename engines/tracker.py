"""The tracker the pipeline calls: uint8 frames in, Facemap keypoints out, on the fastest engine here.

One ``Tracker`` does the shared work (checks, geometry, timings) around one engine from the
table in ``registry`` (ONNX Runtime int8 or fp32 and PyTorch on the CPU; PyTorch CUDA and TensorRT
on an NVIDIA GPU); ``auto`` takes the first there that runs here and ``describe()["reason"]``
says why. The CPU engines pre-process and decode in numpy beside the network; the GPU engines do
both on the GPU so that only keypoints cross the bus.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .bodyparts import BODYPARTS
from .model_files import TrackerModel, load_model
from .onnx_engine import ExportError
from .preprocess import INPUT_SIZE, BboxError, Geometry, check_bbox, make_geometry
from .registry import AUTO, ENGINES, NAMES, Backend, BuildOptions, choose_auto

if TYPE_CHECKING:
    from .quantize import CalibrationSource


class TrackerError(Exception):
    """A tracker cannot be built or cannot process these frames; the message is one line for the user."""


class Tracker:
    """Runs Facemap's tracker on uint8 grayscale frames; build one with ``load_tracker``."""

    bodyparts: tuple[str, ...] = BODYPARTS

    def __init__(
        self,
        engine: str,
        backend: Backend,
        model: TrackerModel,
        bbox: tuple[int, int, int, int] | None,
        threads: int,
        reason: str,
        calibration: str | None = None,
    ) -> None:
        self.engine = engine
        self.calibration = calibration
        self.model = model
        self.bbox = bbox
        self.threads = threads
        self.reason = reason
        self._backend = backend
        self._geometry: Geometry | None = None
        self.last_timings_ms: dict[str, float] = {"preprocess": 0.0, "network": 0.0, "decode": 0.0}

    def infer(self, frames: np.ndarray) -> np.ndarray:
        """Keypoints float32 (B, 15, 3) as [x = column, y = row, likelihood] in frame pixels.

        ``frames``: uint8 (H, W) or (B, H, W). Each frame is normalized with its own percentiles.
        """
        frames = self._check_frames(frames)
        keypoints, self.last_timings_ms = self._backend.run(frames, self._geometry_for(frames.shape[1:]))
        return keypoints

    def describe(self) -> dict:
        """Plain-type description for the stream's metadata."""
        identity = self.model.identity()
        return {
            "engine": self.engine,
            "reason": self.reason,
            "runtime": self._backend.runtime,
            "threads": self.threads,
            "model": identity["name"],
            "model_path": identity["path"],
            "sha256": identity["sha256"],
            "channels": identity["channels"],
            "trained": identity["trained"],
            "kind": identity["kind"],
            "teacher": identity.get("teacher"),
            "bbox": None if self.bbox is None else list(self.bbox),
            "calibration": self.calibration,
            "input_size": [INPUT_SIZE, INPUT_SIZE],
            "bodyparts": list(self.bodyparts),
        }

    @staticmethod
    def _check_frames(frames: np.ndarray) -> np.ndarray:
        if not isinstance(frames, np.ndarray):
            raise TrackerError(f"frames must be a numpy uint8 array, got a {type(frames).__name__}")
        if frames.dtype != np.uint8 or frames.ndim not in (2, 3):
            raise TrackerError(
                f"frames must be uint8 grayscale (H, W) or (B, H, W), got {frames.dtype} of shape {frames.shape}"
            )
        if frames.ndim == 2:
            frames = frames[None]
        if 0 in frames.shape:
            raise TrackerError(f"frames must not be empty, got shape {frames.shape}")
        return np.ascontiguousarray(frames)

    def _geometry_for(self, frame_shape: tuple[int, int]) -> Geometry:
        if self._geometry is None or self._geometry.frame_shape != tuple(frame_shape):
            try:
                self._geometry = make_geometry(tuple(frame_shape), self.bbox)
            except BboxError as exc:
                raise TrackerError(str(exc)) from None
        return self._geometry


def default_threads() -> int:
    """CPU inference threads when none are asked for: one per core this process may use, at
    most 4 (the network is too small to gain from more). Capture and publishing need little
    CPU (measured: 4-5 % and 2 % of a core at 80 frames/s), and idle pool threads sleep rather
    than spin, so the whole machine goes to inference: on 2 cores, 82 frames/s with 2 threads
    against 55 with 1 (docs/benchmarks.md)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores))


def load_tracker(
    engine: str = AUTO,
    model: str | Path | None = None,
    bbox: tuple[int, int, int, int] | None = None,
    threads: int = 0,
    calibration: "CalibrationSource | None" = None,
) -> Tracker:
    """A ready tracker.

    engine: one of ``registry.NAMES``. model: a Facemap state file, a folder holding a model, a
    student file (``*.npz``, ``student.py``), a name (``facemap``, ``student``), or None for the bundled default. bbox: (row1, row2, col1, col2) crop in frame pixels, Facemap's
    order; None uses the whole frame. threads: CPU intra-op threads, 0 for ``default_threads()``.
    calibration: the frames an int8 engine is calibrated on (``quantize.VideoCalibration``,
    ``camera_adapters.calibration.source_calibration(spec)`` or
    ``camera_adapters.registry.default_calibration()``); int8 engines refuse to build without.
    Raises TrackerError (bad arguments, an engine that cannot run here) or
    model_files.ModelFileError (bad model files).
    """
    if engine not in NAMES:
        raise TrackerError(f"unknown engine {engine!r}; choose one of {', '.join(NAMES)}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise TrackerError(f"threads must be an integer >= 0 (0 = one per core), got {threads!r}")
    try:
        bbox = check_bbox(bbox)
    except BboxError as exc:
        raise TrackerError(str(exc)) from None
    tracker_model = load_model(model)
    reason = "asked for"
    if engine == AUTO:
        engine, reason = choose_auto(student=tracker_model.student is not None)
    kind = ENGINES[engine]
    missing = kind.missing()
    if missing is not None:
        raise TrackerError(f"engine {engine!r} {missing}; use {AUTO!r} or a CPU engine such as 'onnx-int8'")
    if kind.calibrated and calibration is None:
        raise TrackerError(f"engine {engine!r} needs frames to calibrate on: a video of the rig "
                           "(quantize.VideoCalibration) or the synthetic face (registry.default_calibration())")
    threads = threads or default_threads()
    try:
        backend = kind.build(tracker_model, BuildOptions(threads, bbox, calibration))
    except ExportError as exc:
        raise TrackerError(str(exc)) from None
    return Tracker(engine, backend, tracker_model, bbox, threads, reason,
                   calibration.key() if kind.calibrated else None)
