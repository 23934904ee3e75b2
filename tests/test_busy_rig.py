"""A busy rig PC: `bench --competing N` measures the pipeline beside N busy processes, and
`camera.priority` puts the capture processes ahead of other software (docs/reliability.md,
"A busy rig"). Real runs in subprocesses, the tiny tracker model so the tracker's speed does not
matter, real ZeroMQ on loopback."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest

from facestream.streamer.client import Subscriber

from helpers import free_port, tiny_model

CLI = [sys.executable, "-m", "facestream.streamer.cli"]


def test_bench_with_competing_processes_measures_them_and_ends_them(tmp_path):
    model = tiny_model(tmp_path / "tiny")
    out = tmp_path / "bench.json"
    r = subprocess.run([*CLI, "bench", "--frames", "40", "--fps", "20", "--loop", "10", "--policy", "every",
                        "--competing", "2", "--model", str(model), "--engine", "onnx", "--no-facemap", "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["competing"] == 2 and "beside 2 busy processes" in r.stdout
    assert result["subscriber"] == {"received": 40, "lost": 0}
    # two processes that never sleep took CPU (how much depends on what else runs on the machine)
    assert result["cpu_percent"]["competing"] > 1, result["cpu_percent"]
    assert "not this run" in result["cpu_percent"]
    busy = [p for p in psutil.process_iter(["cmdline"]) if "facestream-bench-busy" in " ".join(p.info["cmdline"] or [])]
    assert not busy  # nothing left running after the bench


def _run_config(tmp_path, priority: int) -> list[str]:
    config = tmp_path / "priority.toml"
    config.write_text(f"[camera]\npriority = {priority}\n")
    return [*CLI, "run", "--config", str(config), "--model", str(tiny_model(tmp_path / "tiny")), "--engine", "onnx",
            "--no-monitor", "--fps", "20", "--quiet"]


def test_the_capture_process_runs_at_the_priority_it_is_given(tmp_path):
    # below 0 where this process may raise priority (root: CI), else a lowered one: the same path
    priority = -5 if os.geteuid() == 0 else 5
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([*_run_config(tmp_path, priority), "--publish", endpoint],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    nice = None
    try:
        with Subscriber(endpoint, topics=("meta",)) as sub:
            deadline = time.monotonic() + 120
            while nice is None and time.monotonic() < deadline:
                m = sub.recv(timeout=0.2)
                if m is None:
                    assert proc.poll() is None, proc.stderr.read()
                elif "capture-cam0" in m.data["processes"]:
                    nice = psutil.Process(m.data["processes"]["capture-cam0"]).nice()
                    tracker = psutil.Process(proc.pid).nice()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert nice == priority and tracker == 0
    assert proc.returncode == 0, err


def test_a_priority_this_user_may_not_set_is_refused_in_one_line(tmp_path):
    command = _run_config(tmp_path, -5) + ["--publish", f"tcp://127.0.0.1:{free_port()}", "--frames", "5"]
    if os.geteuid() == 0:  # root may raise priority: run without the capability that allows it
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and no setpriv (util-linux) to drop CAP_SYS_NICE")
        command = ["setpriv", "--bounding-set=-sys_nice", *command]
    r = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()  # the run's first line says what it starts; then the error
    assert "camera.priority -5: not permitted" in lines[-1] and lines[-1].startswith("facestream: error:"), r.stderr
    assert sum("priority" in line for line in lines) == 1
    assert "Traceback" not in r.stderr
