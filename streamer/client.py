"""A Python subscriber for facestream's stream.

    from facestream.streamer.client import Subscriber
    with Subscriber("tcp://127.0.0.1:5555") as sub:
        while True:
            msg = sub.latest(timeout=1.0)        # the newest frame; older ones are skipped
            if msg:
                r = msg.result                   # numpy arrays: r.keypoints (15, 3), r.neural
                print(r.frame_id, r.keypoints[8], f"{r.age_ms():.1f} ms old", sub.meta["status"])

Two ways to read: ``recv()`` gives every message in order (for recording or analysis: a
slow reader falls behind and, past its queue, loses messages), ``latest()`` drains what has
arrived and gives only the newest frame (for closed loops: the reader never falls behind).
``run(callback)`` is the callback form of either. Payloads are decoded in both encodings
(msgpack, JSON). The newest ``meta`` is kept in ``sub.meta``; frames this subscriber lost
(gaps in ``seq``) are counted in ``lost``, frames ``latest()`` passed over in ``skipped``.

ZeroMQ's own ``CONFLATE`` option (keep only the newest message) is not used: it does not
support multipart messages and would keep one part of ``[topic, payload]``.

A publisher with CURVE keys needs ``curve_server`` (its public key file, ``server.key``) and
``curve_key`` (this client's secret key file, ``NAME.key_secret``, whose public half is in the
publisher's clients folder); either may also be a z85 key as bytes. A subscriber the publisher
does not let in gets no error: it receives nothing, so ``recv(timeout)`` returns None.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import zmq

from facestream.streamer import protocol
from facestream.streamer.curve import client_options
from facestream.streamer.endpoints import check_endpoint
from facestream.streamer.protocol import Result


@dataclass
class Message:
    topic: str
    data: dict[str, Any]
    t_receive_ns: int
    _result: Result | None = field(default=None, repr=False)

    @property
    def latency_ms(self) -> float | None:
        """Capture-to-receipt time of a frame message (same host only: monotonic clocks)."""
        t = self.data.get("t_capture_ns")
        return None if t is None else (self.t_receive_ns - t) / 1e6

    @property
    def result(self) -> Result | None:
        """The frame as a :class:`Result` with numpy arrays; None for ``meta``."""
        if self.topic != "frame":
            return None
        if self._result is None:
            self._result = Result.from_message(self.data)
        return self._result

    def age_ms(self) -> float | None:
        """Milliseconds since the frame reached the host, now (same host only)."""
        t = self.data.get("t_capture_ns")
        return None if t is None else (time.monotonic_ns() - t) / 1e6

    def line(self) -> str:
        """One line for a person (``facestream listen``)."""
        d = self.data
        if self.topic == "meta":  # a meta message's fields are read as far as they are maps
            s = _field(d, "stats")
            return (f"meta   status {d.get('status')}  frames {_field(s, 'frames')}  fps {_field(s, 'fps')}  "
                    f"p50 {_field(_field(s, 'latency_ms'), 'p50')} ms  dropped {_field(_field(s, 'dropped'), 'total')}  "
                    f"policy {d.get('policy')}")
        keypoints = d["keypoints"]
        tip = f"({keypoints[8][0]:.1f}, {keypoints[8][1]:.1f}) p={keypoints[8][2]:.2f}" if len(keypoints) > 8 else "-"
        neural = " ".join(f"{v:+.3f}" for v in d["neural"][:3])
        return (f"frame  seq {d['seq']}  id {d['frame_id']}  latency {self.latency_ms:.2f} ms  dropped {d.get('dropped')}  "
                f"nose(tip) {tip}  neural[{len(d['neural'])}] {neural} ...")


def _field(obj: Any, key: str) -> Any:
    """``obj[key]`` where ``obj`` is a map that has it, else None."""
    return obj.get(key) if isinstance(obj, dict) else None


class Subscriber:
    def __init__(self, endpoint: str = "tcp://127.0.0.1:5555", topics=("frame", "meta"), rcv_hwm: int = 10000,
                 curve_server=None, curve_key=None):
        self.endpoint = check_endpoint(endpoint)
        options = client_options(curve_server, curve_key)
        self._sock = zmq.Context.instance().socket(zmq.SUB)
        self._sock.setsockopt(zmq.RCVHWM, rcv_hwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        for option, value in options.items():
            self._sock.setsockopt(option, value)
        for topic in topics:
            self._sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self._sock.connect(endpoint)
        self.meta: dict[str, Any] | None = None
        self.lost = 0
        self.skipped = 0
        self.frames = 0
        self._last_seq: dict[str | None, int] = {}  # camera -> its last seq

    def recv(self, timeout: float | None = None) -> Message | None:
        """The next message, or None if none arrives within ``timeout`` seconds."""
        if timeout is not None and not self._sock.poll(int(timeout * 1000), zmq.POLLIN):
            return None
        topic, payload = self._sock.recv_multipart()
        now = time.monotonic_ns()
        data = self._decode(topic, payload)
        kind = protocol.topic_kind(topic)
        if kind == protocol.TOPIC_FRAME:
            self._count(data, passed_over=0)
        return Message(kind.decode(), data, now)

    def latest(self, timeout: float | None = None) -> Message | None:
        """The newest frame message that has arrived, waiting up to ``timeout`` seconds for
        one (None: forever); None if none came. Older frames waiting in the queue are
        dropped unread and counted in ``skipped``; ``meta`` messages among them update ``meta``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        newest: tuple[bytes, int] | None = None
        passed_over = 0
        while newest is None:
            wait_ms = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self._sock.poll(wait_ms, zmq.POLLIN):
                return None
            while True:  # drain without blocking
                try:
                    topic, payload = self._sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if protocol.topic_kind(topic) == protocol.TOPIC_FRAME:
                    if newest is not None:
                        passed_over += 1
                    newest = (topic, payload, time.monotonic_ns())
                else:
                    self._decode(topic, payload)
        topic, payload, now = newest
        data = self._decode(topic, payload)
        self._count(data, passed_over)
        return Message("frame", data, now)

    def run(self, callback: Callable[[Result], Any], latest: bool = True,
            should_stop: Callable[[], bool] = lambda: False, poll_s: float = 0.1) -> None:
        """Call ``callback(result)`` for each frame (the newest only, or every one with
        ``latest=False``) until ``should_stop()`` is true or the callback returns False."""
        read = self.latest if latest else self.recv
        while not should_stop():
            msg = read(timeout=poll_s)
            if msg is not None and msg.topic == "frame" and callback(msg.result) is False:
                return

    def _decode(self, topic: bytes, payload: bytes) -> dict[str, Any]:
        data = protocol.unpack(topic, payload)
        if protocol.topic_kind(topic) == protocol.TOPIC_FRAME:
            protocol.check_frame(data)
        if topic == protocol.TOPIC_META:
            self.meta = data
        return data

    def _count(self, data: dict, passed_over: int) -> None:
        """Frames received, passed over by latest(), and lost before they reached this socket
        (a gap in the camera's ``seq`` larger than what was passed over)."""
        seq, camera = data["seq"], data.get("camera")
        last = self._last_seq.get(camera)
        if last is not None and seq > last + 1 + passed_over:
            self.lost += seq - last - 1 - passed_over
        self._last_seq[camera] = seq
        self.skipped += passed_over
        self.frames += 1 + passed_over

    def __iter__(self) -> Iterator[Message]:
        while True:
            yield self.recv()

    def close(self) -> None:
        self._sock.close(0)

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
