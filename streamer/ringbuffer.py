"""Frames in shared memory: one writer, any number of readers, each with its own cursor.

The camera must never wait for the tracker, so the writer never blocks: it overwrites the oldest
slot whether or not anybody has read it, and a reader that was lapped learns exactly how many
frames it lost. There are no locks or semaphores. Each slot is guarded by a sequence number
(a seqlock): the writer sets the slot's sequence to -1, writes pixels and metadata, publishes the
sequence as the frame's ring index, and only then advances the write counter. A reader checks the
sequence, copies the slot, and checks the sequence again; if it changed, the frame was overwritten
during the copy and counts as missed, so a torn frame is never returned.

Readers wait by polling the write counter with a short sleep (0.5 ms by default). A cross-process
wakeup (semaphore, pipe, futex) would make the writer do a system call per frame and per reader,
and wake-up latency across processes is of the same order as the poll interval anyway.

Ordering: the writer's stores happen in program order, one numpy call after another, and the
readers' loads likewise. x86-64 (TSO) keeps stores ordered with stores and loads with loads, and
an aligned int64 store is atomic, which is all the seqlock needs. On weakly ordered CPUs (ARM,
POWER) the stores could become visible out of order and a torn frame could pass the check; that
would need explicit memory barriers, which numpy cannot issue.

Layout of the segment, each part 64-byte aligned::

    header  int64[8]           magic, layout version, slots, height, width, written, ended, 0
    meta    int64[slots, 5]    sequence, frame_id, t_capture_ns, t_camera_ns, dropped_before
    frames  uint8[slots, h, w]

A frame's ``truth`` (the synthetic camera's keypoints) does not travel: frames read from the ring
have ``truth=None``.
"""
from __future__ import annotations

import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory

import numpy as np

from ..camera_adapters.base import Frame

MAGIC = int.from_bytes(b"fsring\x00\x00", "little")
LAYOUT_VERSION = 2
DEFAULT_POLL_S = 0.0005

_HEADER_LEN, _H_WRITTEN, _H_ENDED = 8, 5, 6
_META_LEN, _M_SEQ, _M_FRAME_ID = 5, 0, 1
_ALIGN = 64

_register_lock = threading.Lock()


class RingBufferError(RuntimeError):
    """A ring buffer could not be created, attached or used; the message is one line."""


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _layout(slots: int, shape: tuple[int, int]) -> tuple[int, int, int]:
    """Byte offsets of meta and frames, and the total size."""
    meta = _aligned(_HEADER_LEN * 8)
    frames = meta + _aligned(slots * _META_LEN * 8)
    return meta, frames, frames + slots * shape[0] * shape[1]


def _open_untracked(name: str) -> shared_memory.SharedMemory:
    """Open an existing segment without registering it with this process's resource tracker.

    A registered segment is unlinked (with a warning) by the tracker when the process exits, and
    spawned children share their parent's tracker, so unregistering after the fact would also drop
    the owner's registration. Hence the registration is never made.
    """
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name, track=False)
    with _register_lock:
        register = resource_tracker.register

        def skip_this_segment(rname: str, rtype: str) -> None:
            if not (rtype == "shared_memory" and rname.lstrip("/") == name):
                register(rname, rtype)

        resource_tracker.register = skip_this_segment
        try:
            return shared_memory.SharedMemory(name)
        finally:
            resource_tracker.register = register


_PREFIX = "fsring_"  # then the owner's pid: fsring_<pid>_<random>


