"""The frames an int8 tracker is calibrated on, taken from the source it will run on.

An int8 engine's activation ranges are set by the frames it is calibrated on. Frames of the
rig's own camera (its light, its framing, its mouse) fit it best: on real rig frames, the
synthetic face's calibration moves keypoints 0.58 px from fp32 on average, the frames' own
0.47 px (docs/tracker-training.md). So a run calibrates on its first camera: a video file's
frames spread over the file, a live camera's first frames, the synthetic face's for the
synthetic camera. Built engines are cached by source, so a live camera is read for
calibration only the first time a model runs on it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facestream.engines.quantize import CalibrationSource, VideoCalibration

from .base import CameraError
from .registry import CameraOptions, default_calibration, make_camera, parse_spec

_STRIDE = 2  # a live camera gives every second frame of its first 2 x count


@dataclass(frozen=True)
class CameraCalibration:
    """The first frames of a live camera (pylon, webcam) or an image sequence, read before the
    run opens it."""

    spec: str
    options: CameraOptions

    def key(self) -> str:
        """The camera's spec and a digest of its settings: the same camera, set up the same way,
        reuses its engine without being opened."""
        return f"camera-{self.spec}-{hashlib.sha256(repr(self.options).encode()).hexdigest()[:8]}"

    def frames(self, count: int) -> list[np.ndarray]:
        frames = []
        with make_camera(self.spec, self.options) as camera:
            for index in range(count * _STRIDE):
                try:
                    frame = camera.read()
                except CameraError:
                    if frames:  # enough to calibrate on; the run reports the fault when it reaches it
                        break
                    raise
                if frame is None:
                    break
                if index % _STRIDE == 0:
                    frames.append(frame.pixels)
        if not frames:
            raise CameraError(f"camera {self.spec!r} gave no frames to calibrate the int8 tracker on")
        return frames


def source_calibration(spec: str, options: CameraOptions = CameraOptions()) -> CalibrationSource:
    """The calibration a run on camera ``spec`` uses when the user names no video."""
    _, arg = parse_spec(spec)
    kind = spec.partition(":")[0].strip().lower()
    if kind == "synthetic":
        return default_calibration()
    if kind == "video" and Path(arg).expanduser().is_file():
        return VideoCalibration(Path(arg).expanduser())
    return CameraCalibration(spec, options)  # a live camera, or an image sequence read as the run reads it
