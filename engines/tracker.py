"""The tracker the pipeline calls: uint8 frames in, Facemap keypoints out, on the fastest engine here.

One ``Tracker`` does the shared work (checks, geometry, timings) around one engine:

- "onnx-int8": ONNX Runtime on the CPU, int8 (``quantize``): the CPU default, the fastest CPU
  engine that keeps in-view keypoints within 0.5 px (mean) of fp32 (0.19 px measured).
- "onnx": ONNX Runtime on the CPU, fp32 (``onnx_engine``).
- "torch": PyTorch on the CPU, fp32: the reference (``torch_engine``).
- "cuda": PyTorch on an NVIDIA GPU, fp16, CUDA graphs, pinned memory (``torch_engine``).
- "tensorrt" / "tensorrt-int8": a TensorRT engine built for this GPU (``tensorrt_engine``).
- "auto": TensorRT where it and a GPU are present, else CUDA where a GPU is, else onnx-int8;
  ``describe()["reason"]`` says why.

The CPU engines pre-process and decode in numpy beside the network; the GPU engines do both on
the GPU so that only keypoints cross the bus.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from .bodyparts import BODYPARTS
from .decode import decode
from .engine_names import CPU_DEFAULT, ENGINES
from .model_files import TrackerModel, load_model
from .onnx_engine import ExportError, OnnxNetwork, onnx_model_path
from .preprocess import INPUT_SIZE, Geometry, make_geometry, preprocess



class TrackerError(Exception):
    """A tracker cannot be built or cannot process these frames; the message is one line for the user."""


class _Engine(Protocol):
    runtime: str

    def run(self, frames: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, dict[str, float]]: ...


class _HostEngine:
    """A CPU network between numpy pre-processing and numpy decoding."""

    def __init__(self, network: OnnxNetwork) -> None:
        self.network = network
        self.runtime = network.runtime

    def run(self, frames: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, dict[str, float]]:
        t0 = time.perf_counter()
        images = np.stack([preprocess(frame, geometry) for frame in frames])[:, None]
        t1 = time.perf_counter()
        heatmap, row_offset, col_offset = self.network(images)
        t2 = time.perf_counter()
        keypoints = decode(heatmap, row_offset, col_offset, geometry)
        t3 = time.perf_counter()
        return keypoints, {"preprocess": (t1 - t0) * 1e3, "network": (t2 - t1) * 1e3, "decode": (t3 - t2) * 1e3}


class Tracker:
    """Runs Facemap's tracker on uint8 grayscale frames; build one with ``load_tracker``."""

    bodyparts: tuple[str, ...] = BODYPARTS

    def __init__(
        self,
        engine: str,
        backend: _Engine,
        model: TrackerModel,
        bbox: tuple[int, int, int, int] | None,
        threads: int,
        reason: str,
    ) -> None:
        self.engine = engine
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
            "bbox": None if self.bbox is None else list(self.bbox),
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
            height, width = frame_shape
            if self.bbox is not None:
                row1, row2, col1, col2 = self.bbox
                if row2 > height or col2 > width:
                    raise TrackerError(
                        f"bbox rows {row1}:{row2}, cols {col1}:{col2} lies outside the {height}x{width} "
                        "(rows x cols) frame; the order is (row1, row2, col1, col2)"
                    )
            self._geometry = make_geometry((height, width), self.bbox)
        return self._geometry


def default_threads() -> int:
    """CPU inference threads when none are asked for: one per core this process may use, at
    most 4 (the network is too small to gain from more). Capture and publishing need little
    CPU (measured: 4-5 % and 2 % of a core at 80 frames/s), and idle pool threads sleep rather
    than spin, so the whole machine goes to inference: on 2 cores, 82 frames/s with 2 threads
    against 55 with 1 (docs/benchmarks.md)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores))


def choose_engine() -> tuple[str, str]:
    """The engine "auto" stands for here, and why."""
    from .tensorrt_engine import available

    missing = available()
    if missing is None:
        return "tensorrt", "auto: TensorRT and a CUDA GPU are present"
    if torch.cuda.is_available():
        return "cuda", f"auto: a CUDA GPU is present but {missing}"
    return CPU_DEFAULT, f"auto: no CUDA GPU ({'PyTorch has no CUDA support' if torch.version.cuda is None else 'none visible'})"


def load_tracker(
    engine: str = "auto",
    model: str | Path | None = None,
    bbox: tuple[int, int, int, int] | None = None,
    threads: int = 0,
    calibration: str | Path | None = None,
) -> Tracker:
    """A ready tracker.

    engine: one of ``ENGINES``. model: a Facemap state file, a folder holding a model, or None for
    the bundled default. bbox: (row1, row2, col1, col2) crop in frame pixels, Facemap's order; None
    uses the whole frame. threads: CPU intra-op threads, 0 for ``default_threads()``.
    calibration: a video whose frames calibrate the int8 engines (default: the synthetic face).
    Raises TrackerError (bad arguments, an engine that cannot run here) or
    model_files.ModelFileError (bad model files).
    """
    if engine not in ENGINES:
        raise TrackerError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise TrackerError(f"threads must be an integer >= 0 (0 = one per core), got {threads!r}")
    bbox = _check_bbox(bbox)
    tracker_model = load_model(model)
    reason = "asked for"
    if engine == "auto":
        engine, reason = choose_engine()
    threads = threads or default_threads()
    try:
        backend = _build(engine, tracker_model, bbox, threads, calibration)
    except ExportError as exc:
        raise TrackerError(str(exc)) from None
    return Tracker(engine, backend, tracker_model, bbox, threads, reason)


def _build(engine: str, model: TrackerModel, bbox, threads: int, calibration) -> _Engine:
    if engine == "onnx":
        return _HostEngine(OnnxNetwork(onnx_model_path(model), threads, "fp32"))
    if engine == "onnx-int8":
        from .quantize import int8_model_path

        return _HostEngine(OnnxNetwork(int8_model_path(model, calibration, bbox), threads, "int8"))
    from .torch_engine import TorchTracker

    if engine == "torch":
        return TorchTracker(model, "cpu", half=False, graphs=False, threads=threads)
    if not torch.cuda.is_available():
        raise TrackerError(f"engine {engine!r} needs a CUDA GPU and none is visible to PyTorch; use 'auto' or 'onnx-int8'")
    if engine == "cuda":
        return TorchTracker(model, "cuda", half=True, graphs=True)
    from .tensorrt_engine import TensorRTTracker, available

    missing = available()
    if missing is not None:
        raise TrackerError(f"engine {engine!r} cannot run here: {missing}; use 'cuda' or 'auto'")
    return TensorRTTracker(model, "int8" if engine == "tensorrt-int8" else "fp16")


def _check_bbox(bbox: object) -> tuple[int, int, int, int] | None:
    if bbox is None:
        return None
    try:
        values = tuple(bbox)  # type: ignore[arg-type]
    except TypeError:
        values = ()
    integers = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
    if len(values) != 4 or not integers:
        raise TrackerError(f"bbox must be 4 integers (row1, row2, col1, col2), got {bbox!r}")
    row1, row2, col1, col2 = (int(v) for v in values)
    if min(row1, col1) < 0:
        raise TrackerError(f"bbox {list(values)} has a negative start; rows and columns start at 0")
    for axis, start, stop in (("rows", row1, row2), ("cols", col1, col2)):
        if stop <= start:
            raise TrackerError(
                f"bbox {axis} {start}:{stop} are empty or reversed; give (row1, row2, col1, col2), "
                "row1 < row2, col1 < col2"
            )
    return row1, row2, col1, col2
