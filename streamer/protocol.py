"""Protocol v1: the messages on the wire, shared by the publisher and every client.

A message is a ZeroMQ multipart ``[topic, payload]``; the payload is msgpack made of plain
types only (maps, arrays, integers, floats, strings, nil) so any msgpack library decodes it.
docs/protocol.md is the reference for subscribers in other languages.
"""
from __future__ import annotations

from typing import Any

import msgpack

VERSION = 1
TOPIC_FRAME = b"frame"
TOPIC_META = b"meta"
TOPICS = (TOPIC_FRAME, TOPIC_META)


class ProtocolError(ValueError):
    """A message that is not protocol v1."""


def pack(message: dict[str, Any]) -> bytes:
    return msgpack.packb(message, use_bin_type=True)


def unpack(topic: bytes, payload: bytes) -> dict[str, Any]:
    """Decode one message, checking its topic and version."""
    if topic not in TOPICS:
        raise ProtocolError(f"unknown topic {topic!r}")
    try:
        message = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError) as e:
        raise ProtocolError(f"undecodable {topic.decode()} payload: {e}") from None
    if not isinstance(message, dict) or message.get("v") != VERSION:
        raise ProtocolError(f"{topic.decode()} message is not protocol v{VERSION}")
    return message
