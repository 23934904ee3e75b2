"""``facestream bench``: the real pipeline end to end, measured from a subscriber's side.

Runs the pipeline (capture process, ring buffer, tracker, encoder, publisher) on a free loopback
port, with a subscriber in another process that timestamps every frame message on arrival.
Latency is capture (the frame reaches the host) to that subscriber. The synthetic camera replays
a loop of drawn frames at a high-speed camera's rate (500 frames/s by default), so the capture
process costs what a real camera's does and the tracker always has a fresh frame: the frames/s
reported is what the tracker sustains, and frames it had no time for are counted as skipped.

CPU use is sampled per process (tracker = the pipeline process, capture, subscriber, monitor,
browser, others) with psutil over the running part of the run; ``over_time`` holds latency
percentiles and memory for every ``interval_s`` of the run (the soak view: a minute by default).

With a browser (``--browser``), the run also has its monitor, and the browser shows the
monitor's page, headless, for the whole run: what watching a run on its own machine costs it.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import psutil

from facestream.streamer.client import Subscriber
from facestream.streamer.config import Settings
from facestream.streamer.pipeline import Pipeline

BENCH_FPS = 500.0
BENCH_LOOP = 200
_QUIET_S = 5.0
_START_S = 300.0
_SAMPLE_S = 1.0
_PAGE_S = 120.0  # the browser has this long to open the monitor's page
SETTLE_S = 3.0  # seconds after the page opens or closes before a window is measured
# a desktop-sized window, so the page lays out as people see it; no GPU, as on a rig's PC
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1400,900"]


class BenchError(OSError):
    """The bench cannot run as asked (no such browser, a browser that stopped); one line."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_endpoint() -> str:
    return f"tcp://127.0.0.1:{_free_port()}"


