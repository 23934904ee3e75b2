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


def _repacked_bytes(path, out) -> int:
    """The size of the same groups, datasets and attributes copied into a fresh file: what the
    recording would take without the space HDF5 left behind in it."""
    with h5py.File(path, "r") as src, h5py.File(out, "w") as dst:
        for name in src:
            src.copy(src[name], dst, name=name)
    return os.path.getsize(out)


def test_a_long_recording_does_not_grow_by_its_meta_rewrites(tmp_path):
    """The last ``meta`` is kept as an attribute, and HDF5 leaves an attribute's old space behind
    each time it is rewritten (4-5 KB): at every flush that was 295 KB in a 30 s run, 30 MB an
    hour. Written at most every 10 s (and at the end), it costs next to nothing. Flushing every
    0.05 s for 4 s (80 flushes), the file may exceed a fresh copy of itself by at most 100 KB
    (277 KB when each flush rewrote the meta)."""
    config = tmp_path / "fast_flush.toml"
    config.write_text("[record]\nflush_interval = 0.05\n")
    path = tmp_path / "run.h5"
    done = subprocess.run([*CLI, "run", "--config", str(config), "--fps", "30", "--duration", "4", "--record", str(path),
                           "--quiet", "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["recorded"] > 0
    rec = _rows(path)
    assert rec["attrs"]["complete"] is True and rec["attrs"]["meta"]["status"] == "stopped"  # the final meta is there
    wasted = path.stat().st_size - _repacked_bytes(path, tmp_path / "repacked.h5")
    assert wasted < 100_000, wasted
