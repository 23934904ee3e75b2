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

A full disk is seen coming, not met in the middle of a write (HDF5 that fails to write leaves
a file it may not be able to close, and h5py then crashed the process). A run does not start
unless the file's filesystem has room for the first rows (``start_bytes``: the empty file and
the first chunk of every dataset, which HDF5 allocates with the first row, 1.09 MB with 128
activity columns, 34 s at 30 frames/s). Before each write the recorder has the disk set aside
the space that write will take past the file's end, and a margin (``PoseFile.reserve``); when
the disk cannot, it writes the rows that fit in the chunks already allocated, closes the file
within the space set aside at the write before (so another program filling the disk cannot
break it either) and tells the pipeline once (``("full", message)``), then goes on reading its
socket, keeping nothing, until the run ends: the run goes on publishing. On a filesystem that
cannot set space aside, it compares with the free space instead. If a write fails all the
same, the recorder touches the file no more (as ``kill -9`` would) and exits without h5py's
clean-up, which crashes on such a file.
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from facestream.engines.bodyparts import N_KEYPOINTS
from facestream.streamer import protocol
from facestream.streamer.parent import parent_alive
from facestream.streamer.pose_h5 import CHUNK_ROWS, PoseFile, chunk_set_bytes

_FINAL = ("ended", "stopped", "failed")
_EMPTY_FILE = 64 * 1024  # an empty file with the run's metadata: 38 KB measured with 3 KB of settings
_META_EVERY_S = 10.0  # the last meta is written at most this often, and at the end: HDF5 leaves an
# attribute's old space behind when it is rewritten (4-5 KB each time: 15 MB an hour at every flush)
_GROWTH_MARGIN = 256 * 1024  # metadata that new chunks bring (chunk indexes: 116 KB measured for the first ones)
_LOW = 64 * 1024  # set aside past the file's end for a write into chunks already there (attributes move) and the close


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


def free_bytes(folder: str | Path) -> int:
    """Bytes a non-privileged program may still write on the filesystem of ``folder``."""
    return shutil.disk_usage(folder).free  # statvfs f_bavail * f_frsize on Linux


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def start_bytes(n_neural: int, pupil: bool = False, motion_svd: int = 0) -> int:
    """The free space a recording needs to start: the empty file and its first chunk of every
    dataset (``CHUNK_ROWS`` rows), which HDF5 allocates with the first row."""
    return _EMPTY_FILE + chunk_set_bytes(_columns(n_neural, pupil, motion_svd)) + _GROWTH_MARGIN


def check_free_space(paths: list[Path], n_neural: int, pupil: bool = False, motion_svd: int = 0) -> None:
    """Refuse, in one line, recordings whose filesystem has less free space than they need to
    start (recordings on the same filesystem need it each)."""
    need = start_bytes(n_neural, pupil, motion_svd)
    by_disk: dict[int, list[Path]] = {}
    for p in paths:
        by_disk.setdefault(os.stat(p.parent).st_dev, []).append(p)
    for group in by_disk.values():
        free = free_bytes(group[0].parent)
        if free < need * len(group):
            raise RecordingError(
                f"not enough free space to record to {group[0]}: {_mb(free)} free in {group[0].parent}, and a recording "
                f"needs {_mb(need)} to start (the first {CHUNK_ROWS} rows, which HDF5 allocates at once"
                f"{f', for each of {len(group)} recordings' if len(group) > 1 else ''}); nothing was written")


