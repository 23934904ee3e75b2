"""Hours on a rig: faults, stops and crashes, with real processes, signals, sockets and files.

docs/reliability.md lists each promise with the test here (or elsewhere) that shows it.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import h5py
import numpy as np
import psutil
import pytest
import zmq

from facestream.streamer.client import Subscriber
from facestream.streamer.config import load_config
from facestream.streamer.ringbuffer import remove_stale_rings

from helpers import Payload, tiny_model

CLI = [sys.executable, "-m", "facestream.streamer.cli"]


def _start(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _until(sub: Subscriber, accept, timeout: float = 90.0, frames: list | None = None):
    """Read until ``accept(message)``; that message (or None at the timeout). Frames read on the way
    go into ``frames``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = sub.recv(timeout=0.2)
        if m is None:
            continue
        if m.topic == "frame" and frames is not None:
            frames.append((m.data, m.t_receive_ns))
        if accept(m):
            return m
    return None


def _meta(m) -> bool:
    return m.topic == "meta" and m.data["status"] == "running" and bool(m.data.get("processes"))


def _one_line_error(proc_or_result, code: int | None = None) -> str:
    err = proc_or_result.stderr if isinstance(proc_or_result.stderr, str) else proc_or_result.stderr.read()
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("facestream: error: "), err
    if code is not None:
        assert proc_or_result.returncode == code, err
    else:
        assert proc_or_result.returncode not in (0, None), err
    return lines[-1]


# -- camera faults ------------------------------------------------------------------------------
def test_a_stalled_camera_is_reported_within_a_second_and_the_run_resumes(endpoint, tmp_path):
    """The capture process is frozen (SIGSTOP: to the pipeline, exactly a camera that stops
    delivering), then thawed; meta says so within a second and the run picks up again. The tiny
    model keeps up with 30 frames/s on any CPU, so every gap in frame ids is the stall's."""
    model = tiny_model(tmp_path / "tiny")
    proc = _start("run", "--publish", endpoint, "--policy", "every", "--fps", "30", "--model", str(model),
                  "--engine", "onnx", "--json", "--quiet")
    frames: list = []
    try:
        with Subscriber(endpoint) as sub:
            meta = _until(sub, _meta, frames=frames)
            assert meta is not None, proc.stderr.read() if proc.poll() is not None else "no meta"
            capture = psutil.Process(meta.data["processes"]["capture-cam0"])
            assert _until(sub, lambda m: len(frames) >= 15, frames=frames) is not None
            capture.suspend()
            t_stop = time.monotonic()
            stalled = _until(sub, lambda m: m.topic == "meta" and m.data["cameras"][0]["stalled"], timeout=10, frames=frames)
            t_reported = time.monotonic()
            capture.resume()
            assert stalled is not None, "a frozen camera was never reported"
            assert stalled.data["status"] == "waiting for camera"
            quiet = float(re.fullmatch(r"no frame for ([\d.]+) s", stalled.data["cameras"][0]["stalled"]).group(1))
            assert 0.5 <= quiet <= 1.0, stalled.data["cameras"][0]["stalled"]  # reported within a second of the stall
            assert t_reported - t_stop < 5.0
            n_before = len(frames)
            resumed = _until(sub, lambda m: m.topic == "meta" and m.data["status"] == "running"
                             and not m.data["cameras"][0]["stalled"], timeout=10, frames=frames)
            assert resumed is not None, "the run did not resume"
            assert _until(sub, lambda m: len(frames) >= n_before + 15, timeout=20, frames=frames) is not None
            proc.send_signal(signal.SIGINT)
            _until(sub, lambda m: m.topic == "meta" and m.data["status"] == "stopped", timeout=30, frames=frames)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    data = [f for f, _ in frames]
    assert [f["seq"] for f in data] == list(range(len(data)))  # nothing lost on the socket
    ids = [f["frame_id"] for f in data]
    gap = max(b - a for a, b in zip(ids, ids[1:]))
    assert gap >= 10  # the camera's frames during the stall never existed ...
    assert data[-1]["dropped"] == ids[-1] - ids[0] - (len(ids) - 1)  # ... and are counted as dropped
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["dropped"]["camera"] >= gap - 1


