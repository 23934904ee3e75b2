"""Ring buffer tests: real shared memory, real processes (spawn), no mocks."""
from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import textwrap
import time
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np
import pytest

from facestream.camera_adapters.base import Frame
from facestream.streamer.ringbuffer import RingBuffer, RingBufferError

SPAWN = mp.get_context("spawn")
JOIN_S = 60
has_dev_shm = pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs /dev/shm")


def make_frame(index: int, shape: tuple[int, int]) -> Frame:
    """A frame whose every pixel and every metadata field encode its ring index."""
    return Frame(
        pixels=np.full(shape, index % 251, np.uint8),
        frame_id=index,
        t_capture_ns=1_000_000 + index,
        t_camera_ns=2_000_000 + index,
        dropped_before=index % 3,
    )


def check_read(read, shape: tuple[int, int]) -> str | None:
    """What is wrong with a read of a make_frame() frame, or None."""
    f = read.frame
    i = read.index
    if f.frame_id != i:
        return f"index {i}: frame_id {f.frame_id}"
    if f.pixels.shape != shape or f.pixels.dtype != np.uint8 or not np.all(f.pixels == i % 251):
        return f"index {i}: torn or wrong pixels {np.unique(f.pixels)[:5]}"
    if (f.t_capture_ns, f.t_camera_ns, f.dropped_before) != (1_000_000 + i, 2_000_000 + i, i % 3):
        return f"index {i}: metadata {f.t_capture_ns, f.t_camera_ns, f.dropped_before}"
    return None


# ---- child processes (module level so that spawn can import them) ----

def writer_child(name: str, n: int, pace_s: float) -> None:
    ring = RingBuffer.attach(name)
    frames = [make_frame(i, ring.shape) for i in range(251)]
    for i in range(n):
        f = frames[i % 251]
        f.frame_id, f.t_capture_ns, f.t_camera_ns, f.dropped_before = i, 1_000_000 + i, 2_000_000 + i, i % 3
        assert ring.write(f) == i
        if pace_s:
            time.sleep(pace_s)
    ring.mark_ended()
    ring.close()


def reader_child(name: str, ready, results, delay_s: float) -> None:
    ring = RingBuffer.attach(name)
    rd = ring.reader()
    ready.set()
    errors: list[str] = []
    indices: list[int] = []
    missed: list[int] = []
    while (r := rd.next(timeout=JOIN_S)) is not None:
        indices.append(r.index)
        missed.append(r.missed)
        if (e := check_read(r, ring.shape)) is not None:
            errors.append(e)
        if delay_s and not ring.ended:
            time.sleep(delay_s)
    results.put(
        {
            "indices": indices,
            "missed": missed,
            "missed_total": rd.missed_total,
            "read_total": rd.read_total,
            "exhausted": rd.exhausted,
            "errors": errors[:5],
        }
    )
    del rd
    ring.close()


def idle_reader_child(name: str, ready, stop) -> None:
    ring = RingBuffer.attach(name)
    readers = [ring.reader(), ring.reader(from_start=True)]
    ready.set()
    stop.wait(JOIN_S)
    del readers
    ring.close()


# ---- fixtures ----

@pytest.fixture
def new_ring():
    rings: list[RingBuffer] = []

    def make(shape: tuple[int, int] = (8, 10), slots: int = 8) -> RingBuffer:
        ring = RingBuffer.create(shape, slots)
        rings.append(ring)
        return ring

    yield make
    for ring in rings:
        ring.close()
        ring.unlink()


def run_children(*procs) -> None:
    for p in procs:
        p.join(JOIN_S)
    for p in procs:
        if p.is_alive():
            p.kill()
            pytest.fail(f"{p.name} did not finish within {JOIN_S} s")
        assert p.exitcode == 0, f"{p.name} exited with {p.exitcode}"


# ---- single process ----

