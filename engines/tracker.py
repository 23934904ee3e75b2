"""The tracker engine the pipeline calls: uint8 frames in, Facemap keypoints out.

One ``Tracker`` does the shared work (pre-processing, decoding, checks, timings) around one of two
network runtimes:

- "onnx" (default): ONNX Runtime's CPU provider on the network exported from the torch module.
  The export (TorchScript-based ``torch.onnx.export(dynamo=False)``; the dynamo exporter needs the
  onnxscript package) is cached on disk, keyed by the state file's sha256, so later starts skip it.
- "torch": the FMnet module itself under ``torch.inference_mode``.
"""
from __future__ import annotations

import io
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort
import torch

from .bodyparts import BODYPARTS
from .decode import decode
from .model_files import TrackerModel, load_model
from .preprocess import INPUT_SIZE, Geometry, make_geometry, preprocess

ENGINES = ("onnx", "torch")
ONNX_OPSET = 17
ONNX_EXPORT_VERSION = 1  # part of the cache key: bump when the export itself changes
_INPUT_NAME = "image"
_OUTPUT_NAMES = ["heatmap", "row_offset", "col_offset"]
_PROVIDERS = ["CPUExecutionProvider"]

Outputs = tuple[np.ndarray, np.ndarray, np.ndarray]


class TrackerError(Exception):
    """A tracker cannot be built or cannot process these frames; the message is one line for the user."""


class _Network(Protocol):
    runtime: str

    def __call__(self, images: np.ndarray) -> Outputs: ...


class Tracker:
    """Runs Facemap's tracker on uint8 grayscale frames; build one with ``load_tracker``."""

    bodyparts: tuple[str, ...] = BODYPARTS

    def __init__(
        self,
        engine: str,
        network: _Network,
        model: TrackerModel,
        bbox: tuple[int, int, int, int] | None,
        threads: int,
    ) -> None:
        self.engine = engine
        self.model = model
        self.bbox = bbox
        self.threads = threads
        self._network = network
        self._geometry: Geometry | None = None
        self.last_timings_ms: dict[str, float] = {"preprocess": 0.0, "network": 0.0, "decode": 0.0}

    def infer(self, frames: np.ndarray) -> np.ndarray:
        """Keypoints float32 (B, 15, 3) as [x = column, y = row, likelihood] in frame pixels.

        ``frames``: uint8 (H, W) or (B, H, W). Each frame is normalized with its own percentiles.
        """
        frames = self._check_frames(frames)
        geometry = self._geometry_for(frames.shape[1:])
        t0 = time.perf_counter()
        images = np.stack([preprocess(frame, geometry) for frame in frames])[:, None]
        t1 = time.perf_counter()
        heatmap, row_offset, col_offset = self._network(images)
        t2 = time.perf_counter()
        keypoints = decode(heatmap, row_offset, col_offset, geometry)
        t3 = time.perf_counter()
        self.last_timings_ms = {
            "preprocess": (t1 - t0) * 1e3,
            "network": (t2 - t1) * 1e3,
            "decode": (t3 - t2) * 1e3,
        }
        return keypoints

    def describe(self) -> dict:
        """Plain-type description for the stream's metadata."""
        identity = self.model.identity()
        return {
            "engine": self.engine,
            "runtime": self._network.runtime,
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
        return frames

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


def load_tracker(
    engine: str = "onnx",
    model: str | Path | None = None,
    bbox: tuple[int, int, int, int] | None = None,
    threads: int = 0,
) -> Tracker:
    """A ready tracker.

    engine: "onnx" or "torch". model: a Facemap state file, a folder holding a model, or None for
    the bundled default. bbox: (row1, row2, col1, col2) crop in frame pixels, Facemap's order; None
    uses the whole frame. threads: intra-op threads, 0 for the runtime's default.
    Raises TrackerError (bad arguments) or model_files.ModelFileError (bad model files).
    """
    if engine not in ENGINES:
        raise TrackerError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise TrackerError(f"threads must be an integer >= 0 (0 = runtime default), got {threads!r}")
    bbox = _check_bbox(bbox)
    tracker_model = load_model(model)
    runtime = _OnnxNetwork if engine == "onnx" else _TorchNetwork
    return Tracker(engine, runtime(tracker_model, threads), tracker_model, bbox, threads)


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


class _TorchNetwork:
    """FMnet in eval mode under inference_mode; ``threads`` > 0 sets torch's process-wide thread count."""

    def __init__(self, model: TrackerModel, threads: int) -> None:
        if threads > 0:
            torch.set_num_threads(threads)
        self.runtime = f"torch {torch.__version__}"
        self._net = model.build()

    def __call__(self, images: np.ndarray) -> Outputs:
        with torch.inference_mode():
            heatmap, row_offset, col_offset = self._net(torch.from_numpy(images))
        return heatmap.numpy(), row_offset.numpy(), col_offset.numpy()


class _OnnxNetwork:
    """ONNX Runtime CPU session on the exported network (dynamic batch, 1x256x256 frames)."""

    def __init__(self, model: TrackerModel, threads: int) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.runtime = f"onnxruntime {ort.__version__}"
        self.path = onnx_cache_path(model)
        if self.path.is_file():
            try:
                self._session = ort.InferenceSession(str(self.path), options, providers=_PROVIDERS)
                return
            except Exception:  # a damaged cache file: export again
                self.path.unlink(missing_ok=True)
        source = _export_to_cache(model, self.path)
        self._session = ort.InferenceSession(source, options, providers=_PROVIDERS)

    def __call__(self, images: np.ndarray) -> Outputs:
        heatmap, row_offset, col_offset = self._session.run(_OUTPUT_NAMES, {_INPUT_NAME: images})
        return heatmap, row_offset, col_offset


def onnx_cache_dir() -> Path:
    """$XDG_CACHE_HOME/facestream, else ~/.cache/facestream."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "facestream"


def onnx_cache_path(model: TrackerModel) -> Path:
    return onnx_cache_dir() / f"fmnet-{model.sha256}-opset{ONNX_OPSET}-v{ONNX_EXPORT_VERSION}.onnx"


def _export_to_cache(model: TrackerModel, path: Path) -> str | bytes:
    """Export the network and write it to ``path`` atomically; the path, or the bytes if unwritable."""
    data = export_onnx(model)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as out:
            tmp = out.name
            out.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        warnings.warn(f"could not cache the ONNX export at {path} ({exc}); the next start exports again")
        return data
    return str(path)


def export_onnx(model: TrackerModel) -> bytes:
    """The network as ONNX bytes: input "image" (B, 1, 256, 256), three (B, 15, 64, 64) outputs."""
    net = model.build()
    buffer = io.BytesIO()
    example = torch.zeros(1, 1, INPUT_SIZE, INPUT_SIZE)
    batch_axis = {0: "batch"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its own deprecation
        try:
            torch.onnx.export(
                net,
                (example,),
                buffer,
                dynamo=False,
                input_names=[_INPUT_NAME],
                output_names=_OUTPUT_NAMES,
                opset_version=ONNX_OPSET,
                dynamic_axes={name: batch_axis for name in (_INPUT_NAME, *_OUTPUT_NAMES)},
            )
        except Exception as exc:
            first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise TrackerError(
                f"ONNX export failed with torch {torch.__version__} ({first_line}); use engine 'torch'"
            ) from exc
    return buffer.getvalue()
