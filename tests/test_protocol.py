"""Protocol v1 over real ZeroMQ sockets on loopback, decoded with plain msgpack."""
import time

import msgpack
import numpy as np
import pytest
import zmq

from facestream.streamer import protocol
from facestream.streamer.client import Subscriber
from facestream.streamer.protocol import ProtocolError, Result, check_frame
from facestream.streamer.publisher import PublishError, Publisher


def _frame_fields(i: int) -> dict:
    return {
        "frame_id": i, "t_capture_ns": time.monotonic_ns(), "t_camera_ns": None, "camera": "synthetic",
        "keypoints": [[1.5, 2.5, 0.9]] * 15, "neural": [0.25, -1.0], "dropped": 0,
    }


def _connected(pub: Publisher, sub: Subscriber) -> None:
    assert pub.wait_for_subscribers(1, should_stop=lambda: False)


def test_payload_is_plain_msgpack_any_decoder_reads(endpoint):
    pub = Publisher(endpoint)
    raw = zmq.Context.instance().socket(zmq.SUB)
    raw.setsockopt(zmq.SUBSCRIBE, b"frame")
    raw.connect(endpoint)
    try:
        assert pub.wait_for_subscribers(1, should_stop=lambda: False)
        pub.publish_frame(_frame_fields(7))
        assert raw.poll(5000)
        topic, payload = raw.recv_multipart()
        assert topic == b"frame/synthetic"  # frame/<camera>
        # strict decoding: no extension types, string keys only
        msg = msgpack.unpackb(payload, raw=False, strict_map_key=True, ext_hook=lambda *a: pytest.fail("ext type"))
        assert msg["v"] == 1 and msg["seq"] == 0 and msg["frame_id"] == 7
        assert msg["keypoints"][0] == [1.5, 2.5, 0.9] and msg["neural"] == [0.25, -1.0]
        assert isinstance(msg["t_publish_ns"], int) and msg["t_publish_ns"] >= msg["t_capture_ns"]
    finally:
        raw.close(0)
        pub.close()


def test_subscriber_sees_every_seq_and_counts_its_losses(endpoint):
    pub = Publisher(endpoint)
    with Subscriber(endpoint) as sub:
        _connected(pub, sub)
        for i in range(200):
            pub.publish_frame(_frame_fields(i))
        pub.publish_meta({"status": "running"})
        seqs = []
        while True:
            m = sub.recv(timeout=5)
            assert m is not None
            if m.topic == "meta":
                break
            seqs.append(m.data["seq"])
        assert seqs == list(range(200))
        assert sub.lost == 0 and sub.meta["status"] == "running"
        assert m.latency_ms is None
    pub.close()


def test_slow_subscriber_never_blocks_publisher_and_sees_gaps(endpoint):
    pub = Publisher(endpoint, send_hwm=10)
    with Subscriber(endpoint, rcv_hwm=10) as sub:
        _connected(pub, sub)
        t0 = time.monotonic()
        for i in range(5000):
            pub.publish_frame(_frame_fields(i))
        publish_s = time.monotonic() - t0
        time.sleep(0.3)
        received = 0
        while sub.recv(timeout=0.5) is not None:
            received += 1
        assert received < 5000  # the queues held only part of the burst
        assert sub.frames == received
        assert sub.lost > 0 and sub.lost + received <= 5000
        assert publish_s < 30  # finished at all: the publisher did not wait for the reader
    pub.close()


def test_port_in_use_is_a_one_line_error(endpoint):
    pub = Publisher(endpoint)
    with pytest.raises(PublishError) as e:
        Publisher(endpoint)
    assert endpoint in str(e.value) and "\n" not in str(e.value)
    pub.close()


def test_unknown_topic_and_version_are_refused():
    with pytest.raises(protocol.ProtocolError):
        protocol.unpack(b"other", protocol.pack({"v": 1}))
    with pytest.raises(protocol.ProtocolError):
        protocol.unpack(b"frame", protocol.pack({"v": 2}))
    with pytest.raises(protocol.ProtocolError):
        protocol.unpack(b"frame", b"\xc1garbage")


def test_json_encoding_carries_the_same_fields_in_the_same_two_part_layout(endpoint):
    import json

    pub = Publisher(endpoint, encoding="json")
    raw = zmq.Context.instance().socket(zmq.SUB)
    raw.setsockopt(zmq.SUBSCRIBE, b"")
    raw.connect(endpoint)
    try:
        assert pub.wait_for_subscribers(1, should_stop=lambda: False)
        sent = pub.publish_frame(_frame_fields(7))
        pub.publish_meta({"status": "running"})
        assert raw.poll(5000)
        topic, payload = raw.recv_multipart()
        assert raw.poll(5000)
        meta_topic, meta_payload = raw.recv_multipart()
    finally:
        raw.close(0)
        pub.close()
    assert topic == b"frame/synthetic" and payload[:1] == b"{"  # a subscriber tells the encoding by the first byte
    msg = json.loads(payload)
    assert msg == sent and msg == msgpack.unpackb(protocol.pack(sent), raw=False)
    assert protocol.unpack(topic, payload) == sent
    assert meta_topic == b"meta" and json.loads(meta_payload)["encoding"] == "json"


def test_json_refuses_values_json_cannot_hold():
    with pytest.raises(ValueError):
        protocol.pack({"v": 1, "neural": [float("nan")]}, "json")
    with pytest.raises(protocol.ProtocolError):
        protocol.unpack(b"frame", b"{not json")


def test_unknown_encoding_is_a_one_line_error(endpoint):
    with pytest.raises(PublishError) as e:
        Publisher(endpoint, encoding="xml")
    assert "xml" in str(e.value) and "\n" not in str(e.value)


def _frame(**extra) -> dict:
    return {"v": 1, "seq": 0, "frame_id": 3, "t_capture_ns": 1, "t_publish_ns": 2, "keypoints": [[1.0, 2.0, 0.9]] * 15,
            "neural": [0.5], **extra}


def test_pupil_and_motion_svd_fields_are_checked_and_read():
    pupil = {"area": 452.4, "centre": [103.0, 84.0], "axes": [12.0, 12.0], "valid": True}
    result = Result.from_message(check_frame(_frame(pupil=pupil, motion_svd=[1.5, -2.0, 0.25])))
    assert result.pupil == pupil
    np.testing.assert_array_equal(result.motion_svd, [1.5, -2.0, 0.25])
    unfitted = {"area": None, "centre": None, "axes": None, "valid": False}
    assert Result.from_message(_frame(pupil=unfitted)).pupil == unfitted
    plain = Result.from_message(_frame())
    assert plain.pupil is None and plain.motion_svd is None
    for bad in ({"area": 1.0, "centre": [1.0], "axes": None, "valid": True},
                {"area": "big", "centre": None, "axes": None, "valid": True},
                {"area": 1.0, "centre": None, "axes": None},
                [1.0, 2.0]):
        with pytest.raises(ProtocolError, match="'pupil'"):
            check_frame(_frame(pupil=bad))
    with pytest.raises(ProtocolError, match="'motion_svd'"):
        check_frame(_frame(motion_svd=[1.0, "x"]))
