"""Issue 20, items 1 and 6: a flood of subscription messages never stops the frames, and the status
says whether the camera stalled or the pipeline is behind it.

Real runs (``facestream run`` in a subprocess, the synthetic camera, the tiny tracker model so
that the tracker's speed does not matter), real ZeroMQ sockets on loopback. docs/reliability.md
lists the promises and the figures measured.
"""
import re
import signal
import subprocess
import sys
import threading
import time

import psutil
import zmq

from facestream.streamer.client import Subscriber
from facestream.streamer.pipeline import status_line
from facestream.streamer.publisher import MAX_TOPICS

from helpers import free_port, tiny_model

CLI = [sys.executable, "-m", "facestream.streamer.cli"]


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def _flood(sock: zmq.Socket, seconds: float, distinct_every: int, sent: list) -> None:
    """Subscribe and unsubscribe ``frame`` as fast as a raw XSUB socket can, with every
    ``distinct_every``-th message a subscription to a frame topic never seen before."""
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(500):
            if n % distinct_every == 0:
                message = b"\x01frame/flood%d" % n
            else:
                message = b"\x01frame" if n % 2 else b"\x00frame"
            try:
                sock.send(message, zmq.NOBLOCK)
                n += 1
            except zmq.Again:
                pass
    sent.append(n)


def _gaps(times: list[int]) -> list[float]:
    return [(b - a) / 1e9 for a, b in zip(times, times[1:])]


def test_a_subscription_flood_never_stops_the_frames_nor_reads_as_a_camera_stall(tmp_path):
    """A healthy subscriber's frames during a 6 s flood of subscribe/unsubscribe messages (one in
    ten a frame topic never seen before: some hundred thousands, far past MAX_TOPICS) come with gaps
    like those without it (the same run, just before, is the baseline); no ``meta`` says the
    camera stalled, and the publisher tracks at most MAX_TOPICS topics. Before the fix the
    tracker loop read every queued subscription message: the frames stopped for 0.8 s and
    ``meta`` said ``no frame for 0.8 s`` (the meta check fails there whatever the machine's
    load; the gap check, with its margin for a loaded machine, may not). The flooder stays
    connected while the frames are counted: libzmq's own removal of its topics when it
    disconnects costs a frame gap of about half a second per million topics, inside one send
    (docs/reliability.md), which the publisher cannot bound and this test does not measure."""
    model = tiny_model(tmp_path / "tiny")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    proc = _start("run", "--publish", endpoint, "--policy", "latest", "--fps", "30", "--model", str(model),
                  "--engine", "onnx", "--no-monitor", "--json", "--quiet")
    frames: list[int] = []
    metas: list[dict] = []
    try:
        with Subscriber(endpoint) as sub:
            def read(seconds: float) -> None:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    m = sub.recv(timeout=0.2)
                    if m is None:
                        assert proc.poll() is None, proc.stderr.read()
                    elif m.topic == "frame":
                        frames.append(m.t_receive_ns)
                    elif m.topic == "meta":
                        metas.append(m.data)

            deadline = time.monotonic() + 90
            while len(frames) < 30 and time.monotonic() < deadline:  # started, the tracker warm
                read(0.2)
            assert len(frames) >= 30, "the run never streamed"
            frames.clear()
            read(4.0)
            baseline = max(_gaps(frames))
            n_base, meta_base = len(frames), len(metas)
            rss_before = psutil.Process(proc.pid).memory_info().rss
            sent: list = []
            # connected until the frames have been counted: its disconnection is not what is measured here
            flood_sock = zmq.Context.instance().socket(zmq.XSUB)
            flood_sock.setsockopt(zmq.LINGER, 0)
            flood_sock.connect(endpoint)
            time.sleep(0.2)
            flooder = threading.Thread(target=_flood, args=(flood_sock, 6.0, 10, sent))
            t_flood = time.monotonic_ns()
            flooder.start()
            read(6.5)
            flooder.join()
            read(2.0)  # the flood's last messages
            rss_after = psutil.Process(proc.pid).memory_info().rss
            flood_sock.close()
    finally:
        out, err = _stop(proc)
    gaps = _gaps(frames[n_base - 1:])
    during = max(gaps)
    at = (frames[n_base - 1 + gaps.index(during)] - t_flood) / 1e9  # when the largest gap began
    print(f"flood of {sent[0]} messages: frame gap {during:.3f} s from {at:.1f} s (baseline {baseline:.3f} s), "
          f"rss {rss_before / 1e6:.0f} -> {rss_after / 1e6:.0f} MB")
    assert sent and sent[0] > 100_000, "the flood was too small to show anything"
    # a margin over this run's own pace (0.1-0.4 s measured here); before the fix the frames stopped for 0.8 s
    assert during < max(0.75, 4 * baseline), (during, baseline, at)
    flood_metas = metas[meta_base:]
    assert flood_metas, "no meta during the flood"
    for meta in flood_metas:
        assert not meta["cameras"][0]["stalled"], meta["cameras"][0]
        assert meta["status"] == "running"
        assert "STALLED" not in status_line(meta, 0.0, meta["stats"]["latency_ms"])
    subscriptions = flood_metas[-1]["subscriptions"]
    assert subscriptions["topics"] <= MAX_TOPICS
    assert subscriptions["frame_subscriptions"] >= 1  # the healthy subscriber is still counted
    assert proc.returncode == 0, err