def test_round_trip_all_fields(new_ring):
    ring = new_ring((6, 7), slots=4)
    rd = ring.reader()
    pixels = np.arange(42, dtype=np.uint8).reshape(6, 7)
    truth = np.arange(45, dtype=np.float32).reshape(15, 3) / 7
    assert ring.write(Frame(pixels, frame_id=41, t_capture_ns=123, t_camera_ns=456, dropped_before=2, truth=truth)) == 0
    assert ring.write(Frame(pixels[::-1].copy(), frame_id=42, t_capture_ns=124)) == 1
    assert ring.written == 2

    a = rd.next(timeout=0)
    assert (a.index, a.missed, a.skipped) == (0, 0, 0)
    assert np.array_equal(a.frame.pixels, pixels)
    assert (a.frame.frame_id, a.frame.t_capture_ns, a.frame.t_camera_ns, a.frame.dropped_before) == (41, 123, 456, 2)
    assert a.frame.truth is None, "truth does not travel through the ring"

    b = rd.next(timeout=0)
    assert b.index == 1 and np.array_equal(b.frame.pixels, pixels[::-1])
    assert (b.frame.frame_id, b.frame.t_camera_ns, b.frame.dropped_before, b.frame.truth) == (42, -1, 0, None)
    assert rd.next(timeout=0.01) is None
    assert rd.read_total == 2


def test_order_and_reader_start(new_ring):
    ring = new_ring(slots=8)
    early = ring.reader()
    for i in range(5):
        ring.write(make_frame(i, ring.shape))
    late = ring.reader()
    oldest = ring.reader(from_start=True)
    ring.write(make_frame(5, ring.shape))

    assert [early.next(0).index for _ in range(6)] == list(range(6))
    assert [r.index for r in iter(lambda: oldest.next(0), None)] == list(range(6))
    assert late.next(0).index == 5 and late.next(0) is None


def test_from_start_after_wrap_begins_at_oldest_held(new_ring):
    ring = new_ring(slots=4)
    for i in range(10):
        ring.write(make_frame(i, ring.shape))
    rd = ring.reader(from_start=True)
    reads = list(iter(lambda: rd.next(0), None))
    assert [r.index for r in reads] == [6, 7, 8, 9]
    assert all(check_read(r, ring.shape) is None for r in reads)
    assert rd.missed_total == 0


def test_lap_detection_is_exact(new_ring):
    slots = 8
    ring = new_ring(slots=slots)
    rd = ring.reader()
    for i in range(3 * slots):
        ring.write(make_frame(i, ring.shape))
    ring.mark_ended()
    reads = list(iter(lambda: rd.next(0), None))
    assert reads[0].index == 2 * slots and reads[0].missed == 2 * slots
    assert [r.missed for r in reads[1:]] == [0] * (slots - 1)
    assert [r.index for r in reads] == list(range(2 * slots, 3 * slots))
    assert all(check_read(r, ring.shape) is None for r in reads)
    assert rd.missed_total == 2 * slots
    assert rd.missed_total + rd.read_total == ring.written == 3 * slots


def test_latest_returns_newest_and_counts_skipped(new_ring):
    ring = new_ring(slots=4)
    rd = ring.reader()
    for i in range(10):
        ring.write(make_frame(i, ring.shape))
    r = rd.latest(0)
    assert (r.index, r.skipped, r.missed) == (9, 9, 0)
    assert check_read(r, ring.shape) is None
    assert rd.latest(timeout=0.01) is None

    for i in range(10, 13):
        ring.write(make_frame(i, ring.shape))
    r = rd.latest(0)
    assert (r.index, r.skipped, r.missed) == (12, 2, 0)
    ring.write(make_frame(13, ring.shape))
    r = rd.next(0)
    assert (r.index, r.skipped, r.missed) == (13, 0, 0)
    assert (rd.skipped_total, rd.missed_total, rd.read_total) == (11, 0, 3)


@pytest.mark.timeout(20)
def test_ended_readers_drain_then_see_the_end(new_ring):
    ring = new_ring(slots=8)
    rd = ring.reader(from_start=True)
    newest = ring.reader(from_start=True)
    for i in range(5):
        ring.write(make_frame(i, ring.shape))
    assert not ring.ended and not rd.exhausted
    ring.mark_ended()
    assert ring.ended and not rd.exhausted
    assert [rd.next().index for _ in range(5)] == list(range(5))
    assert rd.exhausted
    assert rd.next() is None and rd.latest() is None
    assert newest.latest().index == 4 and newest.latest() is None and newest.exhausted
    with pytest.raises(RingBufferError, match="ended"):
        ring.write(make_frame(5, ring.shape))


