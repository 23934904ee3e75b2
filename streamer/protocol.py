"""Protocol v1: the messages on the wire, shared by the publisher and every client.

A message is a ZeroMQ multipart ``[topic, payload]``. The payload is a map of plain types only
(maps, arrays, integers, floats, strings, nil) in one of two encodings: msgpack (the default)
or JSON (``--encoding json``, for consumers without a msgpack decoder, such as Bonsai.ZeroMQ).
Both carry the same fields and a decoder tells them apart by the first byte: a JSON payload
starts with ``{``, which is never the first byte of a msgpack map. docs/protocol.md is the
reference for subscribers in other languages.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

VERSION = 1
TOPIC_FRAME = b"frame"
TOPIC_META = b"meta"
TOPIC_PREVIEW = b"preview"  # a downscaled JPEG for monitors, sent only while one subscribes to it
TOPICS = (TOPIC_FRAME, TOPIC_META, TOPIC_PREVIEW)
ENCODINGS = ("msgpack", "json")


class ProtocolError(ValueError):
    """A message that is not protocol v1."""


def frame_topic(camera: str) -> bytes:
    """A camera's frame topic, ``frame/<camera>``: a subscription to ``frame`` gets every camera."""
    return TOPIC_FRAME + b"/" + camera.encode()


def topic_kind(topic: bytes) -> bytes:
    """``frame``, ``meta`` or ``preview``: the topic up to its first ``/``."""
    return topic.split(b"/", 1)[0]


def pack(message: dict[str, Any], encoding: str = "msgpack") -> bytes:
    if encoding == "json":
        # allow_nan=False: NaN and Infinity are not JSON, so refuse rather than send them
        return json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
    return msgpack.packb(message, use_bin_type=True)


def encoding_of(payload: bytes) -> str:
    return "json" if payload[:1] == b"{" else "msgpack"


def unpack(topic: bytes, payload: bytes) -> dict[str, Any]:
    """Decode one message in either encoding, checking its topic and version."""
    if topic_kind(topic) not in TOPICS or (topic != topic_kind(topic) and topic_kind(topic) != TOPIC_FRAME):
        raise ProtocolError(f"unknown topic {topic!r}")
    try:
        if encoding_of(payload) == "json":
            message = json.loads(payload)
        else:
            message = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError) as e:
        raise ProtocolError(f"undecodable {topic.decode()} payload: {e}") from None
    if not isinstance(message, dict) or message.get("v") != VERSION:
        raise ProtocolError(f"{topic.decode()} message is not protocol v{VERSION}")
    return message


def _is_int(v) -> bool:
    """An integer msgpack can carry (64 bits); JSON's have no bound, and one of 400 digits is no float."""
    return isinstance(v, int) and not isinstance(v, bool) and -2**63 <= v < 2**64


def _is_number(v) -> bool:
    return isinstance(v, float) or _is_int(v)


def _is_points(v) -> bool:
    return isinstance(v, list) and all(isinstance(p, list) and len(p) == 3 and all(map(_is_number, p)) for p in v)


def _is_numbers(v) -> bool:
    return isinstance(v, list) and all(map(_is_number, v))


def _is_pupil(v) -> bool:
    """``{area, centre, axes, valid}``: a number and two pairs of numbers, each nil when no
    pupil was fitted, and true/false."""
    def pair(p) -> bool:
        return p is None or (_is_numbers(p) and len(p) == 2)

    return (isinstance(v, dict) and isinstance(v.get("valid"), bool) and (v.get("area") is None or _is_number(v["area"]))
            and pair(v.get("centre")) and pair(v.get("axes")))


_FRAME_REQUIRED = {"seq": _is_int, "frame_id": _is_int, "t_capture_ns": _is_int, "t_publish_ns": _is_int,
                   "keypoints": _is_points, "neural": _is_numbers}
_FRAME_OPTIONAL = {"t_camera_ns": _is_int, "camera": lambda v: isinstance(v, str), "dropped": _is_int,
                   "keypoints_predicted": _is_points, "neural_predicted": _is_numbers, "t_predicted_ns": _is_int,
                  "pupil": _is_pupil, "motion_svd": _is_numbers}


def check_frame(message: dict[str, Any]) -> dict[str, Any]:
    """``message`` if it has a frame's fields with their types (the table in docs/protocol.md:
    integers for counters and times, ``keypoints`` a list of [x, y, likelihood] numbers,
    ``neural`` a list of numbers; optional fields absent or nil); else ProtocolError."""
    for name, ok in _FRAME_REQUIRED.items():
        if name not in message:
            raise ProtocolError(f"frame message has no {name!r}")
        if not ok(message[name]):
            raise ProtocolError(f"frame message's {name!r} is not as protocol v{VERSION} has it")
    for name, ok in _FRAME_OPTIONAL.items():
        if message.get(name) is not None and not ok(message[name]):
            raise ProtocolError(f"frame message's {name!r} is not as protocol v{VERSION} has it")
    return message


@dataclass
class Result:
    """One frame message with numpy arrays: what a client reads and what a hook is given.

    keypoints: (15, 3) [x, y, likelihood] in frame pixels, Facemap's bodypart order.
    neural: (n,) predicted activity. The ``*_predicted`` fields and ``t_predicted_ns`` are
    present only when the publisher forecasts (``stream.predict_ms`` > 0), else None.
    pupil: ``{area, centre, axes, valid}`` (docs/protocol.md) where the pupil is measured, else
    None; motion_svd: (n,) where the motion SVD is on and its components are ready, else None.
    """

    seq: int
    frame_id: int
    t_capture_ns: int
    t_publish_ns: int
    t_camera_ns: int | None
    camera: str
    keypoints: np.ndarray
    neural: np.ndarray
    dropped: int
    keypoints_predicted: np.ndarray | None = None
    neural_predicted: np.ndarray | None = None
    t_predicted_ns: int | None = None
    pupil: dict | None = None
    motion_svd: np.ndarray | None = None

    @classmethod
    def from_message(cls, m: dict[str, Any]) -> "Result":
        """The frame ``m`` with numpy arrays; ProtocolError if it is not a frame message."""
        check_frame(m)
        predicted = m.get("keypoints_predicted")
        neural_predicted = m.get("neural_predicted")
        motion_svd = m.get("motion_svd")
        return cls(
            seq=m["seq"], frame_id=m["frame_id"], t_capture_ns=m["t_capture_ns"],
            t_publish_ns=m["t_publish_ns"], t_camera_ns=m.get("t_camera_ns"), camera=m.get("camera", ""),
            keypoints=np.asarray(m["keypoints"], dtype=np.float64).reshape(-1, 3),
            neural=np.asarray(m["neural"], dtype=np.float64),
            dropped=m.get("dropped", 0),
            keypoints_predicted=None if predicted is None else np.asarray(predicted, dtype=np.float64).reshape(-1, 3),
            neural_predicted=None if neural_predicted is None else np.asarray(neural_predicted, dtype=np.float64),
            t_predicted_ns=m.get("t_predicted_ns"), pupil=m.get("pupil"),
            motion_svd=None if motion_svd is None else np.asarray(motion_svd, dtype=np.float64),
        )

    def age_ms(self, now_ns: int | None = None) -> float:
        """Milliseconds since the frame reached the host: ``CLOCK_MONOTONIC`` now minus
        ``t_capture_ns``. Meaningful on the publishing host only (each host has its own clock)."""
        return ((time.monotonic_ns() if now_ns is None else now_ns) - self.t_capture_ns) / 1e6