# -- subscribers ---------------------------------------------------------------------------------
def test_stuck_and_killed_subscribers_never_slow_the_pipeline(tmp_path):
    """A subscriber that stops reading for most of the run and one killed mid-run: the pipeline
    and a healthy subscriber see nothing of it, and the stuck one counts exactly what it lost.
    (Over ipc, whose socket buffers are small and fixed, so the stuck one's queues do fill.) The
    tracker is the tiny model, so 20 frames/s is well within its speed on any CPU: an overrun
    here is the pipeline slowed by a subscriber, never a slow tracker."""
    model = tiny_model(tmp_path / "tiny")
    endpoint = f"ipc://{tmp_path}/stream"
    config = tmp_path / "small_queue.toml"
    config.write_text("[stream]\nsend_hwm = 20\n")
    n = 400
    doomed = subprocess.Popen([sys.executable, "-c", (
        "from facestream.streamer.client import Subscriber\n"
        f"s = Subscriber({endpoint!r})\n"
        "while True: s.recv(timeout=1.0)\n")])
    try:
        with Subscriber(endpoint) as healthy, Subscriber(endpoint, topics=("frame",), rcv_hwm=1) as stuck:
            proc = _start("run", "--config", str(config), "--publish", endpoint, "--policy", "every", "--fps", "20",
                          "--model", str(model), "--engine", "onnx", "--frames", str(n), "--wait-subscribers", "3", "--json", "--quiet")
            frames: list = []
            assert _until(healthy, lambda m: len(frames) >= 100, frames=frames) is not None
            doomed.kill()
            assert _until(healthy, lambda m: len(frames) >= 3 * n // 4, frames=frames) is not None
            stuck_seqs = []  # now the stuck one reads again, and catches up with the stream
            while (m := stuck.recv(timeout=3.0)) is not None:
                stuck_seqs.append(m.data["seq"])
            _until(healthy, lambda m: m.topic == "meta" and m.data["status"] == "stopped", timeout=120, frames=frames)
            out, err = proc.communicate(timeout=60)
            lost = stuck.lost
        assert proc.returncode == 0, err
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["frames"] == n and summary["dropped"]["overrun"] == 0
        assert [f["seq"] for f, _ in frames] == list(range(n)) and healthy.lost == 0
        assert stuck_seqs[0] == 0 and stuck_seqs[-1] == n - 1
        assert lost > 0 and len(stuck_seqs) + lost == n  # what it missed, counted to the frame
    finally:
        if doomed.poll() is None:
            doomed.kill()


# -- stops and crashes ---------------------------------------------------------------------------
def _rows(path) -> dict:
    with h5py.File(path, "r") as f:
        out = {k: f[f"facestream/{k}"][:] for k in ("seq", "frame_id")}
        out["x"] = f["Facemap/paw/x"][:]
        out["attrs"] = {k: json.loads(v) for k, v in f["facestream"].attrs.items()}
    return out


def test_kill_9_of_every_process_leaves_a_readable_recording(endpoint, tmp_path):
    """The pipeline, its recorder and its capture all killed at once (kill -9 of the process
    group): the file opens and holds every frame published up to its last flush."""
    path = tmp_path / "run.h5"
    proc = _start("run", "--publish", endpoint, "--fps", "50", "--record", str(path), "--quiet", start_new_session=True)
    frames: list = []
    try:
        with Subscriber(endpoint) as sub:
            assert _until(sub, lambda m: len(frames) >= 200, frames=frames) is not None, "no frames"
            group = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
            os.killpg(proc.pid, signal.SIGKILL)
            t_kill = time.monotonic_ns()
            proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    for pid in group:  # all gone: nothing was left to finish the file
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    rec = _rows(path)  # opens: no exception
    assert rec["attrs"].get("complete") is not True  # nobody was left to mark it complete
    published = [f["seq"] for f, _ in frames]
    assert list(rec["seq"]) == published[: len(rec["seq"])]
    flush_s = load_config().record.flush_interval
    before_last_flush = [f["seq"] for f, t in frames if t < t_kill - (flush_s + 0.5) * 1e9]
    assert len(rec["seq"]) >= len(before_last_flush) > 0  # at most a flush interval (plus its write) lost
    assert np.isfinite(rec["x"]).all()
    # no process was left to free the ring buffer: the next run frees it
    left = {n for n in os.listdir("/dev/shm") if n.startswith(f"fsring_{proc.pid}_")}
    assert len(left) == 1 and set(remove_stale_rings()) >= left
    assert not {n for n in os.listdir("/dev/shm") if n.startswith(f"fsring_{proc.pid}_")}


def _children(pid: int) -> set[int]:
    return {p.pid for p in psutil.Process(pid).children(recursive=True)}


def test_a_killed_pipeline_leaves_no_process_behind(endpoint, tmp_path):
    """kill -9 of the pipeline alone: capture, recorder, video recorder and monitor notice and
    exit by themselves; the recorder first closes its file."""
    path = tmp_path / "run.h5"
    proc = _start("run", "--publish", endpoint, "--fps", "30", "--record", str(path), "--record-video",
                  str(tmp_path / "run.mkv"), "--monitor-port", "0", "--quiet")
    with Subscriber(endpoint) as sub:
        meta = _until(sub, _meta)
        assert meta is not None, proc.stderr.read() if proc.poll() is not None else "no meta"
        assert _until(sub, lambda m: m.topic == "frame" and m.data["seq"] >= 30) is not None
    roles = meta.data["processes"]
    assert {"capture-cam0", "recorder-cam0", "video-cam0", "monitor"} <= set(roles)
    proc.kill()
    proc.wait(30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in roles.values()):
        time.sleep(0.2)
    left = {role: pid for role, pid in roles.items() if psutil.pid_exists(pid)}
    assert not left, f"still running after the pipeline died: {left}"
    assert _rows(path)["attrs"]["complete"] is False and len(_rows(path)["seq"]) >= 1


def test_a_recorder_whose_pipeline_dies_while_it_starts_closes_its_file_and_exits(tmp_path):
    """The pipeline killed (kill -9) at once after starting its recorder, before the recorder has
    even imported its modules (on a loaded machine that start takes seconds): the recorder must
    still notice it is alone, close the file and exit, not run on holding the file locked."""
    path = tmp_path / "run.h5"
    script = (
        "import multiprocessing as mp, os, signal, sys\n"
        "from pathlib import Path\n"
        "from facestream.streamer.recorder import Recording\n"
        "if __name__ == '__main__':\n"
        f"    rec = Recording(mp.get_context('spawn'), Path({str(path)!r}), 'ipc://{tmp_path}/tee', 4, {{}}, 0.5)\n"
        "    rec._proc.start()\n"
        "    print(rec.pid, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n")
    out = tmp_path / "pipeline.out"  # a file, not a pipe, which the recorder would hold open
    with open(out, "w") as f:
        pipeline = subprocess.run([sys.executable, "-c", script], stdout=f, stderr=subprocess.STDOUT, timeout=120)
    assert pipeline.returncode == -signal.SIGKILL, out.read_text()
    recorder = int(out.read_text().split()[0])
    try:
        deadline = time.monotonic() + 30  # its start, on a loaded machine, then one poll
        while time.monotonic() < deadline and psutil.pid_exists(recorder) \
                and psutil.Process(recorder).status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.2)
        assert not psutil.pid_exists(recorder) or psutil.Process(recorder).status() == psutil.STATUS_ZOMBIE, \
            "the recorder runs on after its pipeline died"
    finally:
        if psutil.pid_exists(recorder):
            psutil.Process(recorder).kill()
    rec = _rows(path)  # opens: closed and unlocked
    assert rec["attrs"]["complete"] is False and len(rec["seq"]) == 0


