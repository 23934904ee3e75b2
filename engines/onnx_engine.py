"""The tracker network as ONNX, and ONNX Runtime sessions on it.

The export (TorchScript-based ``torch.onnx.export(dynamo=False)``; the dynamo exporter needs the
onnxscript package) is cached on disk, keyed by the state file's sha256, so later starts skip it.
Pre- and post-processing stay beside the graph, in numpy: measured on this project's 2-core CPU
they cost 1.2 ms and 0.2 ms per 640x480 frame against 9-23 ms for the network, and numpy keeps
Facemap's exact float32 arithmetic (docs/facemap-compatibility.md), which an in-graph resize and
quantile would not.
"""
from __future__ import annotations

import io
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from .decode import decode
from .preprocess import INPUT_SIZE, Geometry, preprocess

if TYPE_CHECKING:
    from .model_files import TrackerModel

ONNX_OPSET = 17
ONNX_EXPORT_VERSION = 1  # part of the cache key: bump when the export itself changes
INPUT_NAME = "image"
OUTPUT_NAMES = ["heatmap", "row_offset", "col_offset"]
_PROVIDERS = ["CPUExecutionProvider"]

Outputs = tuple[np.ndarray, np.ndarray, np.ndarray]


class ExportError(Exception):
    """The network could not be exported or converted; the message is one line."""


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/facestream, else ~/.cache/facestream: exported and built engines."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "facestream"


def onnx_cache_path(model: TrackerModel) -> Path:
    return cache_dir() / f"fmnet-{model.sha256}-opset{ONNX_OPSET}-v{ONNX_EXPORT_VERSION}.onnx"


def onnx_model_path(model: TrackerModel) -> Path:
    """The fp32 ONNX file of ``model``, exported into the cache unless a loadable one is there."""
    path = onnx_cache_path(model)
    if path.is_file():
        try:
            ort.InferenceSession(str(path), providers=_PROVIDERS)
            return path
        except Exception:  # a damaged cache file: export again
            path.unlink(missing_ok=True)
    write_atomic(path, export_onnx(model))
    return path


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, so a reader never sees half a file."""
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
        raise ExportError(f"cannot write {path} ({exc.strerror or exc}); set XDG_CACHE_HOME to a writable folder") from None


def export_onnx(model: TrackerModel) -> bytes:
    """The network as ONNX bytes: input "image" (B, 1, 256, 256), three (B, 15, 64, 64) outputs."""
    import torch  # only to export: a cached engine starts without it (about a second of imports)

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
                input_names=[INPUT_NAME],
                output_names=OUTPUT_NAMES,
                opset_version=ONNX_OPSET,
                dynamic_axes={name: batch_axis for name in (INPUT_NAME, *OUTPUT_NAMES)},
            )
        except Exception as exc:
            first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise ExportError(f"ONNX export failed with torch {torch.__version__} ({first_line}); use engine 'torch'") from exc
    return buffer.getvalue()


def session_options(threads: int) -> ort.SessionOptions:
    """``threads`` intra-op threads (0: ONNX Runtime's default, one per physical core).

    Idle pool threads sleep instead of spinning: on a small machine a spinning pool takes CPU
    from the capture and publishing processes between frames.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxNetwork:
    """An ONNX Runtime CPU session on an exported tracker network (dynamic batch, 1x256x256 input)."""

    def __init__(self, path: Path, threads: int, precision: str) -> None:
        self.path = path
        self.precision = precision
        self.runtime = f"onnxruntime {ort.__version__} CPU {precision}"
        self._session = ort.InferenceSession(str(path), session_options(threads), providers=_PROVIDERS)

    def __call__(self, images: np.ndarray) -> Outputs:
        heatmap, row_offset, col_offset = self._session.run(OUTPUT_NAMES, {INPUT_NAME: images})
        return heatmap, row_offset, col_offset


class HostEngine:
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