def test_close_is_not_blocked_by_readers_and_reads_are_private_copies():
    ring = RingBuffer.create((8, 10), slots=2)
    try:
        other = RingBuffer.attach(ring.name)
        rd = other.reader()
        ring.write(make_frame(0, ring.shape))
        r = rd.next(0)
        for i in range(1, 5):
            ring.write(make_frame(i, ring.shape))
        other.close()
        other.close()
        assert check_read(r, ring.shape) is None
        with pytest.raises(RingBufferError, match="closed"):
            rd.next(0)
    finally:
        ring.close()
        ring.unlink()


# ---- errors ----

def test_attach_missing_name():
    with pytest.raises(RingBufferError, match="no ring buffer named 'fsring_does_not_exist'") as e:
        RingBuffer.attach("fsring_does_not_exist")
    assert e.value.__suppress_context__ and "\n" not in str(e.value)


def test_attach_foreign_segment():
    shm = shared_memory.SharedMemory(create=True, size=4096)
    try:
        with pytest.raises(RingBufferError, match="not a facestream ring buffer"):
            RingBuffer.attach(shm.name)
    finally:
        shm.close()
        shm.unlink()


@pytest.mark.parametrize(
    "pixels",
    [np.zeros((8, 11), np.uint8), np.zeros((8, 10), np.uint16), np.zeros((8, 10, 1), np.uint8), [[0] * 10] * 8],
    ids=["shape", "dtype", "ndim", "list"],
)
def test_write_rejects_wrong_frames(new_ring, pixels):
    ring = new_ring((8, 10))
    with pytest.raises(RingBufferError, match=r"frame must be uint8 \(8, 10\)") as e:
        ring.write(Frame(pixels, 0, 0))
    assert "\n" not in str(e.value)
    assert ring.written == 0


@pytest.mark.parametrize("shape,slots", [((0, 10), 4), ((8, -1), 4), ((8, 10), 0), ((8, 10, 3), 4)])
def test_create_rejects_bad_geometry(shape, slots):
    with pytest.raises(RingBufferError, match="bad ring buffer geometry"):
        RingBuffer.create(shape, slots)


@has_dev_shm
def test_create_refuses_more_than_dev_shm_holds():
    with pytest.raises(RingBufferError, match="not enough shared memory"):
        RingBuffer.create((1 << 16, 1 << 16), slots=1 << 12)


# ---- several processes ----

def test_slow_reader_against_fast_writer_process_is_exact_and_never_torn(new_ring):
    ring = new_ring((240, 320), slots=4)
    rd = ring.reader()
    n = 20_000
    writer = SPAWN.Process(target=writer_child, args=(ring.name, n, 0.0), name="writer")
    writer.start()
    reads = []
    errors = []
    while (r := rd.next(timeout=JOIN_S)) is not None:
        reads.append((r.index, r.missed))
        if (e := check_read(r, ring.shape)) is not None:
            errors.append(e)
        time.sleep(0.0002)
    run_children(writer)

    assert errors == []
    assert ring.written == n and rd.exhausted
    assert sum(m for _, m in reads) == rd.missed_total > 0
    assert rd.missed_total + len(reads) == n
    indices = [i for i, _ in reads]
    assert indices == sorted(set(indices)) and indices[-1] == n - 1
    assert all(i - prev - 1 == m for (prev, _), (i, m) in zip([(-1, 0)] + reads, reads))


def test_readers_in_other_processes_keep_their_own_cursors(new_ring):
    n = 300
    ring = new_ring((32, 48), slots=128)
    results = SPAWN.Queue()
    fast_ready, slow_ready = SPAWN.Event(), SPAWN.Event()
    fast = SPAWN.Process(target=reader_child, args=(ring.name, fast_ready, results, 0.0), name="fast")
    slow = SPAWN.Process(target=reader_child, args=(ring.name, slow_ready, results, 0.03), name="slow")
    fast.start()
    slow.start()
    assert fast_ready.wait(JOIN_S) and slow_ready.wait(JOIN_S)
    for i in range(n):
        ring.write(make_frame(i, ring.shape))
        time.sleep(0.001)
    ring.mark_ended()
    got = sorted((results.get(timeout=JOIN_S) for _ in range(2)), key=lambda r: r["read_total"])
    run_children(fast, slow)
    slow_r, fast_r = got

    assert fast_r["errors"] == [] and slow_r["errors"] == []
    assert fast_r["indices"] == list(range(n))
    assert fast_r["missed_total"] == 0 and fast_r["exhausted"]
    assert slow_r["missed_total"] > 0 and slow_r["exhausted"]
    assert sum(slow_r["missed"]) == slow_r["missed_total"]
    assert slow_r["missed_total"] + slow_r["read_total"] == n
    assert slow_r["indices"][-1] == n - 1