class _Browser:
    """A headless browser program, started on a page and ended again, each time with a fresh profile."""

    def __init__(self, path: str) -> None:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise BenchError(f"--browser {path}: no such program")
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise BenchError(f"--browser {path}: cannot run it ({e})") from None
        self.path = path
        self.version = (out.stdout.strip().splitlines() or [None])[0]
        self.proc: subprocess.Popen | None = None
        self._profile: tempfile.TemporaryDirectory | None = None

    def open(self, url: str) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="facestream-bench-browser-")
        self.proc = subprocess.Popen([self.path, *BROWSER_ARGS, f"--user-data-dir={self._profile.name}", url],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def owns(self, proc: psutil.Process) -> bool:
        """``proc`` is the browser or one of its processes."""
        browser = self.proc
        return browser is not None and (proc.pid == browser.pid or any(p.pid == browser.pid for p in proc.parents()))

    def ended(self) -> str | None:
        """Why the browser is no longer running, if it started and then stopped by itself."""
        browser = self.proc
        if browser is not None and browser.poll() is not None:
            return f"the browser {self.path} ended during the run (exit code {browser.returncode})"
        return None

    def cpu_seconds(self) -> dict[int, float]:
        """CPU seconds so far of each of the browser's processes."""
        browser = self.proc
        if browser is None:
            return {}
        try:
            family = [psutil.Process(browser.pid)]
            family += family[0].children(recursive=True)
        except psutil.Error:
            return {}
        used = {}
        for proc in family:
            try:
                t = proc.cpu_times()
            except psutil.Error:
                continue
            used[proc.pid] = t.user + t.system
        return used

    def close(self) -> None:
        """End the browser (and any process of it left behind) and remove its profile."""
        browser, self.proc = self.proc, None
        if browser is not None and browser.poll() is None:
            try:
                family = psutil.Process(browser.pid).children(recursive=True)
            except psutil.Error:
                family = []
            browser.terminate()
            try:
                browser.wait(15)
            except subprocess.TimeoutExpired:
                browser.kill()
                browser.wait(5)
            for child in family:
                try:
                    child.kill()
                except psutil.Error:
                    pass  # it ended with the browser
        if self._profile is not None:
            self._profile.cleanup()
            self._profile = None


@dataclass
class Window:
    """A span of the run measured with the page open or closed (monotonic seconds)."""

    page_open: bool
    t0: float
    t1: float
    browser_cpu_s: float | None = None


class _Page(threading.Thread):
    """Drives the browser on the monitor's page once the monitor listens: open for the whole
    run, or (``alternate_s``) closed and open in turn, each state measured for ``alternate_s``
    after ``SETTLE_S`` (a browser's start-up burst, the monitor's subscriptions coming and going)."""

    def __init__(self, browser: _Browser, port: int, pipeline: Pipeline, alternate_s: float | None) -> None:
        super().__init__(daemon=True, name="bench-page")
        self.browser, self.port, self.pipeline, self.alternate_s = browser, port, pipeline, alternate_s
        self.url = f"http://127.0.0.1:{port}/"
        self.windows: list[Window] = []
        self.opened_at: float | None = None  # when the browser was last started, until the page shows
        self._closing = threading.Event()

    def run(self) -> None:
        while not self._closing.is_set():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                self._closing.wait(0.1)
        if self.alternate_s is None:
            if not self._closing.is_set():
                self.opened_at = time.monotonic()  # the run waits for the page's subscription
                self.browser.open(self.url)
            return
        while self.pipeline.status != "running":  # frames flow: what the windows measure
            if self._closing.wait(0.05):
                return
        while self._window(page_open=False):
            self.opened_at = time.monotonic()
            sent = self.pipeline.previews_sent()
            self.browser.open(self.url)
            while self.pipeline.previews_sent() == sent:  # previews flow: the page is open
                if self._closing.wait(0.05):
                    return
            self.opened_at = None
            if not self._window(page_open=True):
                return
            self.browser.close()

    def _window(self, page_open: bool) -> bool:
        """Settle, then measure one window; False if the run ends first (the window is dropped)."""
        if self._closing.wait(SETTLE_S):
            return False
        before = self.browser.cpu_seconds()
        t0 = time.monotonic()
        if self._closing.wait(self.alternate_s):
            return False
        t1 = time.monotonic()
        after = self.browser.cpu_seconds()
        cpu = sum(s - before.get(pid, 0.0) for pid, s in after.items()) if page_open else None
        self.windows.append(Window(page_open, t0, t1, cpu))
        return True

    def trouble(self, waiting: bool) -> str | None:
        """Why the run cannot go on as asked, if it cannot."""
        ended = self.browser.ended()
        if ended:
            return ended
        opened = self.opened_at
        if opened is not None and time.monotonic() - opened > _PAGE_S and (waiting or self.alternate_s is not None):
            return f"the browser {self.browser.path} did not open the monitor's page within {_PAGE_S:.0f} s"
        return None

    def close(self) -> None:
        self._closing.set()
        self.join(5)
        self.browser.close()


def _median_ci95(values: list[float]) -> tuple[float, float] | None:
    """A distribution-free 95 % interval for the median: order statistics k and n-k+1, where a
    binomial(n, 1/2) falls below k with probability at most 2.5 % (None below 6 values)."""
    n = len(values)
    below, k = 0.0, 0
    while below + math.comb(n, k) / 2**n <= 0.025:
        below += math.comb(n, k) / 2**n
        k += 1
    if k == 0:
        return None
    a = sorted(values)
    return a[k - 1], a[n - k]


def _page_cost(windows: list[Window], rows: list) -> dict:
    """frames/s and latency per window, and each open window's change against the closed windows
    either side of it (which cancels a machine's slow drift in speed)."""
    t = np.array([r[3] for r in rows], dtype=np.float64) / 1e9
    latency = np.array([r[1] for r in rows], dtype=np.float64)
    start = windows[0].t0 if windows else 0.0
    blocks = []
    for w in windows:
        inside = (t >= w.t0) & (t < w.t1)
        seconds = w.t1 - w.t0
        blocks.append({"page_open": w.page_open, "t_s": round(w.t0 - start, 3), "seconds": round(seconds, 3),
                       "frames": int(inside.sum()), "fps": round(float(inside.sum()) / seconds, 2),
                       "latency_ms": percentiles(latency[inside]),
                       "browser_cpu_percent": None if w.browser_cpu_s is None else round(100 * w.browser_cpu_s / seconds, 1)})
    changes = []
    for i, b in enumerate(blocks):
        around = [blocks[j]["fps"] for j in (i - 1, i + 1) if 0 <= j < len(blocks) and not blocks[j]["page_open"]]
        if b["page_open"] and around and min(around) > 0:
            changes.append(round(100 * (b["fps"] / np.mean(around) - 1), 2))

    def median(page_open: bool, get) -> float | None:
        values = [v for b in blocks if b["page_open"] == page_open and (v := get(b)) is not None]
        return round(float(np.median(values)), 2) if values else None

    ci = _median_ci95(changes)
    return {
        "pairs": len(changes),
        "change_pct": None if not changes else round(float(np.median(changes)), 2),
        "change_pct_ci95": None if ci is None else list(ci),
        "changes_pct": changes,
        "fps_closed": median(False, lambda b: b["fps"]),
        "fps_open": median(True, lambda b: b["fps"]),
        "p99_ms_closed": median(False, lambda b: b["latency_ms"]["p99"]),
        "p99_ms_open": median(True, lambda b: b["latency_ms"]["p99"]),
        "browser_cpu_percent": median(True, lambda b: b["browser_cpu_percent"]),
        "blocks": blocks,
    }


def _busy(stop) -> None:
    """A competing CPU load: one core's worth of work, as stimulus or acquisition software on a
    rig would take, until ``stop`` is set."""
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF


class _Competing:
    """``n`` busy processes at normal priority for the whole run (started before the pipeline,
    so its start-up is measured under the load too)."""

    def __init__(self, ctx, n: int) -> None:
        self._stop = ctx.Event()
        self.procs = [ctx.Process(target=_busy, args=(self._stop,), daemon=True, name=f"facestream-bench-busy-{i}")
                      for i in range(n)]
        for p in self.procs:
            p.start()

    @property
    def pids(self) -> set[int]:
        return {p.pid for p in self.procs}

    def close(self) -> None:
        self._stop.set()
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()


def _subscribe(endpoint: str, conn) -> None:
    """Collect, per frame message: seq, capture-to-receipt and publish-to-receipt ms, receipt time;
    until the final meta (or, once messages flow, ``_QUIET_S`` of silence), then send them back."""
    rows = []
    with Subscriber(endpoint) as sub:
        conn.send("ready")
        last = time.monotonic()
        quiet_s = _START_S  # building an engine and warming up may take a while before the first message
        while time.monotonic() - last < quiet_s:
            msg = sub.recv(timeout=0.1)
            if msg is None:
                continue
            last, quiet_s = time.monotonic(), _QUIET_S
            if msg.topic == "frame":
                d = msg.data
                rows.append((d["seq"], msg.latency_ms, (msg.t_receive_ns - d["t_publish_ns"]) / 1e6, msg.t_receive_ns))
            elif msg.topic == "meta" and msg.data["status"] in ("ended", "stopped", "failed"):
                break
        conn.send({"rows": rows, "lost": sub.lost})


def percentiles(values) -> dict:
    """p50, p99, max of ``values`` in ms, rounded to the µs; None for each when empty."""
    if len(values) == 0:
        return {"p50": None, "p99": None, "max": None}
    a = np.asarray(values, dtype=np.float64)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
            "max": round(float(a.max()), 3)}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}, Python {platform.python_version()}"


