"""A full disk, for real: recordings onto a tmpfs of a few hundred KB to a few MB, mounted for the
test (root only; skipped with the reason elsewhere). No mock: the filesystem really fills.

- too little free space before the start: refused in one line, nothing written;
- the recording fills the disk itself mid-run: one line, the file closed and readable with
  every row that fit, the run goes on publishing to its end;
- another program fills the disk mid-run: the same (the space each write needs is set aside on
  the disk before it, so the last write and the close cannot fail).
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from facestream.engines.bodyparts import BODYPARTS
from facestream.engines.encoder import load_encoder
from facestream.streamer.client import Subscriber
from facestream.streamer.config import defaults
from facestream.streamer.pose_h5 import CHUNK_ROWS
from facestream.streamer.recorder import start_bytes
from helpers import tiny_model

CLI = [sys.executable, "-m", "facestream.streamer.cli"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def small_disk(tmp_path):
    """mount(size_bytes) -> a folder on a new tmpfs of that size; unmounted afterwards."""
    mounted = []

    def mount(size: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root (this test runs as uid %d)" % os.geteuid())
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _run(model, endpoint, path, *flags) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "run", "--model", str(model), "--publish", endpoint, "--record", str(path),
                             "--quiet", "--json", *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _read(path) -> dict:
    """Every dataset and attribute of a recording, read with h5py as any user would."""
    with h5py.File(path, "r") as f:
        kp = np.stack([np.stack([f[f"Facemap/{bp}/{k}"][:] for k in ("x", "y", "likelihood")], -1) for bp in BODYPARTS], 1)
        out = {k: f[f"facestream/{k}"][:] for k in f["facestream"]}
        out["keypoints"] = kp
        out["attrs"] = {k: json.loads(v) for k, v in f["facestream"].attrs.items()}
    return out


def _disk_full_line(err: str, path) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "disk full" in line.lower() or "no space" in line.lower()]
    assert len(lines) == 1, err
    assert str(path) in lines[0], err
    return lines[0]


def _fill(folder: Path) -> int:
    """Fill the filesystem of ``folder`` as another program would: write until ENOSPC."""
    written = 0
    with open(folder / "filler", "wb") as f:
        try:
            while True:
                written += f.write(b"\0" * 65536)
                f.flush()
        except OSError:  # No space left on device
            pass
    return written


def test_too_little_free_space_is_refused_before_the_start_in_one_line(small_disk, model, endpoint):
    disk = small_disk(150 * 1024)  # the 150 KB filesystem: the run used to segfault on it
    path = disk / "run.h5"
    proc = _run(model, endpoint, path, "--frames", "30")
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in err, err
    assert proc.returncode == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facestream: error: not enough free space to record to "), err
    assert str(path) in lines[0] and "MB free" in lines[0], err
    assert list(disk.iterdir()) == [], "a refused recording left a file behind"
    assert out == ""


def test_a_recording_that_fills_the_disk_stops_in_one_line_and_the_run_goes_on(small_disk, model, endpoint):
    """The disk has room for the first chunk of every dataset (the rows up to CHUNK_ROWS) and not
    for the second: the recorder sees that coming, writes the rows that fit, closes the file and
    says so once; the run publishes every frame it was asked for."""
    n_neural = load_encoder(None).describe()["n_out"]
    cfg = defaults()  # the recording's columns: activity, and the pupil's and motion SVD's by default
    # 512 KB past the start: room for the first chunk's rows and the `meta` attribute's rewrites
    # (HDF5 does not reuse an old attribute's space: about 5 KB each, every 10 s); far less than
    # the next chunks need (chunk_set_bytes, 0.98 MB, and the margin)
    disk = small_disk(start_bytes(n_neural, cfg.pupil.enabled, cfg.motion_svd.components * cfg.motion_svd.enabled)
                      + 512 * 1024)
    path = disk / "run.h5"
    frames = CHUNK_ROWS + 300
    with Subscriber(endpoint) as sub:
        proc = _run(model, endpoint, path, "--fps", "0", "--frames", str(frames), "--wait-subscribers", "1")
        reported = None  # the first meta that reports the recording stopped
        after = 0  # frames published after that meta
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            m = sub.recv(timeout=0.2)
            if m is None:
                continue
            if m.topic == "meta" and reported is None and (m.data.get("recording") or {}).get("error"):
                reported = m.data
            elif m.topic == "frame" and reported is not None:
                after += 1
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    line = _disk_full_line(err, path)
    assert f"stopped at {CHUNK_ROWS} rows" in line and "closed and readable" in line, line
    assert f"{frames - CHUNK_ROWS} frames after it were not recorded" in line, line
    assert reported is not None and reported["status"] == "running", "meta never said the recording stopped"
    assert "disk full" in reported["recording"]["error"] and str(path) in reported["recording"]["error"]
    assert after > 0, "nothing was published after the recording stopped"
    summary = json.loads(out.splitlines()[-1])
    assert summary["frames"] == frames and summary["recorded"] == CHUNK_ROWS
    rec = _read(path)
    assert list(rec["seq"]) == list(range(CHUNK_ROWS))  # every row that fit, in order
    assert np.isfinite(rec["keypoints"]).all() and np.isfinite(rec["neural"]).all()
    assert rec["attrs"]["complete"] is False and "disk full" in rec["attrs"]["stopped"]


def test_another_program_filling_the_disk_mid_run_leaves_a_readable_recording(small_disk, model, endpoint):
    """Another program takes every byte left while the run records. The recorder goes on within
    the space it had set aside (the chunks of its first rows and a margin past the file's end),
    and at the first write that needs more (at the latest the row after the first chunk) it
    writes what fits, closes the file and says so once; the run goes on to its end."""
    disk = small_disk(4 * 1024 * 1024)
    path = disk / "run.h5"
    frames = CHUNK_ROWS + 300
    with Subscriber(endpoint) as sub:
        proc = _run(model, endpoint, path, "--fps", "0", "--frames", str(frames), "--wait-subscribers", "1")
        seen = -1
        deadline = time.monotonic() + 300
        while seen < 100 and proc.poll() is None and time.monotonic() < deadline:
            m = sub.recv(timeout=0.5)
            if m is not None and m.topic == "frame":
                seen = m.data["seq"]
        assert seen >= 100, proc.stderr.read() if proc.poll() is not None else "no frames"
        filled = _fill(disk)
        out, err = proc.communicate(timeout=600)
    assert filled > 0
    assert proc.returncode == 0, err
    line = _disk_full_line(err, path)
    # closed within the space set aside past the file's end at the write before
    assert "closed and readable" in line, line
    summary = json.loads(out.splitlines()[-1])
    assert summary["frames"] == frames
    rec = _read(path)
    rows = len(rec["seq"])
    assert 100 <= rows <= CHUNK_ROWS and summary["recorded"] == rows, (rows, summary["recorded"])
    assert list(rec["seq"]) == list(range(rows))
    assert np.isfinite(rec["keypoints"]).all() and np.isfinite(rec["neural"]).all()
    assert f"{frames - rows} frames after it were not recorded" in line, line
    assert rec["attrs"]["complete"] is False and "disk full" in rec["attrs"]["stopped"]