def disk_full(e: BaseException) -> bool:
    """Whether an error from writing a file is the disk (or the user's quota) being full. h5py
    raises RuntimeError, with the errno in its message, where Python raises OSError."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e)
    return any(s in text for s in ("errno = 28,", "errno = 122,", "No space left on device", "Disk quota exceeded"))


def _columns(n_neural: int, pupil: bool = False, motion_svd: int = 0) -> dict:
    """/facestream's columns: with ``pupil``, the pupil's (NaN where none was fitted); with
    ``motion_svd`` components, theirs (NaN until they were ready)."""
    return {
        "seq": ((), "int64"),
        "frame_id": ((), "int64"),
        "t_capture_ns": ((), "int64"),
        "t_camera_ns": ((), "int64"),
        "t_publish_ns": ((), "int64"),
        "dropped": ((), "int64"),
        "neural": ((n_neural,), "float32"),
        **({} if not pupil else {"pupil_area": ((), "float32"), "pupil_centre": ((2,), "float32"),
                                 "pupil_axes": ((2,), "float32"), "pupil_valid": ((), "uint8")}),
        **({} if not motion_svd else {"motion_svd": ((motion_svd,), "float32")}),
    }


def _or_nan(value, shape: tuple[int, ...]) -> object:
    return np.full(shape, np.nan) if value is None else value


class _Rows:
    """Frame messages collected between two writes."""

    def __init__(self, pupil: bool = False, motion_svd: int = 0) -> None:
        self.messages: list[dict] = []
        self.pupil = pupil
        self.motion_svd = motion_svd

    def write_to(self, pose: PoseFile) -> None:
        if not self.messages:
            return
        m = self.messages
        keypoints = np.asarray([r["keypoints"] for r in m], dtype=np.float32).reshape(len(m), N_KEYPOINTS, 3)
        columns = {k: np.asarray([r[k] for r in m], dtype=np.int64)
                   for k in ("seq", "frame_id", "t_capture_ns", "t_publish_ns", "dropped")}
        columns["t_camera_ns"] = np.asarray([-1 if r["t_camera_ns"] is None else r["t_camera_ns"] for r in m], np.int64)
        columns["neural"] = np.asarray([r["neural"] for r in m], dtype=np.float32)
        if self.pupil:
            found = [r.get("pupil") or {} for r in m]
            columns["pupil_area"] = np.asarray([_or_nan(p.get("area"), ()) for p in found], np.float32)
            columns["pupil_centre"] = np.asarray([_or_nan(p.get("centre"), (2,)) for p in found], np.float32)
            columns["pupil_axes"] = np.asarray([_or_nan(p.get("axes"), (2,)) for p in found], np.float32)
            columns["pupil_valid"] = np.asarray([bool(p.get("valid")) for p in found], np.uint8)
        if self.motion_svd:
            columns["motion_svd"] = np.asarray([_or_nan(r.get("motion_svd"), (self.motion_svd,)) for r in m], np.float32)
        pose.append(keypoints, columns)
        self.messages = []


def _tell(conn, message: tuple) -> None:
    """Report to the pipeline, which may already be gone."""
    try:
        conn.send(message)
    except OSError:
        pass


class _Writer:
    """The recording's file; each write first has the disk set aside the space it will take."""

    def __init__(self, pose: PoseFile) -> None:
        self.pose = pose
        self.flushed = 0  # rows on disk as of the last flush
        self.full: str | None = None  # why the recording stopped before the run did: the disk is full
        self.abandoned = False  # a write failed: the file is left as its last flush wrote it, untouched

    def write(self, rows: _Rows, **attrs: Any) -> None:
        """Append the rows collected, set ``attrs`` (None values left out) and flush. If the disk
        has no room for them: the rows that fit in the chunks already allocated, then close."""
        pose = self.pose
        attrs = {k: v for k, v in attrs.items() if v is not None}
        n = len(rows.messages)
        growth = pose.growth_bytes(n)
        need = growth + _GROWTH_MARGIN if growth else _LOW
        try:
            if self._room(need):
                rows.write_to(pose)
                pose.set_attrs(**attrs)
                pose.flush()
                self.flushed = pose.rows
                return
            free = free_bytes(pose.path.parent)
            # the space reserved at the last write holds this last one and the close (where the
            # filesystem cannot reserve: what is free, if that is enough)
            last = pose.reserved or free >= _LOW
            fits = min(n, pose.room) if last else 0
            self.full = (f"disk full: recording {pose.path} stopped at {pose.rows + fits} rows ({_mb(free)} free in "
                         f"{pose.path.parent}; the next rows need {_mb(need)}); the file is "
                         + ("closed and readable" if last else "readable as its last flush wrote it"))
            rows.messages = rows.messages[:fits]
            if last:
                rows.write_to(pose)
                pose.set_attrs(**{**attrs, "complete": False, "stopped": self.full})
                pose.flush()
                self.flushed = pose.rows
                pose.close()
            else:  # closing writes too (HDF5 gives back the file's free space at its end): not even that
                self.abandoned = True
            rows.messages = []
        except (OSError, RuntimeError) as e:
            self.abandoned = True
            if not disk_full(e):
                raise
            self.full = (f"disk full: recording {pose.path} stopped: writing to it failed ({_reason(e)}); it holds "
                         f"the {self.flushed} rows of its last flush")
            rows.messages = []

    def _room(self, need: int) -> bool:
        """Whether the disk holds ``need`` bytes past the file's end: reserved for it, or (on a
        filesystem that cannot reserve) free."""
        try:
            if self.pose.reserve(need):
                return True
        except OSError as e:
            if disk_full(e):
                return False
            raise
        return free_bytes(self.pose.path.parent) >= need


