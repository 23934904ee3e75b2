"""``facestream bench``: the real pipeline end to end, measured from a subscriber's side.

Runs the pipeline (capture process, ring buffer, tracker, encoder, publisher) on a free
loopback port, with a subscriber in another process that timestamps every frame message on
arrival; latency is capture (frame reaches the host) to that subscriber.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import platform
import resource
import socket
import time

import numpy as np

from facestream.streamer.client import Subscriber
from facestream.streamer.config import Config
from facestream.streamer.pipeline import Pipeline

_QUIET_S = 5.0


def _free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _subscribe(endpoint: str, conn) -> None:
    """Collect (seq, latency ms) of every frame until the final meta, then send them back."""
    latencies, seqs = [], []
    with Subscriber(endpoint) as sub:
        conn.send("ready")
        last = time.monotonic()
        while time.monotonic() - last < _QUIET_S:
            msg = sub.recv(timeout=0.1)
            if msg is None:
                continue
            last = time.monotonic()
            if msg.topic == "frame":
                latencies.append(msg.latency_ms)
                seqs.append(msg.data["seq"])
            elif msg.data["status"] in ("ended", "stopped"):
                break
        conn.send({"latency_ms": latencies, "seq": seqs, "lost": sub.lost})


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    a = np.asarray(values)
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


def run_bench(cfg: Config, on_status=None, should_stop=lambda: False) -> dict:
    cfg["stream"]["publish"] = _free_endpoint()
    cfg["stream"]["wait_subscribers"] = 1
    ctx = mp.get_context("spawn")
    conn, child = ctx.Pipe()
    sub = ctx.Process(target=_subscribe, args=(cfg["stream"]["publish"], child), daemon=True)
    sub.start()
    conn.poll(30) and conn.recv()
    pipeline = Pipeline(cfg, on_status=on_status)
    usage0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = pipeline.run(should_stop)
    received = conn.recv() if conn.poll(_QUIET_S + 5) else {"latency_ms": [], "seq": [], "lost": None}
    sub.join(5)
    usage1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = sum(u1.ru_utime + u1.ru_stime - u0.ru_utime - u0.ru_stime for u0, u1 in zip(usage0, usage1))
    return {
        "machine": machine(),
        "engine": pipeline.tracker.describe()["engine"],
        "policy": cfg["stream"]["policy"],
        "camera_fps": cfg["camera"]["fps"],
        "frames": summary["frames"],
        "seconds": summary["seconds"],
        "fps": summary["fps"],
        "latency_ms": _percentiles(received["latency_ms"]),
        "publish_latency_ms": {k: summary["latency_ms"][k] for k in ("p50", "p99", "max")},
        "stages": summary["stages_ms"],
        "dropped": summary["dropped"],
        "subscriber": {"received": len(received["latency_ms"]), "lost": received["lost"]},
        "cpu_percent": round(100 * cpu_s / summary["seconds"], 1) if summary["seconds"] else None,
        "facemap_fps": None,
    }
