"""What several test files share."""
from __future__ import annotations

import socket
import time
from pathlib import Path


class Payload:
    """Unpickling this calls open(marker, "w"): it creates the marker file, proof that a pickle
    ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def until(condition, timeout: float = 30.0, what: str = "condition"):
    """Poll until ``condition()`` is truthy; its value. Only a deadline, never a speed check."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