def test_writer_never_waits_for_readers_that_do_not_read(new_ring):
    slots = 16
    ring = new_ring((16, 16), slots=slots)
    here = ring.reader()
    ready, stop = SPAWN.Event(), SPAWN.Event()
    idle = SPAWN.Process(target=idle_reader_child, args=(ring.name, ready, stop), name="idle readers")
    idle.start()
    try:
        assert ready.wait(JOIN_S)
        writer = SPAWN.Process(target=writer_child, args=(ring.name, 10 * slots, 0.0), name="writer")
        writer.start()
        run_children(writer)
    finally:
        stop.set()
        run_children(idle)
    assert ring.written == 10 * slots
    r = here.next(0)
    assert (r.index, r.missed) == (9 * slots, 9 * slots)


# ---- cleanup and the resource tracker ----

@has_dev_shm
def test_unlink_leaves_nothing_in_dev_shm():
    ring = RingBuffer.create((8, 10), slots=4)
    path = Path("/dev/shm") / ring.name
    assert path.exists()
    ring.close()
    ring.unlink()
    ring.unlink()
    assert not path.exists()
    with pytest.raises(RingBufferError, match="no ring buffer named"):
        RingBuffer.attach(ring.name)


def test_only_the_owner_unlinks(new_ring):
    ring = new_ring()
    other = RingBuffer.attach(ring.name)
    with pytest.raises(RingBufferError, match="only the owner"):
        other.unlink()
    other.close()


ATTACH_SCRIPT = """
import sys
from facestream.streamer.ringbuffer import RingBuffer
ring = RingBuffer.attach(sys.argv[1])
reader = ring.reader(from_start=True)
print(reader.next(0).index)
"""


@has_dev_shm
def test_independent_process_that_attaches_leaves_segment_and_no_warnings(new_ring, tmp_path):
    ring = new_ring(slots=4)
    ring.write(make_frame(0, ring.shape))
    script = tmp_path / "attach.py"
    script.write_text(ATTACH_SCRIPT)
    out = subprocess.run([sys.executable, str(script), ring.name], capture_output=True, text=True, timeout=JOIN_S)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"
    assert out.stderr == ""
    assert (Path("/dev/shm") / ring.name).exists()
    again = RingBuffer.attach(ring.name)
    assert again.written == 1
    again.close()


OWNER_SCRIPT = """
import multiprocessing as mp
import os
import sys

import numpy as np

from facestream.camera_adapters.base import Frame
from facestream.streamer.ringbuffer import RingBuffer


def child(name):
    ring = RingBuffer.attach(name)
    assert ring.reader(from_start=True).next(0).index == 0
    ring.close()


if __name__ == "__main__":
    ring = RingBuffer.create((4, 4), slots=2)
    print(ring.name, flush=True)
    ring.write(Frame(np.zeros((4, 4), np.uint8), 0, 0))
    p = mp.get_context("spawn").Process(target=child, args=(ring.name,))
    p.start()
    p.join()
    assert p.exitcode == 0
    if sys.argv[1] == "crash":
        os._exit(3)
    ring.close()
    ring.unlink()
"""


@has_dev_shm
@pytest.mark.parametrize("ending", ["unlink", "crash"])
def test_owner_with_attached_child_cleans_up_even_after_a_crash(tmp_path, ending):
    script = tmp_path / "owner.py"
    script.write_text(OWNER_SCRIPT)
    out = subprocess.run([sys.executable, str(script), ending], capture_output=True, text=True, timeout=JOIN_S)
    name = out.stdout.strip()
    assert name.startswith("fsring_"), out.stderr
    path = Path("/dev/shm") / name
    if ending == "unlink":
        assert out.returncode == 0, out.stderr
        assert out.stderr == ""
    else:
        assert out.returncode == 3, out.stderr
        assert "Traceback" not in out.stderr
        deadline = time.monotonic() + 10
        while path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not path.exists()