def _write(writer: _Writer, rows: _Rows, conn, **attrs: Any) -> int:
    """Write, telling the pipeline if the disk is full; the rows that could not be written."""
    total = writer.flushed + len(rows.messages)
    writer.write(rows, **attrs)
    if writer.full is None:
        return 0
    _tell(conn, ("full", writer.full))
    return total - writer.flushed


def _reason(e: BaseException) -> str:
    """The gist of an OSError or of h5py's long RuntimeError, on one line."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = " ".join(str(e).split())
    for known in ("No space left on device", "Disk quota exceeded"):
        if known in text:
            return known
    return text[:200]


def _exit_now(sock, code: int) -> None:
    """End the process without h5py's clean-up, which crashes on a file whose write failed."""
    sock.close(0)
    os._exit(code)


def recorder_main(
    path: str, endpoint: str, n_neural: int, run_info: dict, conn, flush_interval: float, camera: str | None = None,
    pupil: bool = False, motion_svd: int = 0,
) -> None:
    """Record the frame messages of ``camera`` (None: every camera) and the ``meta`` messages;
    the pupil's columns with ``pupil``, a ``motion_svd`` column of that many components."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the pipeline ends the recording, not Ctrl-C
    sock = zmq.Context.instance().socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    existed = os.path.lexists(path)
    try:
        pose = PoseFile(path, _columns(n_neural, pupil, motion_svd))
        pose.set_attrs(run=run_info)
        pose.flush()
        pose.reserve(_LOW)  # room to close the file, should the disk fill before the first rows
    except (OSError, RuntimeError) as e:
        _tell(conn, ("error", f"{'disk full: ' if disk_full(e) else ''}cannot create recording {path}: {_reason(e)}"))
        if not existed and os.path.lexists(path):
            os.unlink(path)  # a file this process began and could not make a recording of
        _exit_now(sock, 1)
    writer = _Writer(pose)
    rows = _Rows(pupil, motion_svd)
    meta: dict | None = None
    unrecorded = 0  # frames that arrived after the disk filled
    try:
        _tell(conn, ("ready",))
        next_flush = time.monotonic() + flush_interval
        next_meta = time.monotonic()
        finished = False
        while not finished:
            gone = not parent_alive()
            if sock.poll(0 if gone else 50, zmq.POLLIN):
                topic, payload = sock.recv_multipart()
                message = protocol.unpack(topic, payload)
                if protocol.topic_kind(topic) == protocol.TOPIC_FRAME:
                    if camera is None or message.get("camera") == camera:
                        if writer.full is None:
                            rows.messages.append(message)
                        else:
                            unrecorded += 1
                else:
                    meta = message
                    finished = message["status"] in _FINAL
            elif gone:
                break
            if writer.full is None and (finished or time.monotonic() >= next_flush):
                due = finished or time.monotonic() >= next_meta
                unrecorded += _write(writer, rows, conn, meta=meta if due else None)
                next_flush = time.monotonic() + flush_interval
                if due and meta is not None:
                    next_meta = time.monotonic() + _META_EVERY_S
        if writer.full is None:
            unrecorded += _write(writer, rows, conn, complete=finished)
        _tell(conn, ("closed", writer.flushed, unrecorded))
    except (OSError, RuntimeError, protocol.ProtocolError) as e:
        writer.abandoned = writer.abandoned or not isinstance(e, protocol.ProtocolError)
        _tell(conn, ("error", f"recording {path} failed: {_reason(e)}"))
    finally:
        if writer.abandoned:
            _exit_now(sock, 0)
        pose.close()
        sock.close(0)


class Recording:
    """The pipeline's side of a recording: starts the recorder process, watches it, ends it."""

    def __init__(
        self, ctx, path: Path, endpoint: str, n_neural: int, run_info: dict, flush_interval: float, camera: str | None = None,
        pupil: bool = False, motion_svd: int = 0,
    ):
        self.path = path
        self.rows: int | None = None
        self.error: str | None = None  # why the recording stopped before the run (a full disk); the run goes on
        self.unrecorded = 0  # frames published after it stopped
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=recorder_main, name="facestream-recorder",
            args=(str(self.path), endpoint, n_neural, run_info, child, flush_interval, camera, pupil, motion_svd),
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
        if message[0] == "full":
            self.error = message[1]
        if message[0] == "closed":
            self.rows = message[1]
            self.unrecorded = message[2] if len(message) > 2 else 0
