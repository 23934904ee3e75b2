"""The whole pipeline as users run it: `facestream run` in its own process, real sockets."""
import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from facestream.engines.bodyparts import BODYPARTS
from facestream.streamer.client import Subscriber

CLI = [sys.executable, "-m", "facestream.streamer.cli"]


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _collect(sub: Subscriber, until_status=("ended", "stopped"), timeout=90.0) -> tuple[list[dict], list[dict]]:
    frames, metas = [], []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = sub.recv(timeout=0.5)
        if m is None:
            continue
        if m.topic == "frame":
            frames.append(m.data)
        else:
            metas.append(m.data)
            if m.data["status"] in until_status:
                break
    return frames, metas


def _summary(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_subscriber_receives_every_frame_with_no_seq_gap(endpoint):
    with Subscriber(endpoint) as sub:
        proc = _start("run", "--publish", endpoint, "--policy", "every", "--fps", "25",
                      "--frames", "40", "--wait-subscribers", "1", "--json", "--quiet")
        frames, metas = _collect(sub)
    summary = _summary(proc)
    assert [f["seq"] for f in frames] == list(range(40))
    assert [f["frame_id"] for f in frames] == sorted(f["frame_id"] for f in frames)
    assert sub.lost == 0
    f = frames[-1]
    assert f["v"] == 1 and len(f["keypoints"]) == 15 and all(len(k) == 3 for k in f["keypoints"])
    assert all(0.5 <= k[2] < 1.0 for k in f["keypoints"])  # Facemap's likelihood range
    assert f["t_capture_ns"] <= f["t_publish_ns"] and f["dropped"] == summary["dropped"]["total"]
    meta = metas[-1]
    assert meta["bodyparts"] == list(BODYPARTS)
    assert meta["neural"]["length"] == len(f["neural"]) and meta["policy"] == "every"
    assert meta["frame"] == {"height": 480, "width": 640}
    assert meta["tracker"]["engine"] == "onnx-int8" and meta["tracker"]["reason"].startswith("auto:") and "sha256" in meta["tracker"]
    assert summary["frames"] == 40
    # every frame the camera produced is processed, dropped (by cause) or still unprocessed
    produced = frames[-1]["frame_id"] - frames[0]["frame_id"] + 1
    assert summary["frames"] + summary["dropped"]["total"] == produced


def test_latest_policy_counts_what_it_skips(endpoint):
    with Subscriber(endpoint) as sub:
        proc = _start("run", "--publish", endpoint, "--policy", "latest", "--fps", "300",
                      "--frames", "15", "--wait-subscribers", "1", "--json", "--quiet")
        frames, metas = _collect(sub)
    summary = _summary(proc)
    assert len(frames) == 15
    d = summary["dropped"]
    assert d["skipped"] > 0  # 300 frames/s is faster than the tracker on any CPU
    assert d["total"] == d["camera"] + d["overrun"] + d["skipped"]
    assert summary["frames"] + d["total"] == frames[-1]["frame_id"] - frames[0]["frame_id"] + 1
    assert metas[-1]["stats"]["dropped"] == d


def test_video_file_is_tracked_frame_by_frame_and_ends(endpoint, tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (320, 240), isColor=False)
    rng = np.random.default_rng(0)
    for _ in range(12):
        writer.write(rng.integers(0, 255, (240, 320), dtype=np.uint8))
    writer.release()
    with Subscriber(endpoint) as sub:
        proc = _start("run", "--publish", endpoint, "--camera", f"video:{path}", "--policy", "every",
                      "--wait-subscribers", "1", "--json", "--quiet")
        frames, metas = _collect(sub)
    summary = _summary(proc)
    assert [f["frame_id"] for f in frames] == list(range(12))
    assert metas[-1]["status"] == "ended" and metas[-1]["frame"] == {"height": 240, "width": 320}
    tracker = metas[-1]["tracker"]
    if tracker["runtime"].endswith("int8"):  # calibrated on the video's own frames
        assert tracker["calibration"].startswith(f"{path.resolve()}-")
    assert summary["dropped"]["total"] == 0
    kp = np.array([f["keypoints"] for f in frames])
    # in this frame's pixels (offsets may reach a little past the edge, as in Facemap)
    assert np.all(np.abs(kp[..., 0] - 160) < 160 + 32) and np.all(np.abs(kp[..., 1] - 120) < 160 + 32)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly_with_a_final_meta(endpoint, sig):
    rings_before = {n for n in os.listdir("/dev/shm") if n.startswith("fsring_")}
    with Subscriber(endpoint) as sub:
        proc = _start("run", "--publish", endpoint, "--fps", "30", "--json", "--quiet")
        first = None
        deadline = time.monotonic() + 60
        while first is None and time.monotonic() < deadline:
            m = sub.recv(timeout=0.5)
            if m is not None and m.topic == "frame":
                first = m
        assert first is not None, proc.stderr.read() if proc.poll() is not None else "no frame"
        os.kill(proc.pid, sig)
        frames, metas = _collect(sub, timeout=20)
    summary = _summary(proc)
    assert metas and metas[-1]["status"] == "stopped"
    assert summary["frames"] >= 1
    assert not {n for n in os.listdir("/dev/shm") if n.startswith("fsring_")} - rings_before


@pytest.mark.parametrize(
    "args, words",
    [
        (["--camera", "video:/nonexistent/clip.avi"], ["/nonexistent/clip.avi"]),
        (["--model", "/nonexistent/model.pt"], ["/nonexistent/model.pt"]),
        (["--bbox", "0,600,0,100"], ["bbox", "outside"]),
    ],
)
def test_bad_input_is_one_line_and_non_zero(endpoint, args, words):
    r = subprocess.run([*CLI, "run", "--publish", endpoint, "--frames", "5", "--quiet", *args],
                       capture_output=True, text=True, timeout=90)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("facestream: error:"), r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[-1]


def test_port_in_use_is_refused(endpoint):
    blocker = _start("run", "--publish", endpoint, "--fps", "10", "--quiet")
    try:
        with Subscriber(endpoint) as sub:
            assert sub.recv(timeout=60) is not None  # the first pipeline is up
        r = subprocess.run([*CLI, "run", "--publish", endpoint, "--frames", "5", "--quiet"],
                           capture_output=True, text=True, timeout=90)
        assert r.returncode == 1
        assert "Address already in use" in r.stderr and endpoint in r.stderr and "Traceback" not in r.stderr
    finally:
        blocker.send_signal(signal.SIGINT)
        blocker.communicate(timeout=30)


def test_listen_prints_what_arrives(endpoint):
    proc = _start("run", "--publish", endpoint, "--fps", "30", "--quiet")
    try:
        r = subprocess.run([*CLI, "listen", endpoint, "--count", "5", "--json", "--timeout", "60"],
                           capture_output=True, text=True, timeout=90)
        assert r.returncode == 0, r.stderr
        messages = [json.loads(line) for line in r.stdout.splitlines()]
        frames = [m for m in messages if m["topic"] == "frame"]
        assert len(frames) == 5 and all(len(m["keypoints"]) == 15 for m in frames)
        human = subprocess.run([*CLI, "listen", endpoint, "--count", "2", "--topic", "frame"],
                               capture_output=True, text=True, timeout=60)
        assert human.returncode == 0 and human.stdout.count("frame  seq") == 2
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)