def remove_stale_rings() -> list[str]:
    """Free the rings whose owner is gone without freeing them (every process of a run killed
    at once, Python's resource tracker included); their names."""
    removed = []
    for name in os.listdir("/dev/shm"):
        owner = name[len(_PREFIX):].partition("_")[0]
        if not (name.startswith(_PREFIX) and owner.isdigit() and int(owner) < 2**22) or _alive(int(owner)):
            continue
        try:
            os.unlink(f"/dev/shm/{name}")
            removed.append(name)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class RingBuffer:
    """Preallocated shared-memory ring of uint8 (h, w) frames. Exactly one process writes."""

    def __init__(self, shm: shared_memory.SharedMemory, owner: bool) -> None:
        self._shm = shm
        self.owner = owner
        self.name: str = shm.name
        buf = shm.buf
        if buf is None or len(buf) < _HEADER_LEN * 8:
            raise RingBufferError(f"shared memory {self.name!r} is not a facestream ring buffer")
        magic, version, slots, h, w = np.frombuffer(buf, np.int64, 5).tolist()
        if magic != MAGIC:
            raise RingBufferError(f"shared memory {self.name!r} is not a facestream ring buffer")
        if version != LAYOUT_VERSION:
            raise RingBufferError(f"ring buffer {self.name!r} has layout {version}, expected {LAYOUT_VERSION}")
        self.slots: int = slots
        self.shape: tuple[int, int] = (h, w)
        meta_at, frames_at, size = _layout(slots, self.shape)
        if len(buf) < size:
            raise RingBufferError(f"ring buffer {self.name!r} is truncated ({len(buf)} < {size} bytes)")
        self._header: np.ndarray | None = np.ndarray((_HEADER_LEN,), np.int64, buf)
        self._meta: np.ndarray | None = np.ndarray((slots, _META_LEN), np.int64, buf, meta_at)
        self._frames: np.ndarray | None = np.ndarray((slots, h, w), np.uint8, buf, frames_at)
        self._unlinked = False

    @classmethod
    def create(cls, shape: tuple[int, int], slots: int = 64) -> RingBuffer:
        """Allocate a new ring under a fresh unique name; this process owns it and must unlink it.

        Free space in /dev/shm is checked first (a full tmpfs would kill the writer with SIGBUS
        mid-run), and every page is touched so that the first lap of writes does not page-fault.
        """
        if len(shape) != 2 or min(shape) <= 0 or slots <= 0:
            raise RingBufferError(f"bad ring buffer geometry: shape {tuple(shape)}, {slots} slots")
        h, w, slots = int(shape[0]), int(shape[1]), int(slots)
        size = _layout(slots, (h, w))[2]
        if os.path.isdir("/dev/shm"):
            remove_stale_rings()
            st = os.statvfs("/dev/shm")
            if st.f_bavail * st.f_frsize < size:
                raise RingBufferError(
                    f"not enough shared memory: the ring needs {size / 2**20:.0f} MiB, /dev/shm has "
                    f"{st.f_bavail * st.f_frsize / 2**20:.0f} MiB free (containers: raise --shm-size)"
                )
        while True:
            try:
                shm = shared_memory.SharedMemory(f"{_PREFIX}{os.getpid()}_{secrets.token_hex(8)}", create=True, size=size)
                break
            except FileExistsError:
                continue
        np.ndarray((_HEADER_LEN,), np.int64, shm.buf)[:] = [MAGIC, LAYOUT_VERSION, slots, h, w, 0, 0, 0]
        ring = cls(shm, owner=True)
        _, meta, frames = ring._live_views()
        meta[:, _M_SEQ] = -1
        frames.fill(0)
        return ring

    @classmethod
    def attach(cls, name: str) -> RingBuffer:
        """Map an existing ring (any process); shape and slots come from its header."""
        try:
            shm = _open_untracked(name)
        except FileNotFoundError:
            raise RingBufferError(f"no ring buffer named {name!r}") from None
        except (OSError, ValueError) as e:
            raise RingBufferError(f"cannot attach ring buffer {name!r}: {e}") from None
        try:
            return cls(shm, owner=False)
        except RingBufferError:
            shm.close()
            raise

    @property
    def written(self) -> int:
        """Frames written so far; the next frame gets this ring index."""
        return int(self._live_header()[_H_WRITTEN])

    @property
    def ended(self) -> bool:
        """The writer called mark_ended()."""
        return bool(self._live_header()[_H_ENDED])

    def write(self, frame: Frame) -> int:
        """Copy the frame into the next slot and return its ring index. Never blocks."""
        header, meta, frames = self._live_views()
        pixels = frame.pixels
        if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.shape != self.shape:
            got = f"{pixels.dtype} {pixels.shape}" if isinstance(pixels, np.ndarray) else type(pixels).__name__
            raise RingBufferError(f"frame must be uint8 {self.shape}, got {got}")
        if header[_H_ENDED]:
            raise RingBufferError(f"ring buffer {self.name!r} has ended; no more frames can be written")
        index = int(header[_H_WRITTEN])
        slot = index % self.slots
        meta[slot, _M_SEQ] = -1
        np.copyto(frames[slot], pixels)
        meta[slot, _M_FRAME_ID:] = (frame.frame_id, frame.t_capture_ns, frame.t_camera_ns, frame.dropped_before)
        meta[slot, _M_SEQ] = index
        header[_H_WRITTEN] = index + 1
        return index

    def mark_ended(self) -> None:
        """The source has no more frames; readers drain what is left, then see the end."""
        self._live_header()[_H_ENDED] = 1

    def reader(self, from_start: bool = False, poll: float = DEFAULT_POLL_S) -> RingReader:
        """A new cursor at the next frame to be written, or at the oldest frame still held."""
        written = self.written
        return RingReader(self, max(0, written - self.slots) if from_start else written, poll)

    def close(self) -> None:
        """Unmap the segment in this process. Safe to call twice; readers must be done first."""
        self._header = self._meta = self._frames = None
        self._shm.close()

    def unlink(self) -> None:
        """Free the segment (owner only, once). Processes that still map it keep their mapping."""
        if not self.owner:
            raise RingBufferError(f"only the owner can unlink ring buffer {self.name!r}")
        if not self._unlinked:
            self._unlinked = True
            self._shm.unlink()

    def __del__(self) -> None:
        if hasattr(self, "_shm"):
            self.close()

    def __repr__(self) -> str:
        return f"RingBuffer(name={self.name!r}, shape={self.shape}, slots={self.slots})"

    def _live_header(self) -> np.ndarray:
        if self._header is None:
            raise RingBufferError(f"ring buffer {self.name!r} is closed")
        return self._header

    def _live_views(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._header is None or self._meta is None or self._frames is None:
            raise RingBufferError(f"ring buffer {self.name!r} is closed")
        return self._header, self._meta, self._frames


@dataclass
class RingRead:
    """One frame taken from the ring, with what this reader lost since its previous read."""

    frame: Frame
    index: int
    missed: int
    skipped: int


class RingReader:
    """A cursor into a RingBuffer. Not shared between threads."""

    def __init__(self, ring: RingBuffer, cursor: int, poll: float = DEFAULT_POLL_S) -> None:
        self.ring = ring
        self.poll = poll
        self.cursor = cursor
        self.missed_total = 0
        self.skipped_total = 0
        self.read_total = 0
        self._missed = 0
        self._skipped = 0

    @property
    def exhausted(self) -> bool:
        """The writer has ended and this reader has read or lost every frame."""
        header = self.ring._live_header()
        return bool(header[_H_ENDED]) and self.cursor >= int(header[_H_WRITTEN])

    def next(self, timeout: float | None = None) -> RingRead | None:
        """The next frame in order. None on timeout, or when the ring has ended and is drained.

        If the writer lapped this reader, it jumps to the oldest frame still held and the frames
        it lost are reported in ``missed``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            written = self._wait(deadline)
            if written is None:
                return None
            oldest = written - self.ring.slots
            if self.cursor < oldest:
                self._lose(oldest - self.cursor)
            read = self._take(self.cursor)
            if read is not None:
                return read

    def latest(self, timeout: float | None = None) -> RingRead | None:
        """The newest frame; frames passed over to reach it are reported in ``skipped``.

        None on timeout, or when the ring has ended and is drained.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            written = self._wait(deadline)
            if written is None:
                return None
            newest = written - 1
            self._skipped += newest - self.cursor
            self.skipped_total += newest - self.cursor
            self.cursor = newest
            read = self._take(newest)
            if read is not None:
                return read

    def _wait(self, deadline: float | None) -> int | None:
        """The write counter once it is past the cursor; None on timeout or ended-and-drained."""
        header = self.ring._live_header()
        while True:
            ended = header[_H_ENDED]
            written = int(header[_H_WRITTEN])
            if self.cursor < written:
                return written
            if ended or (deadline is not None and time.monotonic() >= deadline):
                return None
            time.sleep(self.poll)

    def _lose(self, n: int) -> None:
        self._missed += n
        self.missed_total += n
        self.cursor += n

    def _take(self, index: int) -> RingRead | None:
        """Copy the frame with this ring index out of its slot; None (and one missed) if it is gone."""
        _, meta, frames = self.ring._live_views()
        slot = index % self.ring.slots
        if meta[slot, _M_SEQ] != index:
            self._lose(1)
            return None
        pixels = frames[slot].copy()
        frame_id, t_capture, t_camera, dropped = (int(v) for v in meta[slot, _M_FRAME_ID:])
        if meta[slot, _M_SEQ] != index:
            self._lose(1)
            return None
        frame = Frame(pixels, frame_id, t_capture, t_camera, dropped)
        read = RingRead(frame=frame, index=index, missed=self._missed, skipped=self._skipped)
        self.cursor = index + 1
        self.read_total += 1
        self._missed = self._skipped = 0
        return read
