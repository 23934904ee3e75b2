"""A webcam (or any device OpenCV opens by index: V4L2 on Linux, AVFoundation, DirectShow).

Webcams have no frame counter and no timestamp of their own that OpenCV passes on reliably, so
``frame_id`` counts delivered frames from 0 (drops inside the camera or its driver cannot be
seen) and ``t_camera_ns`` is -1. Frames are converted to grayscale as Facemap does.
"""
from __future__ import annotations

import contextlib
import math
import time

import cv2

from .base import Camera, CameraError, Frame
from .video import to_gray


@contextlib.contextmanager
def _quiet_opencv():
    """OpenCV logs a warning on stderr for every index with no device; probing must not."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def _capture(index: int) -> cv2.VideoCapture | None:
    with _quiet_opencv():
        cap = cv2.VideoCapture(index)
        if cap.isOpened():
            return cap
        cap.release()
    return None


def list_webcams(indices: range = range(8)) -> list[dict]:
    """The webcams that open and deliver a frame at these indices, with their frame size."""
    found = []
    for index in indices:
        cap = _capture(index)
        if cap is None:
            continue
        with _quiet_opencv():
            ok, frame = cap.read()
            fps = cap.get(cv2.CAP_PROP_FPS)
            backend = cap.getBackendName()
        cap.release()
        if ok and frame is not None:
            found.append({
                "spec": f"webcam:{index}", "index": index, "backend": backend,
                "height": frame.shape[0], "width": frame.shape[1],
                "fps": float(fps) if fps and math.isfinite(fps) else 0.0,
            })
    return found


class WebcamCamera(Camera):
    """The OpenCV capture device at ``index``, in the mode it opens with."""

    name = "webcam"

    def __init__(self, index: int) -> None:
        if index < 0:
            raise CameraError(f"webcam:{index}: the index must be 0 or more")
        self.index = index
        self._cap: cv2.VideoCapture | None = None
        self._shape: tuple[int, int] | None = None
        self._fps = 0.0
        self._pending = None
        self._next_id = 0

    @property
    def shape(self) -> tuple[int, int]:
        if self._shape is None:
            raise CameraError(f"webcam:{self.index}: not open")
        return self._shape

    @property
    def fps(self) -> float:
        return self._fps

    def open(self) -> None:
        self.close()
        cap = _capture(self.index)
        if cap is None:
            raise CameraError(f"webcam:{self.index}: no camera at index {self.index} (`facestream cameras` lists those found)")
        ok, first = cap.read()
        if not ok or first is None:
            cap.release()
            raise CameraError(f"webcam:{self.index}: the camera opened but delivered no frame")
        fps = cap.get(cv2.CAP_PROP_FPS)
        self._fps = float(fps) if fps and math.isfinite(fps) and fps > 0 else 0.0
        self._cap, self._pending = cap, first
        self._shape = to_gray(first).shape
        self._next_id = 0

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
        self._cap = self._pending = None

    def read(self) -> Frame | None:
        if self._cap is None:
            raise CameraError(f"webcam:{self.index}: read() before open()")
        raw, self._pending = self._pending, None
        if raw is None:
            ok, raw = self._cap.read()
            if not ok or raw is None:
                raise CameraError(f"webcam:{self.index}: the camera stopped delivering frames (unplugged?)")
        frame = Frame(to_gray(raw), self._next_id, time.monotonic_ns())
        self._next_id += 1
        return frame
