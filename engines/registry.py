"""The tracker engines, one table: name -> what it is, whether it runs here, how to build it.

Everything that names engines reads this table: the settings' allowed values, the command
line's choices and help, the order ``auto`` tries them in and what ``facestream export`` can
build. Adding an engine is one entry here. The table imports no runtime: each entry's functions
import theirs when called, so settings and help load in milliseconds.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

if TYPE_CHECKING:
    from .model_files import TrackerModel
    from .preprocess import Geometry
    from .quantize import CalibrationSource

AUTO = "auto"
ExportProgress = Callable[[str, int, int], None]  # (phase, step, steps)


class Backend(Protocol):
    """A built engine: frames in, keypoints out, with the time each step took."""

    runtime: str

    def run(self, frames: np.ndarray, geometry: "Geometry") -> tuple[np.ndarray, dict[str, float]]: ...


@dataclass(frozen=True)
class BuildOptions:
    """What shapes a built engine besides the model."""

    threads: int
    bbox: tuple[int, int, int, int] | None = None
    calibration: "CalibrationSource | None" = None  # int8 engines only


@dataclass(frozen=True)
class Engine:
    description: str
    runtime: str  # the library it runs on, for messages
    missing: Callable[[], str | None]  # why it cannot run here ("needs ..."), or None
    build: Callable[["TrackerModel", BuildOptions], Backend]
    export: Callable[["TrackerModel", BuildOptions, ExportProgress | None], Path] | None = None  # its cached file
    auto_rank: int | None = None  # ``auto`` takes the lowest-ranked engine that runs here
    calibrated: bool = False  # needs BuildOptions.calibration


# -- what each engine needs -------------------------------------------------------------------
def _runs_anywhere() -> str | None:
    return None


def _no_cuda() -> str | None:
    if sys.platform == "linux" and not Path("/dev/nvidiactl").exists():
        # no NVIDIA driver loaded: said without importing torch (a second on a small CPU)
        return "needs a CUDA GPU and none is visible (no NVIDIA driver: /dev/nvidiactl is missing)"
    import torch

    if torch.cuda.is_available():
        return None
    return f"needs a CUDA GPU and none is visible to PyTorch ({'it has no CUDA support' if torch.version.cuda is None else 'none found'})"


def _no_tensorrt() -> str | None:
    no_cuda = _no_cuda()
    if no_cuda is not None:
        return no_cuda
    from .tensorrt_engine import available

    return available()


# -- how each engine is built -----------------------------------------------------------------
def _onnx_file(model: "TrackerModel", options: BuildOptions, _=None) -> Path:
    from .onnx_engine import onnx_model_path

    return onnx_model_path(model)


def _int8_file(model: "TrackerModel", options: BuildOptions, _=None) -> Path:
    from .quantize import int8_model_path

    return int8_model_path(model, options.calibration, options.bbox)


def _host(file: Callable[["TrackerModel", BuildOptions], Path], precision: str):
    def build(model: "TrackerModel", options: BuildOptions) -> Backend:
        from .onnx_engine import HostEngine, OnnxNetwork

        return HostEngine(OnnxNetwork(file(model, options), options.threads, precision))

    return build


def _torch(device: str):
    def build(model: "TrackerModel", options: BuildOptions) -> Backend:
        from .torch_engine import TorchTracker

        cuda = device == "cuda"
        return TorchTracker(model, device, half=cuda, graphs=cuda, threads=0 if cuda else options.threads)

    return build


def _tensorrt(precision: str):
    def build(model: "TrackerModel", options: BuildOptions) -> Backend:
        from .tensorrt_engine import TensorRTTracker

        return TensorRTTracker(model, precision, options.calibration)

    def export(model: "TrackerModel", options: BuildOptions, progress: ExportProgress | None) -> Path:
        from .tensorrt_engine import build_engine

        return build_engine(model, precision, options.calibration, progress=progress)

    return build, export


_TRT_FP16, _TRT_FP16_EXPORT = _tensorrt("fp16")
_TRT_INT8, _TRT_INT8_EXPORT = _tensorrt("int8")

ENGINES: dict[str, Engine] = {
    "onnx-int8": Engine(
        "ONNX Runtime on the CPU, int8, calibrated on frames (the CPU default)", "ONNX Runtime",
        _runs_anywhere, _host(_int8_file, "int8"), _int8_file, auto_rank=3, calibrated=True),
    "onnx": Engine(
        "ONNX Runtime on the CPU, fp32", "ONNX Runtime", _runs_anywhere, _host(_onnx_file, "fp32"), _onnx_file),
    "torch": Engine(
        "PyTorch on the CPU, fp32: the reference", "PyTorch", _runs_anywhere, _torch("cpu")),
    "cuda": Engine(
        "PyTorch on an NVIDIA GPU, fp16, CUDA graphs", "PyTorch", _no_cuda, _torch("cuda"), auto_rank=2),
    "tensorrt": Engine(
        "TensorRT fp16 engine built for this GPU", "TensorRT", _no_tensorrt, _TRT_FP16, _TRT_FP16_EXPORT, auto_rank=1),
    "tensorrt-int8": Engine(
        "TensorRT int8 engine built for this GPU, calibrated on frames", "TensorRT", _no_tensorrt, _TRT_INT8,
        _TRT_INT8_EXPORT, calibrated=True),
}

NAMES: tuple[str, ...] = (AUTO, *ENGINES)
AUTO_ORDER: tuple[str, ...] = tuple(sorted((n for n, e in ENGINES.items() if e.auto_rank), key=lambda n: ENGINES[n].auto_rank))
CPU_DEFAULT = AUTO_ORDER[-1]
STUDENT_CPU = "onnx"
EXPORTABLE: tuple[str, ...] = tuple(n for n, e in ENGINES.items() if e.export is not None)
HELP = ("Tracker engine: " + " | ".join(NAMES) + f" ({AUTO}: the first of {', '.join(AUTO_ORDER)} that runs here; "
        f"{STUDENT_CPU} instead of {CPU_DEFAULT} for a student).")


def choose_auto(student: bool = False) -> tuple[str, str]:
    """The engine ``auto`` stands for here, and why. A student runs in fp32 on the CPU: int8
    moves a student's keypoints several times farther from its teacher's than it moves the
    teacher's (docs/tracker-training.md), for a small gain in speed."""
    order = tuple(STUDENT_CPU if student and name == CPU_DEFAULT else name for name in AUTO_ORDER)
    passed = []
    for name in order:
        missing = ENGINES[name].missing()
        if missing is None or name == order[-1]:  # the last one runs anywhere
            break
        passed.append(f"{name} {missing}")
    because = f" ({'; '.join(passed)})" if passed else ""
    note = "; a student runs in fp32 on the CPU" if student and name == STUDENT_CPU else ""
    return name, f"{AUTO}: {name}, the first of {', '.join(order)} that runs here{because}{note}"
