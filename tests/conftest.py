import socket

import pytest


@pytest.fixture
def endpoint() -> str:
    """A loopback TCP endpoint on a port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"