@pytest.mark.parametrize("role, words", [
    ("capture-cam0", ["capture process died"]),
    ("recorder-cam0", ["recorder stopped unexpectedly"]),
    ("video-cam0", ["video recorder stopped unexpectedly"]),
])
def test_a_stage_that_dies_is_reported_and_the_run_exits_non_zero(endpoint, tmp_path, role, words):
    path = tmp_path / "run.h5"
    proc = _start("run", "--publish", endpoint, "--fps", "30", "--record", str(path),
                  "--record-video", str(tmp_path / "run.mkv"), "--quiet")
    try:
        with Subscriber(endpoint) as sub:
            meta = _until(sub, _meta)
            assert meta is not None, proc.stderr.read() if proc.poll() is not None else "no meta"
            assert _until(sub, lambda m: m.topic == "frame" and m.data["seq"] >= 30) is not None
            os.kill(meta.data["processes"][role], signal.SIGKILL)
            final = _until(sub, lambda m: m.topic == "meta" and m.data["status"] != "running", timeout=20)
        proc.wait(30)  # never hangs
    finally:
        if proc.poll() is None:
            proc.kill()
    assert final is not None and final.data["status"] == "failed"
    line = _one_line_error(proc, 1)
    for w in words:
        assert w in line
    if role != "recorder-cam0":  # the recording closes properly, with what it had
        rec = _rows(path)
        assert len(rec["seq"]) >= 30 and rec["attrs"]["meta"]["status"] == "failed"