def test_listen_times_out_with_an_error(endpoint):
    r = subprocess.run([*CLI, "listen", endpoint, "--timeout", "0.5"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "no message" in r.stderr


def test_two_cameras_one_tracker_each_its_own_topic_and_counts(endpoint, tmp_path):
    """Two synthetic cameras (two faces): batched through one tracker, published on frame/left and
    frame/right with their own seq, drops and recording; processed + dropped = produced per camera."""
    record = tmp_path / "rec.h5"
    with Subscriber(endpoint) as both, Subscriber(endpoint, topics=("frame/right",)) as right_only:
        proc = _start("run", "--publish", endpoint, "--camera", "synthetic", "--camera", "synthetic",
                      "--config", str(_write(tmp_path / "two.toml", '[camera]\nnames = ["left", "right"]\nframes = 30\nfps = 20\nsync_ms = 60.0\n')),
                      "--policy", "every", "--wait-subscribers", "2", "--record", str(record), "--json", "--quiet")
        frames, metas = _collect(both)
        right = []
        while (m := right_only.recv(timeout=1.0)) is not None:
            right.append(m.data)
    summary = _summary(proc)
    by_camera = {name: [f for f in frames if f["camera"] == name] for name in ("left", "right")}
    for name, mine in by_camera.items():
        assert [f["seq"] for f in mine] == list(range(len(mine)))
        camera = next(c for c in metas[-1]["cameras"] if c["name"] == name)
        assert camera["frames"] == len(mine)
        # from its first processed frame to its last (id 29: frames = 30), every frame is accounted for
        assert mine[-1]["frame_id"] == 29
        assert len(mine) + camera["dropped"]["total"] == 29 - mine[0]["frame_id"] + 1
    assert both.lost == 0 and len(frames) == summary["frames"]
    assert [f["frame_id"] for f in right] == [f["frame_id"] for f in by_camera["right"]]
    # the two cameras share network calls (2.0 when every call holds both; the cameras start
    # and end a little apart, more so on a busy machine)
    assert summary["frames_per_batch"] > 1.3
    first_left, first_right = by_camera["left"][0]["keypoints"], by_camera["right"][0]["keypoints"]
    assert first_left != first_right  # two different faces, tracked separately
    import h5py

    for name, mine in by_camera.items():
        with h5py.File(tmp_path / f"rec-{name}.h5", "r") as f:
            assert list(f["facestream"]["frame_id"][:]) == [m["frame_id"] for m in mine]


def _write(path, text):
    path.write_text(text)
    return path


def _warning_run(endpoint: str, camera: str) -> tuple[list[dict], str]:
    """A short run (status lines on, as a person sees them): its metas and its stderr."""
    with Subscriber(endpoint) as sub:
        proc = _start("run", "--camera", camera, "--publish", endpoint, "--policy", "every", "--frames", "5",
                      "--wait-subscribers", "1", "--json")
        _, metas = _collect(sub)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return metas, err


def test_synthetic_model_on_a_real_camera_warns(endpoint, video_file):
    path, _ = video_file
    metas, err = _warning_run(endpoint, f"video:{path}")
    warning = metas[-1]["tracker"]["warning"]
    assert warning and "\n" not in warning
    assert "facestream-default" in warning and "synthetic faces only" in warning
    assert "`facestream run --model facemap ...`" in warning and "downloads it on first use" in warning
    assert all(m["tracker"]["warning"] == warning for m in metas)
    shown = [line for line in err.splitlines() if "synthetic faces only" in line]
    assert shown == [f"facestream: warning: {warning}"], err  # once, at the start


def test_synthetic_model_on_the_synthetic_camera_does_not_warn(endpoint):
    metas, err = _warning_run(endpoint, "synthetic")
    assert metas and all(m["tracker"]["warning"] is None for m in metas)
    assert "synthetic faces only" not in err and "warning" not in err
