"""The TensorRT engine: the exported ONNX network compiled for this GPU, built once and cached.

Written against NVIDIA's documented TensorRT Python API (8.6 and 10.x: ``Builder``,
``OnnxParser``, ``IBuilderConfig`` with an optimisation profile for batch sizes 1..max_batch,
``IProgressMonitor``, ``build_serialized_network``, ``Runtime.deserialize_cuda_engine``,
``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``). Precision "fp16" compiles
the fp32 export with FP16 kernels allowed; "int8" compiles the QDQ graph calibrated by
``quantize.int8_model_path`` (explicit quantization: TensorRT keeps the same fp32 layers).
A build takes tens of seconds, so the serialized engine is cached, keyed by the model's sha256,
TensorRT's version, the GPU's name and compute capability, the precision and the largest batch;
``facestream export --engine tensorrt`` builds it ahead of a run. Frames move and are
pre-processed and decoded on the GPU with ``torch_ops``, as in the CUDA engine; torch owns the
device memory and the stream.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from . import torch_ops
from .model_files import TrackerModel
from .onnx_engine import INPUT_NAME, OUTPUT_NAMES, ExportError, cache_dir, onnx_model_path, write_atomic
from .preprocess import INPUT_SIZE, Geometry
from .quantize import CalibrationSource

PRECISIONS = ("fp16", "int8")
MAX_BATCH = 8
_WORKSPACE_BYTES = 1 << 30


def available() -> str | None:
    """None when TensorRT can run here, else why not (one line)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "needs the tensorrt package, which is not installed"
    if not torch.cuda.is_available():
        return "needs a CUDA GPU and none is visible to PyTorch"
    return None


def engine_path(model: TrackerModel, precision: str, calibration: CalibrationSource | None, max_batch: int = MAX_BATCH) -> Path:
    import tensorrt as trt

    props = torch.cuda.get_device_properties(0)
    calibrated = f"-{calibration.key()}" if precision == "int8" else ""
    key = f"{trt.__version__}-{props.name}-sm{props.major}{props.minor}-{precision}{calibrated}-b{max_batch}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_dir() / f"fmnet-{model.sha256}-trt-{precision}-{digest}.engine"


def build_engine(
    model: TrackerModel,
    precision: str = "fp16",
    calibration: CalibrationSource | None = None,
    max_batch: int = MAX_BATCH,
    progress: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Compile and cache the engine unless cached; ``progress(phase, step, steps)`` follows the build.

    int8 builds from the calibrated QDQ graph of ``quantize`` (``calibration`` names its frames)."""
    import tensorrt as trt

    if precision not in PRECISIONS:
        raise ExportError(f"TensorRT precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    path = engine_path(model, precision, calibration, max_batch)
    if path.is_file():
        return path
    if precision == "int8":
        from .quantize import int8_model_path

        onnx_path = int8_model_path(model, calibration)
    else:
        onnx_path = onnx_model_path(model)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    explicit_batch = 0 if int(trt.__version__.split(".")[0]) >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(explicit_batch)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, _WORKSPACE_BYTES)
    config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    shape = (1, INPUT_SIZE, INPUT_SIZE)
    profile.set_shape(INPUT_NAME, (1, *shape), (1, *shape), (max_batch, *shape))
    config.add_optimization_profile(profile)
    monitor = _Progress(trt, progress) if progress is not None and hasattr(trt, "IProgressMonitor") else None
    if monitor is not None:
        config.progress_monitor = monitor
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT {trt.__version__} failed to build the {precision} engine (see its log above)")
    write_atomic(path, bytes(serialized))
    return path


def _Progress(trt, report: Callable[[str, int, int], None]):
    """An IProgressMonitor that forwards phases and steps to ``report``."""

    class Progress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.steps: dict[str, int] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            self.steps[phase_name] = num_steps
            report(phase_name, 0, num_steps)

        def step_complete(self, phase_name, step):
            report(phase_name, step + 1, self.steps.get(phase_name, 0))
            return True

        def phase_finish(self, phase_name):
            report(phase_name, self.steps.get(phase_name, 0), self.steps.get(phase_name, 0))

    return Progress()


class TensorRTTracker:
    """Frames (B <= max_batch, H, W) uint8 -> keypoints (B, 15, 3) through a cached TensorRT engine."""

    def __init__(self, model: TrackerModel, precision: str = "fp16", calibration: CalibrationSource | None = None,
                 max_batch: int = MAX_BATCH) -> None:
        import tensorrt as trt

        self.max_batch = max_batch
        path = build_engine(model, precision, calibration, max_batch)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._engine = trt.Runtime(self._logger).deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:  # built by another TensorRT or for another GPU after all
            path.unlink(missing_ok=True)
            raise ExportError(f"cached TensorRT engine {path.name} did not load; it was removed, start again to rebuild")
        self._context = self._engine.create_execution_context()
        self._stream = torch.cuda.Stream()
        self._dtypes = {name: _torch_dtype(trt, self._engine.get_tensor_dtype(name)) for name in OUTPUT_NAMES}
        self.runtime = f"TensorRT {trt.__version__} {torch.cuda.get_device_name()} {precision}"
        self._buffers: dict[tuple, tuple] = {}

    def run(self, frames: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, dict[str, float]]:
        if len(frames) > self.max_batch:
            parts = [self.run(frames[i : i + self.max_batch], geometry) for i in range(0, len(frames), self.max_batch)]
            return np.concatenate([p[0] for p in parts]), parts[-1][1]
        key = frames.shape
        if key not in self._buffers:
            batch = frames.shape[0]
            self._buffers[key] = (
                torch.empty(frames.shape, dtype=torch.uint8, pin_memory=True),
                torch.empty(frames.shape, dtype=torch.uint8, device="cuda"),
                [torch.empty((batch, 15, 64, 64), dtype=self._dtypes[n], device="cuda") for n in OUTPUT_NAMES],
                torch.empty((batch, 15, 3), dtype=torch.float32, pin_memory=True),
            )
        host_in, device_in, outputs, host_out = self._buffers[key]
        t0 = time.perf_counter()
        with torch.inference_mode(), torch.cuda.stream(self._stream):
            np.copyto(host_in.numpy(), frames)
            device_in.copy_(host_in, non_blocking=True)
            t1 = time.perf_counter()
            images = torch_ops.preprocess(device_in, geometry).contiguous()
            self._context.set_input_shape(INPUT_NAME, tuple(images.shape))
            self._context.set_tensor_address(INPUT_NAME, images.data_ptr())
            for name, tensor in zip(OUTPUT_NAMES, outputs):
                self._context.set_tensor_address(name, tensor.data_ptr())
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise ExportError("TensorRT failed to run the engine")
            keypoints = torch_ops.decode(*outputs, geometry)
            self._stream.synchronize()
            t2 = time.perf_counter()
            host_out.copy_(keypoints)
        t3 = time.perf_counter()
        return host_out.numpy().copy(), {"preprocess": (t1 - t0) * 1e3, "network": (t2 - t1) * 1e3, "decode": (t3 - t2) * 1e3}


def _torch_dtype(trt, dtype) -> torch.dtype:
    return {trt.float32: torch.float32, trt.float16: torch.float16}[dtype]