def test_a_monitor_that_dies_is_reported_and_the_run_goes_on(endpoint):
    proc = _start("run", "--publish", endpoint, "--fps", "30", "--monitor-port", "0", "--json", "--quiet")
    try:
        with Subscriber(endpoint) as sub:
            meta = _until(sub, _meta)
            assert meta is not None, proc.stderr.read() if proc.poll() is not None else "no meta"
            assert meta.data["monitor"]["url"].startswith("http://127.0.0.1:") and meta.data["monitor"]["error"] is None
            os.kill(meta.data["processes"]["monitor"], signal.SIGKILL)
            reported = _until(sub, lambda m: m.topic == "meta" and (m.data.get("monitor") or {}).get("error"), timeout=10)
            assert reported is not None and reported.data["status"] == "running"
            assert "monitor stopped unexpectedly" in reported.data["monitor"]["error"]
            seq = _until(sub, lambda m: m.topic == "frame").data["seq"]
            assert _until(sub, lambda m: m.topic == "frame" and m.data["seq"] >= seq + 30, timeout=20) is not None
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err


# -- bad input ----------------------------------------------------------------------------------
def _bad_model(tmp_path, case: str) -> tuple[list[str], str]:
    """Command-line arguments naming a broken model file of the given kind, and the file the
    error must name."""
    import shutil

    import torch

    from facestream.engines.model_files import BUNDLED_DIR, PARAMS_NAME, STATE_NAME

    folder = tmp_path / "model"
    shutil.copytree(BUNDLED_DIR, folder)
    state = folder / STATE_NAME
    if case == "truncated":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    elif case == "mismatched":  # another network's weights: a layer of the wrong shape
        weights = torch.load(state, weights_only=True)
        name = next(k for k, v in weights.items() if v.ndim == 4)
        weights[name] = torch.zeros(weights[name].shape[0] + 1, *weights[name].shape[1:])
        torch.save(weights, state)
    elif case == "pickle":
        torch.save({"weights": Payload(tmp_path / "marker")}, state)
    elif case == "encoder":
        (tmp_path / "enc.npz").write_bytes(b"PK\x03\x04 not really a zip")
        return ["--encoder", str(tmp_path / "enc.npz")], str(tmp_path / "enc.npz")
    elif case == "params":
        (folder / PARAMS_NAME).write_text("{}")
        return ["--model", str(state)], str(folder / PARAMS_NAME)
    return ["--model", str(state)], str(state)


@pytest.mark.parametrize("case", ["truncated", "mismatched", "pickle", "params", "encoder"])
def test_broken_model_files_are_one_line_errors(endpoint, tmp_path, case):
    args, named = _bad_model(tmp_path, case)
    r = subprocess.run([*CLI, "run", "--publish", endpoint, "--frames", "5", "--quiet", *args],
                       capture_output=True, text=True, timeout=120)
    line = _one_line_error(r, 1)
    assert named in line
    assert not (tmp_path / "marker").exists()  # the pickle's code never ran


def _sequence(folder, sizes, dtype=np.uint8) -> str:
    """A numbered image sequence of synthetic faces, one image per (height, width)."""
    import cv2

    from facestream.camera_adapters.synthetic.camera import SyntheticCamera

    folder.mkdir()
    face = SyntheticCamera(640, 480, 0, seed=3)
    for i, (h, w) in enumerate(sizes):
        pixels = cv2.resize(face.render(i)[0], (w, h))
        cv2.imwrite(str(folder / f"img_{i:04d}.png"), pixels.astype(dtype) * (257 if dtype == np.uint16 else 1))
    return str(folder / "img_%04d.png")


def test_a_frame_of_another_size_stops_the_run_in_one_line_and_keeps_the_recording(endpoint, tmp_path):
    frames = _sequence(tmp_path / "frames", [(480, 640)] * 12 + [(240, 320)] * 3)
    path = tmp_path / "run.h5"
    r = subprocess.run([*CLI, "run", "--publish", endpoint, "--camera", f"video:{frames}", "--policy", "every",
                        "--record", str(path), "--quiet"], capture_output=True, text=True, timeout=120)
    line = _one_line_error(r, 1)
    assert "frame 12 is uint8 320x240, not uint8 640x480" in line and frames in line
    rec = _rows(path)
    assert rec["attrs"]["meta"]["status"] == "failed" and rec["attrs"]["complete"] is True
    assert list(rec["frame_id"]) == list(range(len(rec["frame_id"]))) and len(rec["frame_id"]) >= 1


