"""`facestream bench`: the real pipeline measured from a subscriber in another process, short."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from helpers import tiny_model

CLI = [sys.executable, "-m", "facestream.streamer.cli"]
CHROMIUM = "/usr/bin/chromium"
FACEMAP_PYTHON = Path(os.environ.get("FACEMAP_PYTHON", Path(__file__).parents[1] / ".facemap-venv" / "bin" / "python"))


def bench(tmp_path, *args, env=None):
    out = tmp_path / "bench.json"
    r = subprocess.run([*CLI, "bench", *args, "--json", str(out)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, **(env or {})})
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(out.read_text()), r.stdout


def test_every_frame_reaches_the_subscriber_and_is_timed(tmp_path):
    plot = tmp_path / "latency.png"
    result, summary = bench(tmp_path, "--frames", "30", "--fps", "30", "--loop", "10", "--policy", "every",
                            "--no-facemap", "--plot", str(plot))
    assert result["frames"] == 30 and result["subscriber"] == {"received": 30, "lost": 0}
    lat = result["latency_ms"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert result["publish_latency_ms"]["p50"] < lat["p50"]  # the subscriber receives after publication
    assert {"wait", "preprocess", "network", "decode", "encode", "publish", "overhead"} <= set(result["stages"])
    assert all(0 <= s["mean"] <= s["p99"] + 1e-3 for s in result["stages"].values())
    assert result["dropped"]["total"] == result["dropped"]["camera"] + result["dropped"]["overrun"] + result["dropped"]["skipped"]
    assert set(result["cpu_percent"]) >= {"tracker", "capture", "subscriber"}
    assert not result["monitor"]["enabled"] and not result["monitor"]["page_open"] and "browser" not in result["cpu_percent"]
    assert sum(m["frames"] for m in result["over_time"]) == 30 and result["interval_s"] == 60
    assert result["facemap_fps"] is None and result["engine"] == "onnx-int8"
    assert result["engine_reason"].startswith("auto:")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "frames/s" in summary and "capture -> subscriber" in summary
    start = result["startup_s"]  # time to the first frame, from the pipeline's set-up
    assert 0 < start["tracker_loaded"] < start["first_frame"] and "first frame at" in summary
    # `facestream run` launched as a user would, to its first frame at a subscriber
    launches = start["command_first_frame"]["launches"]
    assert len(launches) == 3 and all(t is not None and t > 0 for t in launches), launches
    assert start["command_first_frame"]["median"] == sorted(launches)[1] and "launched to its first frame" in summary


@pytest.mark.skipif(not FACEMAP_PYTHON.is_file(), reason=f"no Facemap environment at {FACEMAP_PYTHON} (.ci/run builds it)")
def test_facemap_is_timed_on_the_same_frames(tmp_path):
    result, summary = bench(tmp_path, "--frames", "20", "--fps", "100", "--loop", "12",
                            env={"FACEMAP_PYTHON": str(FACEMAP_PYTHON)})
    assert result["facemap"]["frames"] == 12
    assert result["facemap_fps"] > 0
    assert result["speedup_vs_facemap"] == pytest.approx(result["fps"] / result["facemap_fps"], rel=0.01)
    assert "Facemap itself" in summary


def test_missing_facemap_is_reported_not_fatal(tmp_path):
    result, _ = bench(tmp_path, "--frames", "5", "--fps", "50", "--loop", "5",
                      env={"FACEMAP_PYTHON": str(tmp_path / "no-such-python")})
    assert result["facemap_fps"] is None and "FACEMAP_PYTHON" in result["facemap"]["error"]


def test_short_soak_keeps_memory_flat_and_every_frame(tmp_path):
    """The hour-long soak of docs/reliability.md in a short form: a minute in 10 s rows; every
    frame processed and received, frames in every row, and memory after the first row grows by
    less than 20 MB (the hour in docs/ is the finer test of memory). The tracker is the tiny
    model, so every frame is tracked at 15 frames/s on any CPU: the real tracker's speed is
    measured in docs/benchmarks.md, not here."""
    model = tiny_model(tmp_path / "tiny")
    result, _ = bench(tmp_path, "--soak", "1", "--interval", "10", "--fps", "15", "--loop", "30", "--policy", "every",
                      "--no-facemap", "--model", str(model), "--engine", "onnx")
    rows = result["over_time"]
    assert result["interval_s"] == 10 and len(rows) >= 6
    assert result["subscriber"]["lost"] == 0 and result["subscriber"]["received"] == result["frames"]
    assert result["dropped"]["overrun"] == 0 and result["frames"] >= 15 * 55
    assert all(r["frames"] > 0 for r in rows[:6])  # frames flowed in every interval: nothing stalled
    memory = [r["memory_mb"] for r in rows[1:6]]
    assert max(memory) - memory[0] < 20, memory


def need_chromium() -> None:
    if not os.path.exists(CHROMIUM):
        why = f"needs Debian's chromium at {CHROMIUM} (.ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


def assert_browser_gone(tmp_path) -> None:
    assert not list(tmp_path.glob("facestream-bench-browser-*"))
    left = [p for p in psutil.process_iter(["cmdline"]) if any(str(tmp_path) in a for a in p.info["cmdline"] or [])]
    assert not left, left


def test_browser_shows_the_monitor_page_for_the_whole_run(tmp_path):
    """--browser: the run has its monitor, its page open in a headless browser from the first
    frame to the last; their CPU is reported apart, and the browser and its profile are gone after."""
    need_chromium()
    result, summary = bench(tmp_path, "--frames", "100", "--fps", "30", "--loop", "10", "--no-facemap",
                            "--browser", CHROMIUM, env={"TMPDIR": str(tmp_path)})
    m = result["monitor"]
    assert m["enabled"] and m["page_open"] and m["browser"].startswith("Chromium") and result["frames"] == 100
    assert result["cpu_percent"]["browser"] > 0 and result["cpu_percent"]["monitor"] > 0
    assert "monitor page open in Chromium" in summary and m["page_cost"] is None
    assert_browser_gone(tmp_path)


def test_alternate_measures_windows_with_the_page_closed_and_open_in_turn(tmp_path):
    """--alternate: windows of the asked length, closed first and then open and closed in turn,
    each with its frames/s and latency; the browser's CPU in the open ones only; each open
    window's change is against the closed windows either side."""
    need_chromium()
    result, summary = bench(tmp_path, "--soak", "0.6", "--fps", "30", "--loop", "10", "--no-facemap",
                            "--browser", CHROMIUM, "--alternate", "3", env={"TMPDIR": str(tmp_path)})
    m = result["monitor"]
    cost = m["page_cost"]
    blocks = cost["blocks"]
    assert m["alternate_s"] == 3 and len(blocks) >= 3, blocks
    assert [b["page_open"] for b in blocks] == [i % 2 == 1 for i in range(len(blocks))]
    assert all(2.9 < b["seconds"] < 3.5 and b["frames"] > 0 for b in blocks), blocks
    starts = [b["t_s"] for b in blocks]
    assert starts[0] == 0 and all(later - earlier >= 3 + 3 for earlier, later in zip(starts, starts[1:]))  # settled between
    assert all((b["browser_cpu_percent"] or 0) > 0 for b in blocks if b["page_open"])
    assert all(b["browser_cpu_percent"] is None for b in blocks if not b["page_open"])
    for i, change in zip(range(1, len(blocks), 2), cost["changes_pct"]):
        around = [blocks[j]["fps"] for j in (i - 1, i + 1) if j < len(blocks)]
        assert change == pytest.approx(100 * (blocks[i]["fps"] * len(around) / sum(around) - 1), abs=0.01)
    assert cost["pairs"] == len(blocks) // 2 and cost["change_pct"] is not None
    assert "closed and open in turn" in summary
    assert_browser_gone(tmp_path)


def test_alternate_without_a_browser_is_refused(tmp_path):
    r = subprocess.run([*CLI, "bench", "--frames", "5", "--no-facemap", "--alternate", "5"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.strip() == "facestream: error: --alternate needs --browser: the page to open and close"


def test_median_interval_is_the_order_statistics_a_fair_coin_allows():
    from facestream.streamer.tools.bench import _median_ci95

    assert _median_ci95([5.0, 1.0, 4.0, 2.0, 3.0]) is None  # 2 x (1/2)^5 > 5 %: five values cannot give 95 %
    assert _median_ci95([6.0, 1.0, 5.0, 2.0, 4.0, 3.0]) == (1.0, 6.0)  # 2 x (1/2)^6 < 5 %
    assert _median_ci95([float(v) for v in range(10, 0, -1)]) == (2.0, 9.0)  # P(B(10) <= 1) = 1.1 %, <= 2: 5.5 %


def test_a_browser_that_is_not_there_is_one_line_and_non_zero(tmp_path):
    missing = tmp_path / "no-such-browser"
    r = subprocess.run([*CLI, "bench", "--frames", "5", "--no-facemap", "--browser", str(missing)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facestream: error:") and str(missing) in lines[0], r.stderr
