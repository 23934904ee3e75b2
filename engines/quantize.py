"""The int8 tracker for the CPU: ONNX Runtime static quantization, calibrated on frames.

Weights are quantized per output channel (int8) and activations per tensor (uint8), with ranges
calibrated on frames the tracker will see (each activation's 99.999th percentile, so that a
few outlying values do not coarsen the steps of all the others), as QuantizeLinear/DequantizeLinear pairs
(QDQ) that ONNX Runtime fuses into integer convolutions; TensorRT reads the same QDQ graph.
Weights use 7 of their 8 bits (``reduce_range``): on x86 CPUs without VNNI instructions (AVX2
only) ONNX Runtime's uint8 x int8 kernels add pairs of products in 16 bits, which saturate with
full-range weights; measured on an AVX2-only EPYC, full range moved in-view keypoints 0.53 px
from fp32 (some by 8-10 px), 7 bits 0.20 px (p99 0.55, max 1.23; 200 held-out frames).

Not every layer is quantized. The keypoints come from the 64x64 maps at the network's end, where
one cell is 4 input pixels: rounding there moves peaks and sub-cell offsets directly. Measured on
the bundled model and 200 held-out synthetic frames, quantizing everything moved in-view
keypoints by 0.72 px on average from fp32; keeping the three output heads and the convolution
that feeds them in fp32 brings that to 0.19 px for ~10 % of the int8 speed-up
(docs/benchmarks.md). Those layers are found from the graph's structure, not their names.

Calibration frames come from a source the caller gives: the rig's own camera or video, which
suits a real rig best (``camera_adapters.calibration``), or the synthetic face (seeds used for
training, never the evaluation seeds). With the default model, 40 held-out synthetic frames and
the synthetic calibration, min/max ranges moved in-view keypoints 0.42 px from fp32 (p99 1.71),
percentile ranges 0.38 px (p99 1.39).
The result is cached beside the fp32 export, keyed by the model, the calibration frames and the
quantizer's version.
"""
from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import onnxruntime

from .onnx_engine import INPUT_NAME, ExportError, cache_dir, onnx_model_path, write_atomic
from .preprocess import make_geometry, preprocess

if TYPE_CHECKING:
    import onnx

    from .model_files import TrackerModel

CALIBRATION_FRAMES = 64
QUANTIZE_VERSION = 3  # part of the cache key: bump when the recipe changes


class CalibrationSource(Protocol):
    """Frames an int8 engine is calibrated on: the rig's own video, or the synthetic face
    (``camera_adapters.registry.default_calibration``) when the user names none."""

    def key(self) -> str:
        """Names the frames in the engine cache's key, cheaply (without reading them)."""

    def frames(self, count: int) -> list[np.ndarray]:
        """``count`` uint8 grayscale frames (or fewer, where the source has fewer)."""


@dataclass(frozen=True)
class VideoCalibration:
    """Frames spread evenly over a video file; ExportError (one line) if it cannot be read."""

    path: Path

    def key(self) -> str:
        """The video's path, size and modification time: a cached engine starts without reading it."""
        try:
            stat = self.path.stat()
        except OSError:
            raise ExportError(f"calibration video {self.path} cannot be read (missing, empty or not a video)") from None
        return f"{self.path.resolve()}-{stat.st_size}-{stat.st_mtime_ns}"

    def frames(self, count: int = CALIBRATION_FRAMES) -> list[np.ndarray]:
        import cv2

        capture = cv2.VideoCapture(str(self.path))
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        if total < 1:
            capture.release()
            raise ExportError(f"calibration video {self.path} cannot be read (missing, empty or not a video)")
        frames = []
        for index in np.linspace(0, total - 1, min(count, total)).astype(int):
            capture.set(cv2.CAP_PROP_POS_FRAMES, int(index))
            ok, image = capture.read()
            if ok:
                frames.append(image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
        capture.release()
        if not frames:
            raise ExportError(f"calibration video {self.path} has no decodable frames")
        return frames


def fp32_kept_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the convolutions kept in fp32: the last convolution upstream of each graph output
    (the heads), and the last convolution upstream of each head."""
    producer = {out: node for node in model.graph.node for out in node.output}

    def conv_upstream(tensor: str) -> onnx.NodeProto | None:
        node = producer.get(tensor)
        while node is not None and node.op_type != "Conv":
            node = producer.get(node.input[0])
        return node

    heads = [conv_upstream(output.name) for output in model.graph.output]
    kept = {head.name for head in heads if head is not None}
    kept |= {node.name for head in heads if head is not None if (node := conv_upstream(head.input[0])) is not None}
    return sorted(kept)


def int8_model_path(
    model: TrackerModel,
    calibration: CalibrationSource,
    bbox: tuple[int, int, int, int] | None = None,
) -> Path:
    """The int8 ONNX file of ``model``, quantized into the cache unless already there.

    ``calibration``'s frames are read only when the file has to be built, and pre-processed with
    ``bbox`` as the tracker will. The cache key names the calibration, so different
    calibrations never share a file.
    """
    key = f"{calibration.key()}-{bbox}-{onnxruntime.__version__}-q{QUANTIZE_VERSION}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    path = cache_dir() / f"fmnet-{model.sha256}-int8-{digest}.onnx"
    if path.is_file():
        return path
    fp32 = onnx_model_path(model)
    images = [preprocess(frame, make_geometry(frame.shape, bbox)) for frame in calibration.frames(CALIBRATION_FRAMES)]
    _quantize(fp32, images, path)
    return path


def _quantize(fp32: Path, images: list[np.ndarray], path: Path) -> None:
    """Quantize the fp32 file on the pre-processed ``images`` and write the result to ``path``."""
    # imported here: onnx and the quantizer take most of a second to import, and a run whose
    # engine is cached needs neither
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self._images = iter(images)

        def get_next(self) -> dict | None:
            image = next(self._images, None)
            return None if image is None else {INPUT_NAME: image[None, None]}

    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer logs a warning per layer
    try:
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            prepared = Path(tmp) / "prepared.onnx"
            quantized = Path(tmp) / "int8.onnx"
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(quantized),
                Frames(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                reduce_range=True,
                calibrate_method=CalibrationMethod.Percentile,
                extra_options={"CalibPercentile": 99.999},
                nodes_to_exclude=fp32_kept_nodes(onnx.load(str(prepared))),
            )
            write_atomic(path, quantized.read_bytes())
    finally:
        logging.getLogger().setLevel(quiet)
