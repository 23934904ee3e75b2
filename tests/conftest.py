import socket
from pathlib import Path

import numpy as np
import pytest

from helpers import VIDEO_FRAMES, video_frame, write_video


@pytest.fixture
def endpoint() -> str:
    """A loopback TCP endpoint on a port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory):
    """An empty XDG cache (ONNX exports, int8 and other built engines) for one test module."""
    with pytest.MonkeyPatch.context() as mp:
        folder = tmp_path_factory.mktemp("cache")
        mp.setenv("XDG_CACHE_HOME", str(folder))
        yield folder


@pytest.fixture(scope="module")
def video_file(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """A short MJPG video and the BGR frames written to it."""
    frames = [video_frame(k) for k in range(VIDEO_FRAMES)]
    path = tmp_path_factory.mktemp("video") / "rig:session 1.avi"  # a colon and a space on purpose
    write_video(path, frames)
    return path, frames
