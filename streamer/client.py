"""A Python subscriber for facestream's stream.

    from facestream.streamer.client import Subscriber
    with Subscriber("tcp://127.0.0.1:5555") as sub:
        while True:
            msg = sub.recv(timeout=1.0)
            if msg and msg.topic == "frame":
                print(msg.data["frame_id"], msg.data["keypoints"][8])

It keeps the newest ``meta`` at hand and counts the frame messages this subscriber lost
(gaps in ``seq``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator

import zmq

from facestream.streamer import protocol


@dataclass
class Message:
    topic: str
    data: dict[str, Any]
    t_receive_ns: int

    @property
    def latency_ms(self) -> float | None:
        """Capture-to-receipt time of a frame message (same host only: monotonic clocks)."""
        t = self.data.get("t_capture_ns")
        return None if t is None else (self.t_receive_ns - t) / 1e6


class Subscriber:
    def __init__(self, endpoint: str = "tcp://127.0.0.1:5555", topics=("frame", "meta"), rcv_hwm: int = 10000):
        self.endpoint = endpoint
        self._sock = zmq.Context.instance().socket(zmq.SUB)
        self._sock.setsockopt(zmq.RCVHWM, rcv_hwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        for topic in topics:
            self._sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self._sock.connect(endpoint)
        self.meta: dict[str, Any] | None = None
        self.lost = 0
        self.frames = 0
        self._last_seq: int | None = None

    def recv(self, timeout: float | None = None) -> Message | None:
        """The next message, or None if none arrives within ``timeout`` seconds."""
        if timeout is not None and not self._sock.poll(int(timeout * 1000), zmq.POLLIN):
            return None
        topic, payload = self._sock.recv_multipart()
        now = time.monotonic_ns()
        data = protocol.unpack(topic, payload)
        if topic == protocol.TOPIC_META:
            self.meta = data
        else:
            self._count(data["seq"])
        return Message(topic.decode(), data, now)

    def _count(self, seq: int) -> None:
        if self._last_seq is not None and seq > self._last_seq + 1:
            self.lost += seq - self._last_seq - 1
        self._last_seq = seq
        self.frames += 1

    def __iter__(self) -> Iterator[Message]:
        while True:
            yield self.recv()

    def close(self) -> None:
        self._sock.close(0)

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
