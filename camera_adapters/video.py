"""A recorded video played back as a camera, so a session can be replayed through the live path
and compared with Facemap's offline results on the same file. A path whose name holds a
``%`` field (``frames/img_%05d.png``) is a numbered image sequence; it has no frame rate of
its own, so its frames come as fast as they decode.

Frames are converted to grayscale exactly as Facemap does (``cv2.cvtColor(frame,
cv2.COLOR_BGR2GRAY)``). With ``realtime=True`` frame ``k`` is delivered at ``open +`` its time in
the file (an absolute schedule: a late reader gets the following frames at once until it has
caught up; no frame is skipped). With ``realtime=False`` frames come as fast as they decode.

A damaged file (cut short, or with corrupted bytes) is read as far as it goes: a frame that cannot
be decoded is passed over and reading goes on (a bounded number of failed reads, no more than the
frames the container still promises), and ``frame_id`` jumps past the frames lost where the file's
timestamps show how many (``Frame.dropped_before`` says so too). At the end, the frames read are
compared with the container's frame count (``CAP_PROP_FRAME_COUNT``, where it states one):
``unreadable`` is the shortfall and ``unreadable_report`` one line for the user, e.g. ``ended after
150 of 300 frames: 150 unreadable (truncated or corrupt file)``. FFmpeg's own decoder messages are
silenced (``OPENCV_FFMPEG_LOGLEVEL``, unless the user has set it), so a damaged file gives that one
line instead of a screenful of ``[mpeg4 @ 0x...] header damaged``.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import cv2
import numpy as np

from .base import Camera, CameraError, Frame

# FFmpeg's log level, read by OpenCV once, when it first opens a video in the process: quiet
# (AV_LOG_QUIET) unless the user asks for FFmpeg's messages. Set on import, so it is in place
# before any video is opened (the int8 calibration opens the video before the camera does).
_FFMPEG_QUIET = "-8"
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", _FFMPEG_QUIET)

# at most this many failed reads in a row are tried past a damaged stretch before the video is
# taken to have ended (a failed read at the end of a file costs about 1-6 us)
_MAX_FAILED_READS = 100_000


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
        self._count: int | None = None  # frames in the file, as its container states
        self._dropped_before = 0  # frames lost just before the frame being delivered
        self.frames_read = 0  # frames delivered, every pass of a loop together
        self.unreadable = 0  # frames of the file that could not be read, every pass together
        self._ended_short: str | None = None
        self._done = False  # the end was reached (and counted)

    @property
    def shape(self) -> tuple[int, int]:
        if self._shape is None:
            raise CameraError(f"video:{self.path}: not open")
        return self._shape

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def frame_count(self) -> int | None:
        """Frames in the file as its container states (``CAP_PROP_FRAME_COUNT``); None if it states none."""
        return self._count

    @property
    def unreadable_report(self) -> str | None:
        """Once the video has ended: one line if frames of it could not be read, else None."""
        return self._ended_short

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
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self._count = int(count) if math.isfinite(count) and count >= 1 else None
        if first.dtype != np.uint8:
            cap.release()
            raise self._fail(f"frames are {first.dtype}; the tracker takes 8-bit frames, as Facemap does: convert the images to 8 bits")
        self._index = self._frame_id = 0
        self._loop_offset_ns = self._last_t_ns = 0
        self._dropped_before = self.frames_read = self.unreadable = 0
        self._ended_short = None
        self._done = False
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

    def _file_index(self) -> int | None:
        """Index in the file of the frame just read, from its timestamp; None if unknown."""
        ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        if not self._fps or not math.isfinite(ms) or ms < 0:
            return None
        return round((ms * 1e6 - self._t_first_ns) * self._fps / 1e9)

    def _read_file(self) -> np.ndarray | None:
        """The next frame that decodes, past a damaged stretch; None at the end of the file.

        After a failed read, reading goes on while the container promises more frames (at most
        ``_MAX_FAILED_READS`` failures in a row); the frames passed over are counted, from the
        next frame's timestamp where the file has them, else one per failed read.
        """
        ok, frame = self._cap.read()
        if ok and frame is not None:
            return frame
        remaining = 0 if self._count is None else self._count - self._index - 1
        failures = 1
        while failures <= min(remaining, _MAX_FAILED_READS):
            ok, frame = self._cap.read()
            if ok and frame is not None:
                index = self._file_index()
                lost = index - self._index if index is not None and index > self._index else failures
                lost = min(lost, remaining)  # the frame just read is in the file too
                self._skip(lost)
                return frame
            failures += 1
        return None

    def _skip(self, lost: int) -> None:
        self._index += lost
        self._frame_id += lost
        self._dropped_before += lost
        self.unreadable += lost

    def _end_of_pass(self) -> int:
        """Frames of the container's count that this pass did not reach: counted as unreadable."""
        tail = max(self._count - self._index, 0) if self._count is not None else 0
        self.unreadable += tail
        return tail

    def _ended(self) -> None:
        self._done = True
        if self.unreadable:
            of = f" of {self._count}" if self._count is not None else ""
            self._ended_short = (f"video:{self.path}: ended after {self.frames_read}{of} frames: {self.unreadable} "
                                 f"unreadable (truncated or corrupt file)")

    def _next_raw(self) -> np.ndarray | None:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        if self._done:
            return None
        frame = self._read_file()
        if frame is not None:
            return frame
        tail = self._end_of_pass()
        if not self.loop or self._index == 0:
            self._ended()
            return None
        period_ns = round(1e9 / self._fps) if self._fps else 0
        # the next pass starts one period after the file's last frame (read or not)
        self._loop_offset_ns += self._last_t_ns + period_ns * (1 + tail)
        self._frame_id += tail  # frame_id counts the frames that could not be read, as a gap
        self._dropped_before += tail
        self._cap.release()
        self._cap = self._capture()
        self._index = 0
        ok, frame = self._cap.read()
        if not ok:
            self._ended()
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
        frame = Frame(pixels, self._frame_id, time.monotonic_ns(), t_camera_ns, dropped_before=self._dropped_before)
        self._dropped_before = 0
        self._index += 1
        self._frame_id += 1
        self.frames_read += 1
        return frame