class _ProcessSampler(threading.Thread):
    """Every second: CPU seconds and memory of this process and its children, by role."""

    def __init__(self, pipeline: Pipeline, subscriber_pid: int, browser: _Browser | None = None,
                 competing: set[int] = frozenset()) -> None:
        super().__init__(daemon=True, name="bench-sampler")
        self.pipeline, self.subscriber_pid, self.browser, self.competing = pipeline, subscriber_pid, browser, competing
        self.samples: list[tuple[float, int]] = []  # (t, rss bytes of the run's processes: not the subscriber or browser)
        self._machine: list[float] = []  # the whole machine's busy CPU seconds at each sample
        self._cpu: dict[int, list] = {}  # pid -> [role, CPU s when first seen, CPU s when last seen]
        self._done = threading.Event()
        self._procs: dict[int, psutil.Process] = {}

    def _role(self, proc: psutil.Process) -> str:
        pid = proc.pid
        if pid == os.getpid():
            return "tracker"
        if pid == self.subscriber_pid:
            return "subscriber"
        if pid in self.competing:
            return "competing"
        if pid == self.pipeline.processes.get("monitor"):
            return "monitor"
        if self.browser is not None and self.browser.owns(proc):
            return "browser"
        captures = {p for role, p in self.pipeline.processes.items() if role.startswith("capture-")}
        return "capture" if pid in captures else "other"

    def sample(self) -> None:
        me = psutil.Process()
        rss = 0
        for proc in [me, *me.children(recursive=True)]:
            proc = self._procs.setdefault(proc.pid, proc)  # keep one object per pid
            try:
                times = proc.cpu_times()
                role = self._cpu[proc.pid][0] if proc.pid in self._cpu else self._role(proc)
                if role not in ("subscriber", "browser", "competing"):
                    rss += proc.memory_info().rss
            except psutil.Error:
                continue
            seen = self._cpu.setdefault(proc.pid, [role, times.user + times.system, 0.0])
            seen[2] = times.user + times.system  # a process that ends keeps its last reading
        self.samples.append((time.monotonic(), rss))
        t = psutil.cpu_times()
        self._machine.append(t.user + t.nice + t.system + t.irq + t.softirq)

    def run(self) -> None:
        while self.pipeline.status != "running" and not self._done.is_set():
            time.sleep(0.01)
        while not self._done.is_set():
            self.sample()
            self._done.wait(_SAMPLE_S)

    def stop(self) -> None:
        if self.pipeline.status == "running" or len(self.samples) < 2:
            self.sample()
        self._done.set()
        self.join(2)

    def cpu_percent(self) -> dict[str, float] | None:
        if len(self.samples) < 2:
            return None
        seconds = self.samples[-1][0] - self.samples[0][0]
        used: dict[str, float] = {}
        for role, first, last in self._cpu.values():
            used[role] = used.get(role, 0.0) + last - first
        shares = {role: round(100 * s / seconds, 1) for role, s in sorted(used.items())}
        # what the rest of the machine used meanwhile (other programs): all CPU time less this run's
        shares["not this run"] = round(max(100 * (self._machine[-1] - self._machine[0]) / seconds - sum(shares.values()), 0.0), 1)
        return shares


