"""Recording while streaming: real h5 files, real processes, real signals."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from facestream.engines.bodyparts import BODYPARTS
from facestream.streamer.client import Subscriber

CLI = [sys.executable, "-m", "facestream.streamer.cli"]


def _rows(path) -> dict:
    with h5py.File(path, "r") as f:
        kp = np.stack([np.stack([f[f"Facemap/{bp}/{k}"][:] for k in ("x", "y", "likelihood")], -1) for bp in BODYPARTS], 1)
        out = {k: f[f"facestream/{k}"][:] for k in f["facestream"]}
        out["keypoints"] = kp
        out["attrs"] = {k: json.loads(v) for k, v in f["facestream"].attrs.items()}
    return out


def _frames_until(sub: Subscriber, n: int, timeout: float = 90) -> list[dict]:
    frames = []
    deadline = time.monotonic() + timeout
    while len(frames) < n and time.monotonic() < deadline:
        m = sub.recv(timeout=0.5)
        if m is not None and m.topic == "frame":
            frames.append(m.data)
    return frames


def test_recording_holds_every_published_frame(endpoint, tmp_path):
    path = tmp_path / "run.h5"
    with Subscriber(endpoint) as sub:
        proc = subprocess.Popen([*CLI, "run", "--publish", endpoint, "--policy", "every", "--fps", "30",
                                 "--frames", "45", "--wait-subscribers", "1", "--record", str(path), "--quiet", "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        frames = _frames_until(sub, 45)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["recorded"] == 45
    rec = _rows(path)
    assert len(rec["seq"]) == 45 and list(rec["seq"]) == [f["seq"] for f in frames]
    assert list(rec["frame_id"]) == [f["frame_id"] for f in frames]
    assert list(rec["t_capture_ns"]) == [f["t_capture_ns"] for f in frames]
    np.testing.assert_array_equal(rec["keypoints"], np.asarray([f["keypoints"] for f in frames], np.float32))
    np.testing.assert_array_equal(rec["neural"], np.asarray([f["neural"] for f in frames], np.float32))
    attrs = rec["attrs"]
    assert attrs["complete"] is True and attrs["meta"]["status"] == "stopped"
    assert attrs["run"]["config"]["record"]["path"] == str(path)
    assert attrs["run"]["tracker"]["sha256"] and attrs["run"]["versions"]["h5py"] == h5py.__version__


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_recording_survives_stops(endpoint, tmp_path, sig):
    """Ctrl-C or SIGTERM: every published frame is in the file. kill -9 of the pipeline: the file
    opens and holds what the recorder had received (it outlives the pipeline and closes the file
    itself)."""
    path = tmp_path / "run.h5"
    with Subscriber(endpoint) as sub:
        proc = subprocess.Popen([*CLI, "run", "--publish", endpoint, "--fps", "30", "--record", str(path), "--quiet"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        frames = _frames_until(sub, 20)
        assert len(frames) == 20
        os.kill(proc.pid, sig)
        proc.communicate(timeout=60)
        while (m := sub.recv(timeout=1.0)) is not None:
            if m.topic == "frame":
                frames.append(m.data)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # after kill -9 the recorder finishes on its own
        try:
            rec = _rows(path)
            if rec["attrs"].get("complete") is not None:
                break
        except OSError:
            pass
        time.sleep(0.2)
    published = [f["seq"] for f in frames]
    recorded = list(rec["seq"])
    if sig != signal.SIGKILL:
        assert proc.returncode == 0 and rec["attrs"]["complete"] is True
        assert recorded == published
    else:
        # no final meta: the pipeline was killed; what was still in its socket queues is
        # lost with it, at most a second of frames (30 here)
        assert rec["attrs"]["complete"] is False
        assert recorded == published[: len(recorded)] and len(recorded) >= len(published) - 30


def test_existing_recording_is_never_overwritten(endpoint, tmp_path):
    path = tmp_path / "precious.h5"
    path.write_bytes(b"an earlier session's data")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    r = subprocess.run([*CLI, "run", "--publish", endpoint, "--frames", "5", "--record", str(path), "--quiet"],
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("facestream: error: recording") and "already exists" in r.stderr
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_unwritable_recording_path_is_one_line(endpoint, tmp_path):
    r = subprocess.run([*CLI, "run", "--publish", endpoint, "--frames", "5", "--record", str(tmp_path / "no" / "such.h5"),
                        "--quiet"], capture_output=True, text=True, timeout=90)
    assert r.returncode == 1 and "does not exist" in r.stderr and "Traceback" not in r.stderr
