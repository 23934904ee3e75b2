"""Recording while streaming: every published message into an h5 file, from its own process.

The publisher hands each message's bytes (already packed for subscribers) to a PUSH socket
with a deep queue; this process pulls them, decodes them with the protocol module, and
writes them in chunks, flushing at least every ``flush_interval`` seconds. The tracker
never waits on the disk: if this process falls a whole queue behind, the publisher counts
the messages it could not hand over (``record_dropped`` in ``meta``) instead of waiting.

It ends when the pipeline's final ``meta`` arrives (after writing everything before it) or
when the pipeline process is gone (after writing everything it already received), and
closes the file properly in both cases. Killed itself, it loses at most what arrived since
its last flush.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import zmq

from facestream.engines.bodyparts import N_KEYPOINTS
from facestream.streamer import protocol
from facestream.streamer.parent import parent_alive
from facestream.streamer.pose_h5 import PoseFile

_FINAL = ("ended", "stopped", "failed")


class RecordingError(RuntimeError):
    """The recording cannot be made; the message is one line."""


def check_record_path(path: str) -> Path:
    """The path to record to, refused in one line if it exists or cannot be written."""
    p = Path(path).expanduser()
    if p.exists():
        raise RecordingError(f"recording {p} already exists: choose a new file name (nothing was overwritten)")
    if not p.parent.is_dir():
        raise RecordingError(f"cannot record to {p}: folder {p.parent} does not exist")
    if not os.access(p.parent, os.W_OK):
        raise RecordingError(f"cannot record to {p}: folder {p.parent} is not writable")
    return p


def _columns(n_neural: int) -> dict:
    return {
        "seq": ((), "int64"),
        "frame_id": ((), "int64"),
        "t_capture_ns": ((), "int64"),
        "t_camera_ns": ((), "int64"),
        "t_publish_ns": ((), "int64"),
        "dropped": ((), "int64"),
        "neural": ((n_neural,), "float32"),
    }


class _Rows:
    """Frame messages collected between two writes."""

    def __init__(self) -> None:
        self.messages: list[dict] = []

    def write_to(self, pose: PoseFile) -> None:
        if not self.messages:
            return
        m = self.messages
        keypoints = np.asarray([r["keypoints"] for r in m], dtype=np.float32).reshape(len(m), N_KEYPOINTS, 3)
        columns = {k: np.asarray([r[k] for r in m], dtype=np.int64)
                   for k in ("seq", "frame_id", "t_capture_ns", "t_publish_ns", "dropped")}
        columns["t_camera_ns"] = np.asarray([-1 if r["t_camera_ns"] is None else r["t_camera_ns"] for r in m], np.int64)
        columns["neural"] = np.asarray([r["neural"] for r in m], dtype=np.float32)
        pose.append(keypoints, columns)
        self.messages = []


def _tell(conn, message: tuple) -> None:
    """Report to the pipeline, which may already be gone."""
    try:
        conn.send(message)
    except OSError:
        pass


def recorder_main(
    path: str, endpoint: str, n_neural: int, run_info: dict, conn, flush_interval: float, camera: str | None = None
) -> None:
    """Record the frame messages of ``camera`` (None: every camera) and the ``meta`` messages."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the pipeline ends the recording, not Ctrl-C
    sock = zmq.Context.instance().socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        pose = PoseFile(path, _columns(n_neural))
    except OSError as e:
        _tell(conn, ("error", f"cannot create recording {path}: {e}"))
        return
    rows = _Rows()
    meta: dict | None = None
    try:
        pose.set_attrs(run=run_info)
        pose.flush()
        _tell(conn, ("ready",))
        next_flush = time.monotonic() + flush_interval
        finished = False
        while not finished:
            gone = not parent_alive()
            if sock.poll(0 if gone else 50, zmq.POLLIN):
                topic, payload = sock.recv_multipart()
                message = protocol.unpack(topic, payload)
                if protocol.topic_kind(topic) == protocol.TOPIC_FRAME:
                    if camera is None or message.get("camera") == camera:
                        rows.messages.append(message)
                else:
                    meta = message
                    finished = message["status"] in _FINAL
            elif gone:
                break
            if finished or time.monotonic() >= next_flush:
                rows.write_to(pose)
                if meta is not None:
                    pose.set_attrs(meta=meta)
                pose.flush()
                next_flush = time.monotonic() + flush_interval
        rows.write_to(pose)
        pose.set_attrs(complete=finished)
        _tell(conn, ("closed", pose.rows))
    except OSError as e:
        _tell(conn, ("error", f"recording {path} failed: {e}"))
    finally:
        pose.close()
        sock.close(0)


class Recording:
    """The pipeline's side of a recording: starts the recorder process, watches it, ends it."""

    def __init__(
        self, ctx, path: Path, endpoint: str, n_neural: int, run_info: dict, flush_interval: float, camera: str | None = None
    ):
        self.path = path
        self.rows: int | None = None
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=recorder_main, name="facestream-recorder",
            args=(str(self.path), endpoint, n_neural, run_info, child, flush_interval, camera),
        )

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def start(self, timeout: float = 30.0) -> None:
        self._proc.start()
        if not self._conn.poll(timeout):
            raise RecordingError(f"the recorder did not start within {timeout:.0f} s")
        self._answer(self._conn.recv())

    def check(self) -> None:
        """Raise RecordingError if the recorder failed or died."""
        self._read_answers()
        if not self._proc.is_alive() and self.rows is None:
            raise RecordingError(f"the recorder stopped unexpectedly (exit code {self._proc.exitcode})")

    def finish(self, timeout: float = 60.0) -> int | None:
        """Wait for the recorder to write everything and close the file; the rows written."""
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)
        self._read_answers()
        return self.rows

    def _read_answers(self) -> None:
        try:
            while self._conn.poll():
                self._answer(self._conn.recv())
        except EOFError:  # the recorder has exited; everything it said was read
            pass

    def _answer(self, message: tuple) -> None:
        if message[0] == "error":
            raise RecordingError(message[1])
        if message[0] == "closed":
            self.rows = message[1]