def test_a_pipeline_slower_than_the_camera_reads_as_behind_not_stalled(tmp_path):
    """A hook that takes 0.8 s a frame (a tracker on a loaded machine, whatever the CPU) behind a
    30 frames/s camera, policy ``latest``: more than ``stall_after`` (0.5 s) passes between the
    frames the pipeline takes, yet the camera delivers all along. ``meta`` says the pipeline is
    behind, with both rates, and never that the camera stalled. Before the fix it said
    ``STALLED cam0: no frame for 0.8 s``. (The camera that truly stops still reads as stalled:
    test_reliability.py's frozen-capture test.)"""
    model = tiny_model(tmp_path / "tiny")
    hook = tmp_path / "slow.py"
    hook.write_text("import time\n\ndef hook(result):\n    time.sleep(0.8)\n")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    proc = _start("run", "--publish", endpoint, "--policy", "latest", "--fps", "30", "--model", str(model),
                  "--engine", "onnx", "--no-monitor", "--hook", f"{hook}:hook", "--json", "--quiet")
    metas: list[dict] = []
    try:
        with Subscriber(endpoint, topics=("meta",)) as sub:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and sum(m["stats"]["frames"] >= 4 for m in metas) < 4:
                m = sub.recv(timeout=0.2)
                if m is None:
                    assert proc.poll() is None, proc.stderr.read()
                elif m.data["status"] != "starting" and m.data["status"] != "waiting for subscribers":
                    metas.append(m.data)
    finally:
        out, err = _stop(proc)
    running = [m for m in metas if m["stats"]["frames"] >= 1]
    assert running, "the run never tracked a frame"
    for meta in running:
        assert not meta["cameras"][0]["stalled"], meta["cameras"][0]
        assert meta["status"] == "running"
        assert "STALLED" not in status_line(meta, 0.0, meta["stats"]["latency_ms"])
    late = running[-1]["cameras"][0]
    behind = re.fullmatch(r"pipeline (\d+) frames/s < camera (\d+)", late["behind"] or "")
    assert behind, late
    # about 1 frame/s against 30 (a loaded machine may slow the synthetic camera too)
    assert int(behind.group(1)) <= 2 and int(behind.group(2)) >= 10, late["behind"]
    assert late["rates_fps"]["camera"] > 5 * late["rates_fps"]["pipeline"]
    assert f"cam0 BEHIND ({late['behind']})" in status_line(running[-1], 0.0, running[-1]["stats"]["latency_ms"])
    assert proc.returncode == 0, err


def test_the_publisher_reads_a_bounded_share_of_subscriptions_per_look_and_tracks_a_bounded_set(endpoint):
    """One look reads at most SUBSCRIPTION_READS messages; topics past MAX_TOPICS, and topics that
    match nothing published, are counted and ignored; a topic whose last subscription leaves is
    forgotten. (Before: every queued message was read at each look and every topic was kept.)"""
    from facestream.streamer.publisher import SUBSCRIPTION_READS, Publisher

    from helpers import until

    pub = Publisher(endpoint)
    sock = zmq.Context.instance().socket(zmq.XSUB)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        n = MAX_TOPICS + 300
        time.sleep(0.3)
        for k in range(n):
            sock.send(b"\x01frame/cam%d" % k)
        for k in range(100):
            sock.send(b"\x01other/%d" % k)  # matches nothing published
        time.sleep(0.5)
        # look by look: each reads at most SUBSCRIPTION_READS, however much waits (how many are
        # ready at once depends on how fast ZeroMQ's I/O thread refills the socket's queue)
        looks = []
        deadline = time.monotonic() + 10
        while pub.subscription_messages < n + 100 and time.monotonic() < deadline:
            looks.append(pub._read_subscriptions())
            assert pub.subscription_messages == sum(looks)
            if not looks[-1]:
                time.sleep(0.01)
        assert pub.subscription_messages == n + 100, looks
        assert max(looks) <= SUBSCRIPTION_READS and len([k for k in looks if k]) >= (n + 100) / SUBSCRIPTION_READS, looks
        assert len(pub.subscriptions) == MAX_TOPICS
        assert pub.subscriptions_ignored == n - MAX_TOPICS + 100
        assert pub.frame_subscriptions == MAX_TOPICS
        for k in range(n):
            sock.send(b"\x00frame/cam%d" % k)
        until(lambda: pub.frame_subscriptions == 0 and pub.subscription_messages == 2 * n + 100, timeout=10,
              what="every topic forgotten")
        assert not pub.subscriptions
        report = pub.subscription_report()
        assert report["topics"] == 0 and report["ignored"] == 2 * (n - MAX_TOPICS) + 100
    finally:
        sock.close()
        pub.close()


def test_the_status_line_names_a_stalled_camera_and_a_pipeline_behind_apart():
    report = {"stats": {"frames": 10, "dropped": {"total": 0, "camera": 0, "overrun": 0, "skipped": 0}},
              "cameras": [{"name": "cam0", "stalled": "no frame for 0.6 s", "behind": None},
                          {"name": "cam1", "stalled": None, "behind": "pipeline 12 frames/s < camera 50"}],
              "monitor": None, "recording": None}
    line = status_line(report, 12.0, {"p50": 1.0, "p99": 2.0})
    assert "STALLED cam0: no frame for 0.6 s" in line and "cam1 BEHIND (pipeline 12 frames/s < camera 50)" in line
    assert "STALLED cam1" not in line and "cam0 BEHIND" not in line
