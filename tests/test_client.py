"""The Python client over real ZeroMQ sockets: latest-only reading under a fast publisher,
every-frame reading, the callback form, typed results, both encodings."""
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from facestream.streamer.client import Subscriber
from facestream.streamer.protocol import Result
from facestream.streamer.publisher import Publisher

N_FAST = 3000

# A publisher in its own process, sending N frames at about 2000 per second (far faster than
# the reader below takes them), then a last `meta` saying it ended.
_FAST_PUBLISHER = textwrap.dedent("""
    import sys, time
    from facestream.streamer.publisher import Publisher
    endpoint, n = sys.argv[1], int(sys.argv[2])
    pub = Publisher(endpoint, send_hwm=100_000)
    pub.wait_for_subscribers(1, should_stop=lambda: False)
    t0 = time.monotonic()
    for i in range(n):
        pub.publish_frame({"frame_id": i, "t_capture_ns": time.monotonic_ns(), "t_camera_ns": None,
                           "camera": "synthetic", "keypoints": [[float(i), 2.0, 0.9]] * 15,
                           "neural": [0.5, -0.5], "dropped": 0})
        ahead = t0 + (i + 1) / 2000 - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    pub.publish_meta({"status": "ended"})
    pub.close()
""")


def _fields(i: int) -> dict:
    return {"frame_id": i, "t_capture_ns": time.monotonic_ns(), "t_camera_ns": 20_000_000 * i, "camera": "synthetic",
            "keypoints": [[float(i), 2.5, 0.75]] * 15, "neural": [0.25, -1.0, 3.0], "dropped": 0}


def test_latest_never_falls_behind_a_fast_publisher(endpoint):
    with Subscriber(endpoint) as sub:
        proc = subprocess.Popen([sys.executable, "-c", _FAST_PUBLISHER, endpoint, str(N_FAST)])
        try:
            seqs = []
            deadline = time.monotonic() + 120
            while (sub.meta or {}).get("status") != "ended" and time.monotonic() < deadline:
                msg = sub.latest(timeout=0.5)
                if msg is not None:
                    seqs.append(msg.result.seq)
                    time.sleep(0.01)  # the reader's own work: 20 frames arrive meanwhile
        finally:
            assert proc.wait(timeout=60) == 0
    assert sub.meta["status"] == "ended"
    # when the publisher stops, the reader holds its very last frame: no backlog left to read
    assert seqs[-1] == N_FAST - 1
    assert seqs == sorted(set(seqs))  # never an older frame after a newer one
    assert len(seqs) < N_FAST / 3  # it read a fraction, not a queue of thousands
    # every frame is accounted for: returned or skipped unread, none lost in the queues
    assert sub.lost == 0 and len(seqs) + sub.skipped == N_FAST == sub.frames


def test_recv_gives_every_frame_in_order_and_results_are_typed(endpoint):
    pub = Publisher(endpoint)
    with Subscriber(endpoint) as sub:
        assert pub.wait_for_subscribers(1, should_stop=lambda: False)
        for i in range(50):
            pub.publish_frame(_fields(i))
        got = [sub.recv(timeout=5) for _ in range(50)]
    pub.close()
    assert [m.result.seq for m in got] == list(range(50))
    r = got[7].result
    assert isinstance(r, Result) and r.frame_id == 7 and r.t_camera_ns == 140_000_000
    assert r.keypoints.shape == (15, 3) and r.keypoints.dtype == np.float64 and r.keypoints[3, 0] == 7.0
    np.testing.assert_array_equal(r.neural, [0.25, -1.0, 3.0])
    assert r.keypoints_predicted is None and r.t_predicted_ns is None
    assert r.age_ms() >= got[7].latency_ms >= 0 and got[7].age_ms() >= got[7].latency_ms


def test_latest_waits_for_a_frame_and_keeps_meta_at_hand(endpoint):
    pub = Publisher(endpoint)
    with Subscriber(endpoint) as sub:
        assert pub.wait_for_subscribers(1, should_stop=lambda: False)
        assert sub.latest(timeout=0.2) is None  # nothing published: it gives up after the timeout
        pub.publish_meta({"status": "running"})
        assert sub.latest(timeout=0.3) is None  # a meta alone is no frame ...
        assert sub.meta == {"v": 1, "encoding": "msgpack", "status": "running"}  # ... but is kept
        pub.publish_frame(_fields(0))
        assert sub.latest(timeout=5).result.seq == 0
    pub.close()


@pytest.mark.parametrize("latest", [False, True])
def test_callback_form_stops_when_the_callback_says_so(endpoint, latest):
    pub = Publisher(endpoint)
    seen = []

    def on_result(result: Result):
        seen.append(result.seq)
        return result.seq < 9 if not latest else result.seq != 19

    with Subscriber(endpoint) as sub:
        assert pub.wait_for_subscribers(1, should_stop=lambda: False)
        for i in range(20):
            pub.publish_frame(_fields(i))
        sub.run(on_result, latest=latest, should_stop=lambda: len(seen) > 100)
    pub.close()
    if latest:
        assert seen[-1] == 19 and seen == sorted(seen)
    else:
        assert seen == list(range(10))


def test_json_stream_reads_like_msgpack(endpoint):
    pub = Publisher(endpoint, encoding="json")
    with Subscriber(endpoint) as sub:
        assert pub.wait_for_subscribers(1, should_stop=lambda: False)
        sent = pub.publish_frame(_fields(3))
        pub.publish_meta({"status": "running"})
        msg = sub.recv(timeout=5)
        assert sub.recv(timeout=5).topic == "meta"
    pub.close()
    assert msg.data == sent and msg.result.keypoints[0, 0] == 3.0
    assert sub.meta["encoding"] == "json"