def test_frames_of_another_type_are_refused_in_one_line(endpoint, tmp_path):
    frames = _sequence(tmp_path / "frames16", [(480, 640)] * 3, np.uint16)
    r = subprocess.run([*CLI, "run", "--publish", endpoint, "--camera", f"video:{frames}", "--quiet"],
                       capture_output=True, text=True, timeout=120)
    line = _one_line_error(r, 1)
    assert "uint16" in line and "8-bit" in line


# -- security -----------------------------------------------------------------------------------
def test_every_socket_listens_on_loopback_only_by_default(endpoint, tmp_path):
    """The stream, the recorder's feed and the monitor page, with nothing said about addresses:
    every listening socket of every process of the run is on 127.0.0.1; the page takes no input."""
    proc = _start("run", "--publish", endpoint, "--fps", "20", "--record", str(tmp_path / "run.h5"),
                  "--monitor-port", "0", "--quiet")
    try:
        with Subscriber(endpoint) as sub:
            meta = _until(sub, _meta)
            assert meta is not None, proc.stderr.read() if proc.poll() is not None else "no meta"
        listening = []
        for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]:
            listening += [c.laddr for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        # the page takes no input: it answers GET on its two addresses, and refuses the rest
        url = meta.data["monitor"]["url"]
        for method, address, code in (("POST", "", 501), ("PUT", "events", 501), ("DELETE", "", 501),
                                      ("GET", "../../etc/passwd", 404), ("GET", "config", 404)):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(urllib.request.Request(url + address, data=b"x" if method != "GET" else None,
                                                              method=method), timeout=10)
            assert refused.value.code == code, (method, address)
        # a page elsewhere that points its own name at 127.0.0.1 (DNS rebinding) gets nothing
        port = url.rsplit(":", 1)[1].strip("/")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(url + "events", headers={"Host": f"rebind.example:{port}"}), timeout=10)
        assert refused.value.code == 403
        page = urllib.request.urlopen(urllib.request.Request(url, headers={"Host": f"localhost:{port}"}), timeout=10)
        assert page.status == 200 and b"facestream monitor" in page.read()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    ports = {a.port for a in listening}
    assert int(endpoint.rsplit(":", 1)[1]) in ports  # the stream
    assert int(meta.data["monitor"]["url"].rsplit(":", 1)[1].strip("/")) in ports  # the page
    assert listening and all(a.ip == "127.0.0.1" for a in listening), listening


def _unpickling(source: str, where: str) -> list[str]:
    """The places in ``source`` that could unpickle (and so run code from a file or a message)."""
    import ast

    offences = []
    for node in ast.walk(ast.parse(source)):
        at = f"{where}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            if any(n.split(".")[0] in ("pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve") for n in names):
                offences.append(f"{at} imports a pickle module")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            keywords = {k.arg: k.value for k in node.keywords}
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
            call = (owner, node.func.attr)
            if call == ("torch", "load"):
                safe = keywords.get("weights_only")
                if not (isinstance(safe, ast.Constant) and safe.value is True):
                    offences.append(f"{at} torch.load without weights_only=True")
            allow = keywords.get("allow_pickle")
            if call == ("np", "load") and not (allow is None or (isinstance(allow, ast.Constant) and allow.value is False)):
                offences.append(f"{at} np.load that may allow pickles")
            if node.func.attr in ("recv_pyobj", "send_pyobj"):
                offences.append(f"{at} {node.func.attr} (pickles over ZeroMQ)")
    return offences


def test_the_unpickling_check_finds_each_kind_of_unpickling():
    bad = "import pickle\nimport torch, numpy as np\ntorch.load(p)\ntorch.load(p, weights_only=False)\n" \
          "np.load(p, allow_pickle=True)\nsock.recv_pyobj()\n"
    assert len(_unpickling(bad, "bad.py")) == 5
    assert _unpickling("import torch, numpy as np\ntorch.load(p, weights_only=True)\nnp.load(p)\n", "good.py") == []


def test_nothing_is_unpickled_when_loading_or_on_the_wire():
    """No pickle module, no full torch.load, no numpy object arrays, no pickled ZeroMQ messages
    anywhere in the package: model files, encoder files and messages load without running code."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    allowed = {
        "engines/restricted_npy.py",  # the unpickler that builds numpy arrays and nothing else
        "engines/training/facemap_reference.py",  # runs in Facemap's own environment, reads the file Facemap just wrote
    }
    offences = []
    for folder in ("streamer", "engines", "camera_adapters"):
        for path in sorted((root / folder).rglob("*.py")):
            if str(path.relative_to(root)) not in allowed:
                offences += _unpickling(path.read_text(), str(path.relative_to(root)))
    assert not offences, offences
