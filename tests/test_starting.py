"""A run that takes a while to start says so on a terminal, and a stop before its first frame
says that nothing was tracked (instead of '0 frames in 0.1 s', which reads as a failure); a run
whose engine is cached starts without the libraries only building one needs."""
from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time

import numpy as np
import pytest


def _read_until(fd: int, needle: str | None, timeout: float) -> str:
    """What the terminal shows until ``needle`` appears (None: until the process closes it)."""
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
        if needle is not None and needle.encode() in out:
            break
    return out.decode(errors="replace")


def test_a_first_run_says_it_is_starting_and_a_stop_before_the_first_frame_says_so(endpoint, tmp_path):
    """An empty engine cache: the int8 engine is built (calibration and quantization, many seconds
    on any CPU), so the notice must show; Ctrl-C then stops the run before its first frame."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    pid, fd = pty.fork()
    if pid == 0:  # the child: a run on a terminal
        os.execve(sys.executable, [sys.executable, "-m", "facestream.streamer.cli", "run", "--engine", "onnx-int8",
                                   "--publish", endpoint], env)
    try:
        shown = _read_until(fd, "starting: loading the tracker", 300)
        assert "starting: loading the tracker" in shown and "first run" in shown, shown
        os.kill(pid, signal.SIGINT)
        shown += _read_until(fd, None, 600)
        _, status = os.waitpid(pid, 0)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.close(fd)
    assert "stopped before the first frame" in shown and "nothing was tracked" in shown, shown
    assert "0 frames in" not in shown and "Traceback" not in shown, shown
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, shown


_WARM_START = """
import json, sys
import facestream.streamer.pipeline
from facestream.camera_adapters.synthetic.camera import SyntheticCamera
from facestream.engines.encoder import load_encoder
from facestream.engines.tracker import load_tracker

tracker = load_tracker("onnx", model=sys.argv[1] if len(sys.argv) > 1 else None)
load_encoder()
frame = SyntheticCamera(640, 480, seed=10001).render(0)[0]
print(json.dumps({"torch": "torch" in sys.modules, "onnx": "onnx" in sys.modules,
                  "keypoints": tracker.infer(frame[None])[0].tolist()}))
"""


@pytest.mark.parametrize("model", [None, "student"])
def test_a_warm_start_imports_neither_torch_nor_onnx(tmp_path, model):
    """torch and onnx took about two of a warm start's three seconds on a 2-core machine; once the
    engine is cached (and the model's checks recorded beside it) neither is imported: the live
    path (pipeline, tracker, encoder) needs ONNX Runtime and numpy only. The first start, which
    exports the network, does import torch, so the test can see an import. For the bundled
    default (Facemap's network) and the bundled student."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}

    def start() -> dict:
        args = [sys.executable, "-c", _WARM_START] + ([model] if model else [])
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.splitlines()[-1])

    first, second = start(), start()
    assert first["torch"] is True
    assert second["torch"] is False and second["onnx"] is False
    np.testing.assert_array_equal(np.array(second["keypoints"]), np.array(first["keypoints"]))
