"""The camera's video, written while tracking, by a process with its own reader of the ring buffer.

The recorder's cursor starts at ring index 0, so every frame the capture process writes ends up
either in the video or counted as lost by the recorder. The ring buffer never waits for a
reader and the tracker has its own cursor, so a slow disk or codec costs the recorder frames
(counted, and written down), never the tracker its time.

Beside ``VIDEO`` goes ``VIDEO.frames.csv``, one row per frame in the video, in order:
``frame_id`` (the camera's counter), ``t_capture_ns`` (host monotonic clock), ``t_camera_ns``
(the camera's clock, -1 if it has none), ``dropped_before`` (frame ids missing between the
previous row and this one) and ``recorder_dropped_before`` (how many of those the recorder
itself lost; the rest the camera or its driver lost).
"""
from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import cv2

from facestream.streamer.parent import parent_alive
from facestream.streamer.ringbuffer import RingBuffer, RingBufferError, RingReader

#: codec name in the settings -> OpenCV fourcc; both are written by OpenCV's own FFmpeg
CODECS = {"ffv1": "FFV1", "mjpg": "MJPG"}
SUFFIXES = (".mkv", ".avi")
CSV_COLUMNS = ("frame_id", "t_capture_ns", "t_camera_ns", "dropped_before", "recorder_dropped_before")
FALLBACK_FPS = 30.0  # the container's nominal rate when the camera has none (triggered)
_POLL_S = 0.05
_READY_TIMEOUT_S = 30.0
_FINISH_TIMEOUT_S = 120.0


class VideoRecordingError(RuntimeError):
    """The video cannot be recorded; the message is one line."""


def frames_csv_path(video: Path) -> Path:
    return video.with_name(video.name + ".frames.csv")


def check_video_path(path: str) -> Path:
    """The video path, refused in one line if it or its frames file exists, or cannot be written."""
    p = Path(path).expanduser()
    if p.suffix.lower() not in SUFFIXES:
        raise VideoRecordingError(f"cannot record video to {p}: use a .mkv or .avi file name")
    for existing in (p, frames_csv_path(p)):
        if existing.exists():
            raise VideoRecordingError(f"{existing} already exists: choose a new file name (nothing was overwritten)")
    if not p.parent.is_dir():
        raise VideoRecordingError(f"cannot record video to {p}: folder {p.parent} does not exist")
    if not os.access(p.parent, os.W_OK):
        raise VideoRecordingError(f"cannot record video to {p}: folder {p.parent} is not writable")
    return p


class VideoRecording:
    """The video recorder process, as the pipeline sees it: ``start()``, live counts, ``finish()``."""

    def __init__(self, ctx, path: str, codec: str = "ffv1") -> None:
        if codec not in CODECS:
            raise VideoRecordingError(f"unknown video codec {codec!r}: use one of {', '.join(CODECS)}")
        self.path = check_video_path(path)
        self.codec = codec
        self._ctx = ctx
        self._counts = ctx.Array("q", 2, lock=False)  # frames written, frames the recorder lost
        self._stop = ctx.Event()
        self._conn = None
        self._proc = None

    @property
    def frames(self) -> int:
        return int(self._counts[0])

    @property
    def dropped(self) -> int:
        return int(self._counts[1])

    def describe(self) -> dict:
        return {"path": str(self.path), "codec": self.codec, "frames": self.frames, "dropped": self.dropped}

    def start(self, ring_name: str, fps: float) -> None:
        """Start the process on this ring; returns once the video file is open."""
        self._conn, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(
            target=record_video,
            args=(str(self.path), self.codec, ring_name, fps, self._counts, child, self._stop),
            name="facestream-video", daemon=True,
        )
        self._proc.start()
        child.close()
        message = self._receive(_READY_TIMEOUT_S, "did not start")
        if message[0] != "ready":
            self._proc.join(5.0)
            self._proc = None
            raise VideoRecordingError(message[1])

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def check(self) -> None:
        """Raise VideoRecordingError if the recorder failed or died during the run."""
        if self._proc is None:
            return
        if self._conn.poll():
            try:
                message = self._conn.recv()
            except EOFError:
                message = ("error", f"the video recorder stopped unexpectedly (exit code {self._proc.exitcode})")
            if message[0] == "error":
                self._proc = None
                raise VideoRecordingError(message[1])
        if not self._proc.is_alive():
            code, self._proc = self._proc.exitcode, None
            raise VideoRecordingError(f"the video recorder stopped unexpectedly (exit code {code})")

    def finish(self) -> dict:
        """Write what is left in the ring buffer (capture must have stopped), close the files."""
        if self._proc is None:
            return self.describe()
        self._stop.set()
        try:
            message = self._receive(_FINISH_TIMEOUT_S, "did not finish")
        finally:
            self._proc.join(5.0)
            if self._proc.is_alive():
                self._proc.terminate()
            self._proc = None
        if message[0] == "error":
            raise VideoRecordingError(message[1])
        return self.describe()

    def _receive(self, timeout: float, what: str) -> tuple:
        if self._conn.poll(timeout):
            try:
                return self._conn.recv()
            except EOFError:
                pass
        code = self._proc.exitcode
        raise VideoRecordingError(f"video recorder {what} (exit code {code})" if code is not None else f"video recorder {what} in {timeout:.0f} s")


def record_video(path: str, codec: str, ring_name: str, fps: float, counts, conn, stop) -> None:
    """The recorder process: ring buffer -> video file + frames file."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the pipeline, which stops us
    try:
        ring = RingBuffer.attach(ring_name)
    except RingBufferError as e:
        conn.send(("error", str(e)))
        return
    h, w = ring.shape
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*CODECS[codec]), fps or FALLBACK_FPS, (w, h), False)
    if not writer.isOpened():
        writer.release()
        ring.close()
        conn.send(("error", f"OpenCV cannot write {codec} video to {path}"))
        return
    reader = RingReader(ring, 0)
    try:
        with open(frames_csv_path(Path(path)), "w", newline="") as f:
            rows = csv.writer(f)
            rows.writerow(CSV_COLUMNS)
            conn.send(("ready",))
            previous_id = None
            while True:
                read = reader.next(_POLL_S)
                if read is None:
                    drained = reader.cursor >= ring.written
                    if reader.exhausted or (stop.is_set() and drained) or not parent_alive():
                        break
                    continue
                frame = read.frame
                writer.write(frame.pixels)
                gap = read.missed if previous_id is None else frame.frame_id - previous_id - 1
                rows.writerow((frame.frame_id, frame.t_capture_ns, frame.t_camera_ns, gap, read.missed))
                previous_id = frame.frame_id
                counts[0] += 1
                counts[1] = reader.missed_total
        conn.send(("done",))
    except Exception as e:  # the disk is full, the folder went away: one line for the pipeline
        conn.send(("error", f"video recording failed: {type(e).__name__}: {e}"))
    finally:
        writer.release()
        ring.close()
