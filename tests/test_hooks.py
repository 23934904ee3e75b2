"""In-process hooks: loading, timing against the budget, and failure isolation, on their own
and inside `facestream run` (a real pipeline process, real sockets)."""
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from facestream.streamer.client import Subscriber
from facestream.streamer.hooks import HookError, HookRunner, load_hook
from facestream.streamer.protocol import Result

CLI = [sys.executable, "-m", "facestream.streamer.cli"]

HOOKS = textwrap.dedent("""
    import os, time

    def fine(result):
        pass

    def fails_on_odd(result):
        if result.frame_id % 2:
            raise ValueError(f"odd frame {result.frame_id}")

    def always_fails(result):
        raise RuntimeError("broken\\nsecond line")

    def slow(result):
        time.sleep(0.005)

    class Recorder:
        '''Writes the frame ids it was given, and the predicted keypoints' presence, at close().'''
        def __init__(self):
            self.seen = []
        def process(self, result):
            self.seen.append([result.seq, result.frame_id, result.keypoints.shape[0],
                              result.keypoints_predicted is not None])
        def close(self):
            import json
            with open(os.environ["HOOK_OUT"], "w") as f:
                json.dump(self.seen, f)

    class NoProcess:
        pass

    not_callable = 3
""")


@pytest.fixture
def hooks_file(tmp_path):
    path = tmp_path / "my_hooks.py"
    path.write_text(HOOKS)
    return path


def _result(i: int) -> Result:
    return Result(seq=i, frame_id=i, t_capture_ns=time.monotonic_ns(), t_publish_ns=time.monotonic_ns(),
                  t_camera_ns=None, camera="synthetic", keypoints=np.zeros((15, 3)), neural=np.zeros(4), dropped=0)


@pytest.mark.parametrize("target, says", [
    ("nocolon", "expected module:function"),
    ("no_such_module_xyz:f", "cannot be imported"),
    ("{dir}/missing.py:f", "not found"),
    ("{file}:nothing_here", "has no 'nothing_here'"),
    ("{file}:NoProcess", "no process(result) method"),
    ("{file}:not_callable", "not callable"),
])
def test_a_hook_that_cannot_load_is_a_one_line_error(hooks_file, target, says):
    with pytest.raises(HookError) as e:
        load_hook(target.format(file=hooks_file, dir=hooks_file.parent))
    assert says in str(e.value) and "\n" not in str(e.value)


def test_exceptions_are_counted_and_kept_never_raised(hooks_file):
    runner = HookRunner(f"{hooks_file}:fails_on_odd", budget_ms=1000, disable_after=3)
    for i in range(10):
        runner(_result(i))  # raises on every odd frame: the runner never does
    d = runner.describe()
    assert d["calls"] == 10 and d["errors"] == 5 and d["last_error"] == "ValueError: odd frame 9"
    assert not d["disabled"]  # never 3 in a row
    assert d["time_ms"]["n"] == 10 and d["overruns"] == 0
    assert "5 errors (last: ValueError: odd frame 9)" in runner.status()


def test_a_hook_that_keeps_failing_is_switched_off(hooks_file):
    runner = HookRunner(f"{hooks_file}:always_fails", budget_ms=1000, disable_after=4)
    for i in range(20):
        runner(_result(i))
    d = runner.describe()
    assert d["disabled"] and d["calls"] == 4 and d["errors"] == 4
    assert d["last_error"] == "RuntimeError: broken"  # one line
    assert "DISABLED after 4 errors in a row" in runner.status()


def test_calls_over_the_budget_are_counted(hooks_file):
    runner = HookRunner(f"{hooks_file}:slow", budget_ms=1.0, disable_after=10)
    for i in range(5):
        runner(_result(i))
    d = runner.describe()
    assert d["overruns"] == 5 and d["time_ms"]["p50"] >= 5.0 and d["errors"] == 0


def test_a_failing_hook_never_stops_the_pipeline(endpoint, hooks_file):
    with Subscriber(endpoint) as sub:
        proc = subprocess.Popen(
            [*CLI, "run", "--publish", endpoint, "--policy", "every", "--fps", "25", "--frames", "30",
             "--wait-subscribers", "1", "--hook", f"{hooks_file}:always_fails", "--json", "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        frames, meta = [], None
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline:
            m = sub.recv(timeout=0.5)
            if m is not None and m.topic == "frame":
                frames.append(m.data["seq"])
            elif m is not None and m.data["status"] in ("stopped", "ended", "failed"):
                meta = m.data
                break
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert frames == list(range(30)) and json.loads(out.strip().splitlines()[-1])["frames"] == 30
    hook = meta["hook"]
    assert meta["status"] == "stopped" and hook["disabled"] and hook["errors"] == 10 and hook["calls"] == 10
    assert hook["last_error"] == "RuntimeError: broken"
    assert "10 errors (last: RuntimeError: broken), disabled" in err


def test_a_class_hook_sees_every_result_and_is_closed(endpoint, hooks_file, tmp_path):
    out_path = tmp_path / "seen.json"
    with Subscriber(endpoint) as sub:
        proc = subprocess.Popen(
            [*CLI, "run", "--publish", endpoint, "--policy", "every", "--fps", "25", "--frames", "12",
             "--wait-subscribers", "1", "--hook", f"{hooks_file}:Recorder", "--predict-ms", "10", "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "HOOK_OUT": str(out_path)})
        published = []
        deadline = time.monotonic() + 200
        while len(published) < 12 and time.monotonic() < deadline:
            m = sub.recv(timeout=0.5)
            if m is not None and m.topic == "frame":
                published.append([m.data["seq"], m.data["frame_id"], 15, True])
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads(out_path.read_text()) == published


def test_a_bad_hook_stops_run_with_one_line(hooks_file):
    r = subprocess.run([*CLI, "run", "--hook", f"{hooks_file}:nothing_here", "--frames", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("facestream: error: hook ")
    assert "Traceback" not in r.stderr