def _over_time(rows: list, samples: list, t_start: float, interval_s: float) -> list[dict]:
    """Latency percentiles (from the subscriber's receipt times) and peak memory per interval."""
    slots: dict[int, dict] = {}
    for _, latency, _, t_receive_ns in rows:
        slots.setdefault(int((t_receive_ns / 1e9 - t_start) // interval_s), {"latency": []})["latency"].append(latency)
    for t, rss in samples:
        slot = slots.setdefault(int((t - t_start) // interval_s), {"latency": []})
        slot["rss"] = max(slot.get("rss", 0), rss)
    return [
        {"t_s": round(k * interval_s, 3), "frames": len(v["latency"]), "latency_ms": percentiles(v["latency"]),
         "memory_mb": round(v.get("rss", 0) / 2**20, 1)}
        for k, v in sorted(slots.items()) if k >= 0
    ]


def run_bench(cfg: Settings, on_status=None, should_stop=lambda: False, facemap: bool = True,
              interval_s: float = 60.0, browser: str | None = None,
              alternate_s: float | None = None, competing: int = 0) -> tuple[dict, list[float]]:
    """Run the pipeline under ``cfg`` (publish endpoint and subscriber wait set here) and measure it:
    the results (``over_time`` in rows of ``interval_s``), and every frame's capture-to-subscriber
    latency in ms. With ``browser`` (a program such as /usr/bin/chromium), the monitor's page is
    open in it from the first frame to the last; with ``alternate_s`` as well, closed and open in
    turn, and the JSON's ``monitor.page_cost`` compares frames/s in the two. ``competing``: that
    many busy processes share the machine for the whole run (a busy rig PC)."""
    program = _Browser(browser) if browser else None
    # the page's monitor subscribes too, once the page is open (not waited for when it comes and goes)
    waits = 2 if program is not None and alternate_s is None else 1
    cfg = replace(cfg, stream=replace(cfg.stream, publish=_free_endpoint(), wait_subscribers=waits))
    if program is not None:
        port = _free_port()
        cfg = replace(cfg, monitor=replace(cfg.monitor, enabled=True, host="127.0.0.1", port=port))
    ctx = mp.get_context("spawn")
    conn, child = ctx.Pipe()
    sub = ctx.Process(target=_subscribe, args=(cfg.stream.publish, child), daemon=True, name="facestream-bench-subscriber")
    sub.start()
    conn.poll(30) and conn.recv()
    load = _Competing(ctx, competing)
    t_construct_ns = time.monotonic_ns()  # the clock of the subscriber's receipt times
    try:
        pipeline = Pipeline(cfg, on_status=on_status)
    except BaseException:
        load.close()
        raise
    load_s = (time.monotonic_ns() - t_construct_ns) / 1e9
    page = None if program is None else _Page(program, port, pipeline, alternate_s)
    sampler = _ProcessSampler(pipeline, sub.pid, program, load.pids)
    sampler.start()
    t_start = time.monotonic()
    trouble = None

    def stop() -> bool:
        nonlocal trouble
        if page is not None and trouble is None:
            trouble = page.trouble(waiting=pipeline.status == "waiting for subscribers")
        return should_stop() or trouble is not None

    try:
        if page is not None:
            page.start()
        pipeline.run(stop)
    finally:
        sampler.stop()
        load.close()
        if page is not None:
            page.close()
    if trouble is not None:
        sub.join(_QUIET_S + 5)
        raise BenchError(trouble)
    received = conn.recv() if conn.poll(_QUIET_S + 5) else {"rows": [], "lost": None}  # it has seen the final meta
    sub.join(5)
    rows = received["rows"]
    report = pipeline.report()
    summary, tracker = report["stats"], report["tracker"]
    stages, p99s = summary["stages_ms"], summary["stages_p99_ms"]
    transport = [r[2] for r in rows]
    result = {
        "machine": machine(),
        "engine": tracker["engine"],
        "engine_reason": tracker["reason"],
        "runtime": tracker["runtime"],
        "threads": tracker["threads"],
        "policy": cfg.stream.policy,
        "camera_fps": cfg.camera.fps,
        "cameras": len(cfg.camera.spec),
        "competing": competing,
        "frames_per_batch": summary["frames_per_batch"],
        "frames": summary["frames"],
        "seconds": summary["seconds"],
        "fps": summary["fps"],
        "latency_ms": percentiles([r[1] for r in rows]),
        "publish_latency_ms": {k: summary["latency_ms"][k] for k in ("p50", "p99", "max")},
        "transport_ms": percentiles(transport),
        "overhead_ms": {"mean": stages.get("overhead_ms"), "p99": p99s.get("overhead_ms"),
                        "p99_with_transport": None if not transport else round(p99s.get("overhead_ms", 0) + percentiles(transport)["p99"], 3)},
        "stages": {k.removesuffix("_ms"): {"mean": v, "p99": p99s.get(k)} for k, v in stages.items()},
        "dropped": summary["dropped"],
        "subscriber": {"received": len(rows), "lost": received["lost"]},
        "cpu_percent": sampler.cpu_percent(),
        "monitor": {"enabled": cfg.monitor.enabled,
                    "page_open": program is not None and summary["frames"] > 0,
                    "browser": program.version if program is not None else None,
                    "preview_fps": cfg.monitor.preview_fps, "preview_width": cfg.monitor.preview_width,
                    "alternate_s": alternate_s,
                    "page_cost": _page_cost(page.windows, rows) if alternate_s else None},
        # from the start of the pipeline's set-up: the tracker loaded, and the first frame received
        # (which adds opening the camera and the subscriber's wait)
        "startup_s": {"tracker_loaded": round(load_s, 3),
                      "first_frame": None if not rows else round((rows[0][3] - t_construct_ns) / 1e9, 3),
                      "command_first_frame": _command_start(cfg, tracker["engine"])},
        "interval_s": interval_s,
        "over_time": _over_time(rows, sampler.samples, t_start, interval_s),
        "facemap_fps": None,
        "facemap": None,
    }
    if facemap:
        _add_facemap(result, cfg)
    return result, [r[1] for r in rows]


_START_RUNS = 3


def _command_start(cfg: Settings, engine: str) -> dict:
    """What a user waits for: ``facestream run`` typed on a warm machine (the engine cached by the
    run just measured), from the command's launch to its first frame at a subscriber; the median
    of a few launches, in seconds (None where a launch delivered nothing)."""
    launches = []
    for _ in range(_START_RUNS):
        endpoint = _free_endpoint()
        command = [sys.executable, "-m", "facestream.streamer.cli", "run", "--quiet", "--frames", "3",
                   "--publish", endpoint, "--wait-subscribers", "1", "--engine", engine,
                   "--threads", str(cfg.tracker.threads)]
        if cfg.tracker.model:
            command += ["--model", str(cfg.tracker.model)]
        with Subscriber(endpoint, topics=("frame",)) as sub:
            t0 = time.monotonic()
            run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                first = sub.recv(timeout=60)
                launches.append(None if first is None else round(time.monotonic() - t0, 3))
                run.wait(60)
            finally:
                if run.poll() is None:
                    run.kill()
                    run.wait()
    done = [t for t in launches if t is not None]
    return {"median": float(np.median(done)) if done else None, "launches": launches}


def _add_facemap(result: dict, cfg: Settings) -> None:
    """Facemap's own frames/s on the benchmark's frames, and the ratio, where Facemap is installed."""
    from facestream.camera_adapters.synthetic.camera import SyntheticCamera
    from facestream.streamer.tools.facemap_compare import facemap_fps, facemap_python

    python = facemap_python()
    if python is None:
        result["facemap"] = {"error": "Facemap not found (set FACEMAP_PYTHON to an interpreter that has it)"}
        return
    c = cfg.camera
    camera = SyntheticCamera(c.width, c.height, c.fps, c.seed)
    frames = np.stack([camera.render(k)[0] for k in range(min(c.loop or BENCH_LOOP, 200))])
    found = facemap_fps(frames, c.fps, python)
    result["facemap"] = found
    if "fps" in found:
        result["facemap_fps"] = found["fps"]
        result["speedup_vs_facemap"] = round(result["fps"] / found["fps"], 2) if found["fps"] else None


def summary_text(r: dict) -> str:
    """The results for a person, a few lines."""
    fmt = lambda p: "-" if p["p50"] is None else f"p50 {p['p50']:.2f}  p99 {p['p99']:.2f}  max {p['max']:.2f} ms"  # noqa: E731
    stages = "  ".join(f"{k} {v['mean']:.2f}/{v['p99']:.2f}" for k, v in r["stages"].items())
    d = r["dropped"]
    lines = [
        f"{r['engine']} ({r['runtime']}, {r['threads']} threads; {r['engine_reason']})",
        f"  {r['fps']:.1f} frames/s over {r['frames']} frames, camera {r['camera_fps']:g} fps, policy {r['policy']}"
        + (f", beside {r['competing']} busy processes" if r["competing"] else ""),
        f"  capture -> subscriber  {fmt(r['latency_ms'])}",
        f"  pipeline overhead (all but the tracker)  mean {r['overhead_ms']['mean']} ms, p99 {r['overhead_ms']['p99']} ms; publish -> subscriber p99 {r['transport_ms']['p99']} ms",
        f"  stages mean/p99 ms: {stages}",
        f"  dropped {d['total']} (camera {d['camera']}, overrun {d['overrun']}, skipped {d['skipped']}); subscriber lost {r['subscriber']['lost']}",
        f"  CPU %: {r['cpu_percent']}",
        f"  start: tracker loaded in {r['startup_s']['tracker_loaded']:.2f} s, first frame at {r['startup_s']['first_frame']} s;"
        f" `facestream run` launched to its first frame: median {r['startup_s']['command_first_frame']['median']} s",
    ]
    m = r["monitor"]
    if m["page_cost"] is not None:
        c = m["page_cost"]
        ci = "" if c["change_pct_ci95"] is None else f" (95 % interval {c['change_pct_ci95'][0]:+.1f} to {c['change_pct_ci95'][1]:+.1f} %)"
        change = "-" if c["change_pct"] is None else f"{c['change_pct']:+.1f} %{ci}"
        lines.append(f"  monitor page in {m['browser']}, closed and open in turn ({c['pairs']} open windows of {m['alternate_s']:g} s): "
                     f"frames/s {c['fps_closed']} closed, {c['fps_open']} open, change {change}; browser CPU {c['browser_cpu_percent']} %")
    elif m["page_open"]:
        lines.append(f"  monitor page open in {m['browser']} (previews {m['preview_fps']:g}/s, {m['preview_width']} px wide)")
    elif m["enabled"]:
        lines.append("  monitor on, no page open")
    if r["facemap_fps"] is not None:
        lines.append(f"  Facemap itself: {r['facemap_fps']:.1f} frames/s on the same frames ({r['speedup_vs_facemap']}x)")
    elif r["facemap"]:
        lines.append(f"  Facemap itself: not measured ({r['facemap']['error']})")
    return "\n".join(lines)


def plot_latency(latencies: list[float], result: dict, path: Path) -> None:
    """Histogram and tail of capture-to-subscriber latency, to a PNG or SVG file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = np.sort(np.asarray(latencies))
    fig, (hist, tail) = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    hist.hist(a, bins=60, color="#3b6ea8")
    for q, style in ((50, "-"), (99, "--")):
        hist.axvline(np.percentile(a, q), color="#c0392b", linestyle=style, label=f"p{q} {np.percentile(a, q):.1f} ms")
    hist.set_xlabel("capture to subscriber (ms)")
    hist.set_ylabel("frames")
    hist.legend(frameon=False)
    exceed = 1 - np.arange(len(a)) / len(a)
    tail.semilogy(a, exceed, color="#3b6ea8")
    tail.set_xlabel("latency (ms)")
    tail.set_ylabel("fraction of frames slower")
    tail.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"{result['engine']} ({result['runtime']}), {result['fps']:.1f} frames/s, {len(a)} frames", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
