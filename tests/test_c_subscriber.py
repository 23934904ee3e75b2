"""A subscriber written in C (examples/c/facestream_sub.c: libzmq and msgpack-c) against a
live `facestream run`: it must decode every field of every frame exactly as Python does."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facestream.streamer.client import Subscriber

SOURCE = Path(__file__).resolve().parents[1] / "examples" / "c" / "facestream_sub.c"
CLI = [sys.executable, "-m", "facestream.streamer.cli"]
N = 15


def _build(tmp_path: Path) -> Path:
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libzmq", "msgpack"], capture_output=True, text=True) \
        if shutil.which("pkg-config") else None
    if shutil.which("cc") is None or flags is None or flags.returncode != 0:
        why = "needs cc, pkg-config, libzmq3-dev and libmsgpack-dev (.ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    exe = tmp_path / "facestream_sub"
    build = subprocess.run(["cc", "-O2", "-Wall", "-Werror", "-o", str(exe), str(SOURCE), *flags.stdout.split()],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return exe


def test_c_subscriber_decodes_every_field_of_a_live_stream(endpoint, tmp_path):
    exe = _build(tmp_path)
    c_sub = subprocess.Popen([str(exe), endpoint, str(N)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = None
    try:
        with Subscriber(endpoint, topics=("frame",)) as sub:
            run = subprocess.Popen(
                [*CLI, "run", "--publish", endpoint, "--policy", "every", "--fps", "25", "--frames", str(N),
                 "--wait-subscribers", "2", "--predict-ms", "10", "--quiet"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            python_frames = []
            deadline = time.monotonic() + 200
            while len(python_frames) < N and time.monotonic() < deadline:
                m = sub.recv(timeout=0.5)
                if m is not None:
                    python_frames.append(m.data)
            _, run_err = run.communicate(timeout=60)
        c_out, c_err = c_sub.communicate(timeout=30)
    finally:
        for proc in (run, c_sub):
            if proc is not None and proc.poll() is None:
                proc.kill()
    assert run.returncode == 0, run_err
    assert c_sub.returncode == 0, c_err
    c_lines = [json.loads(line) for line in c_out.splitlines()]
    assert len(python_frames) == N and len(c_lines) == N
    fields = {"v", "seq", "frame_id", "t_capture_ns", "t_camera_ns", "t_publish_ns", "camera", "keypoints",
              "neural", "dropped", "keypoints_predicted", "neural_predicted", "t_predicted_ns"}
    for line, frame in zip(c_lines, python_frames):
        assert fields <= set(frame)
        assert line["message"] == frame  # every field and value, floats to the last bit
        assert line["nose_tip"] == frame["keypoints"][8]  # the typed read
        assert line["age_ms"] >= (frame["t_publish_ns"] - frame["t_capture_ns"]) / 1e6  # same host's clock


def test_bonsai_workflow_is_well_formed_and_filters_frames():
    """Bonsai is not at hand here: at least the workflow parses, subscribes to `frame`, and
    its decoding script compiles."""
    import xml.etree.ElementTree as ET

    path = SOURCE.parents[1] / "bonsai" / "facestream_subscriber.bonsai"
    root = ET.parse(path).getroot()
    zmq_ns = "{clr-namespace:Bonsai.ZeroMQ;assembly=Bonsai.ZeroMQ}"
    py_ns = "{clr-namespace:Bonsai.Scripting.IronPython;assembly=Bonsai.Scripting.IronPython}"
    assert root.find(f".//{zmq_ns}Topic").text == "frame"
    script = root.find(f".//{py_ns}Script").text
    compile(script, "PythonTransform", "exec")
    assert 'json.loads(value)' in script and '"keypoints"' in script
