"""A recorded video played back as a camera, so a session can be replayed through the live path
and compared with Facemap's offline results on the same file. A path whose name holds a
``%`` field (``frames/img_%05d.png``) is a numbered image sequence; it has no frame rate of
its own, so its frames come as fast as they decode.

Frames are converted to grayscale exactly as Facemap does (``cv2.cvtColor(frame,
cv2.COLOR_BGR2GRAY)``). With ``realtime=True`` frame ``k`` is delivered at ``open +`` its time in
the file (an absolute schedule: a late reader gets the following frames at once until it has
caught up; no frame is skipped). With ``realtime=False`` frames come as fast as they decode.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import cv2
import numpy as np

from .base import Camera, CameraError, Frame


def to_gray(frame: np.ndarray) -> np.ndarray:
    """An OpenCV frame (BGR, BGRA or already one channel) in grayscale, as Facemap converts it."""
    if frame.ndim == 2:
        return frame
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2GRAY)
    if frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    return np.ascontiguousarray(frame[:, :, 0])


class VideoFileCamera(Camera):
    """Frames of a video file through ``cv2.VideoCapture``.

    ``frame_id`` is the frame's index in the file; with ``loop=True`` it keeps counting across
    repeats, and so does ``t_camera_ns`` (the frame's time in the file, in ns).
    """

    name = "video"

    def __init__(self, path: str | Path, realtime: bool = True, loop: bool = False) -> None:
        self.path = Path(path)
        self.realtime = realtime
        self.loop = loop
        self._cap: cv2.VideoCapture | None = None
        self._pending: np.ndarray | None = None
        self._shape: tuple[int, int] | None = None
        self._fps = 0.0
        self._t_open_ns = 0
        self._index = 0  # index in the file of the next frame
        self._frame_id = 0
        self._loop_offset_ns = 0
        self._last_t_ns = 0
        self._t_first_ns = 0

    @property
    def shape(self) -> tuple[int, int]:
        if self._shape is None:
            raise CameraError(f"video:{self.path}: not open")
        return self._shape

    @property
    def fps(self) -> float:
        return self._fps

    def _fail(self, why: str) -> CameraError:
        return CameraError(f"video:{self.path}: {why}")

    @property
    def is_sequence(self) -> bool:
        """An image sequence such as ``frames/img_%05d.png`` (OpenCV's numbered-files reader)."""
        return "%" in self.path.name

    def _capture(self) -> cv2.VideoCapture:
        if self.is_sequence:  # its reader warns on stderr at the end of every sequence
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_IMAGES) if self.is_sequence else cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise self._fail("OpenCV cannot open or decode this file")
        return cap

    def open(self) -> None:
        self.close()
        if not (self.path.parent.is_dir() if self.is_sequence else self.path.is_file()):
            raise self._fail("no such folder" if self.is_sequence else "no such file")
        cap = self._capture()
        ok, first = cap.read()
        if not ok or first is None:
            cap.release()
            raise self._fail("no frame could be decoded (empty or unsupported file)")
        fps = cap.get(cv2.CAP_PROP_FPS)
        self._fps = float(fps) if fps and math.isfinite(fps) and fps > 0 else 0.0
        self._cap, self._pending = cap, first
        first_ms = cap.get(cv2.CAP_PROP_POS_MSEC)
        self._t_first_ns = round(first_ms * 1e6) if math.isfinite(first_ms) and first_ms > 0 else 0
        self._shape = to_gray(first).shape
        if first.dtype != np.uint8:
            cap.release()
            raise self._fail(f"frames are {first.dtype}; the tracker takes 8-bit frames, as Facemap does: convert the images to 8 bits")
        self._index = self._frame_id = 0
        self._loop_offset_ns = self._last_t_ns = 0
        self._t_open_ns = time.monotonic_ns()

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
        self._cap = None
        self._pending = None

    def _file_time_ns(self, index: int) -> int:
        """Time of the frame just read, from the container when it gives one, else index / fps;
        -1 when neither is known."""
        ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        if math.isfinite(ms) and (ms > 0 or index == 0):
            return max(round(ms * 1e6) - self._t_first_ns, 0)
        return round(index * 1e9 / self._fps) if self._fps else -1

    def _next_raw(self) -> np.ndarray | None:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        ok, frame = self._cap.read()
        if ok and frame is not None:
            return frame
        if not self.loop or self._index == 0:
            return None
        period_ns = round(1e9 / self._fps) if self._fps else 0
        self._loop_offset_ns += self._last_t_ns + period_ns
        self._cap.release()
        self._cap = self._capture()
        self._index = 0
        ok, frame = self._cap.read()
        return frame if ok else None

    def read(self) -> Frame | None:
        if self._cap is None:
            raise self._fail("read() before open()")
        raw = self._next_raw()
        if raw is None:
            return None
        t_file = self._file_time_ns(self._index)
        if t_file >= 0:
            self._last_t_ns = t_file
        t_camera_ns = self._loop_offset_ns + t_file if t_file >= 0 else -1
        pixels = to_gray(raw)
        if pixels.shape != self._shape or pixels.dtype != np.uint8:
            raise self._fail(f"frame {self._index} is {pixels.dtype} {pixels.shape[1]}x{pixels.shape[0]}, "
                             f"not uint8 {self._shape[1]}x{self._shape[0]} as the first frame")
        if self.realtime and t_camera_ns >= 0:
            wait_ns = self._t_open_ns + t_camera_ns - time.monotonic_ns()
            if wait_ns > 0:
                time.sleep(wait_ns / 1e9)
        frame = Frame(pixels, self._frame_id, time.monotonic_ns(), t_camera_ns)
        self._index += 1
        self._frame_id += 1
        return frame
