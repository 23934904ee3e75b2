"""Closed-loop example: fire a stimulus when the mouse whisks, and measure how late it fires.

    facestream run --config configs/closed_loop.toml          # terminal 1: the live pipeline
    python examples/whisk_trigger.py --duration 60            # terminal 2: the trigger

It reads the stream latest-only (a closed loop acts on the newest frame, never on a queue),
estimates the whisking amplitude from the three whisker keypoints (their motion band-passed
over a short causal window) or takes a component of the predicted neural activity
(``--signal neural:0``), and calls :func:`fire_stimulus` when the signal crosses
``--threshold`` (it re-arms once the signal falls below ``--rearm`` times the threshold and
``--refractory`` seconds have passed). Each trigger's latency is measured from the frame's
capture (``t_capture_ns``, the host's monotonic clock: run this on the pipeline's host).

The same detector runs in-process, without the socket, as a hook:

    facestream run --config configs/closed_loop.toml --hook examples/whisk_trigger.py:WhiskHook
"""
from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time

import numpy as np

WHISKERS = slice(12, 15)  # whisker(I), whisker(III), whisker(II) in Facemap's bodypart order


def fire_stimulus() -> None:
    """REPLACE THIS with your hardware: set a TTL line (an Arduino over serial, a NI-DAQ
    digital output, a Raspberry Pi GPIO pin), open a laser shutter, start a sound. It must
    return fast: the next frame waits for it."""


class WhiskDetector:
    """Whisking amplitude in pixels from the whisker keypoints, causal and frame-rate free.

    The keypoints' slow drift (head motion, set-point) is removed by subtracting an
    exponential moving average (time constant ``tau_s``); the amplitude is the root of the
    moving average of the remaining squared motion over the same time constant. Time steps
    come from the capture times, so frames skipped by latest-only reading do no harm.
    """

    def __init__(self, tau_s: float = 0.05) -> None:
        self.tau_s = tau_s
        self._mean: np.ndarray | None = None
        self._power = 0.0
        self._t_ns: int | None = None

    def update(self, keypoints: np.ndarray, t_ns: int) -> float:
        x = np.asarray(keypoints)[WHISKERS, :2].reshape(-1)
        if self._mean is None or t_ns - self._t_ns > 1e9:
            self._mean, self._power, self._t_ns = x.copy(), 0.0, t_ns
            return 0.0
        a = 1.0 - math.exp(-max(t_ns - self._t_ns, 0) / 1e9 / self.tau_s)
        self._t_ns = t_ns
        self._mean += a * (x - self._mean)
        self._power += a * (float(((x - self._mean) ** 2).sum()) - self._power)
        return math.sqrt(self._power)


class Trigger:
    """Threshold crossing with re-arming and a refractory period; keeps the latencies."""

    def __init__(self, signal_name: str, threshold: float, rearm: float = 0.7, refractory_s: float = 0.5) -> None:
        self.source = signal_name
        self.threshold, self.rearm, self.refractory_ns = threshold, rearm, int(refractory_s * 1e9)
        self.detector = WhiskDetector()
        self.armed = True
        self.last_fire_ns = -(1 << 62)
        self.fired_ms: list[float] = []  # capture to stimulus, per trigger
        self.decided_ms: list[float] = []  # capture to decision, every frame
        self.delivered_ms: list[float] = []  # publish to decision: what the way of reading adds

    def value(self, result) -> float:
        if self.source == "whisk":
            return self.detector.update(result.keypoints, result.t_capture_ns)
        k = int(self.source.split(":")[1])
        if k >= len(result.neural):
            raise SystemExit(f"whisk_trigger: --signal {self.source}: the stream has {len(result.neural)} components")
        return float(result.neural[k])

    def process(self, result) -> None:
        v = self.value(result)
        now = time.monotonic_ns()
        self.decided_ms.append((now - result.t_capture_ns) / 1e6)
        self.delivered_ms.append((now - result.t_publish_ns) / 1e6)
        if self.armed and v >= self.threshold and now - self.last_fire_ns >= self.refractory_ns:
            fire_stimulus()
            fired = time.monotonic_ns()
            self.fired_ms.append((fired - result.t_capture_ns) / 1e6)
            self.armed, self.last_fire_ns = False, fired
            print(f"stimulus: frame {result.frame_id}, {self.source} {v:.2f} >= {self.threshold:g}, "
                  f"{self.fired_ms[-1]:.1f} ms after capture", file=sys.stderr, flush=True)
        elif not self.armed and v < self.rearm * self.threshold:
            self.armed = True

    def summary(self) -> dict:
        def dist(values: list[float]) -> dict:
            if not values:
                return {"n": 0, "p50": None, "p99": None, "max": None}
            a = np.asarray(values)
            return {"n": len(a), "p50": round(float(np.percentile(a, 50)), 3),
                    "p99": round(float(np.percentile(a, 99)), 3), "max": round(float(a.max()), 3)}
        return {"signal": self.source, "threshold": self.threshold, "triggers": len(self.fired_ms),
                "trigger_latency_ms": dist(self.fired_ms), "decision_latency_ms": dist(self.decided_ms),
                "publish_to_decision_ms": dist(self.delivered_ms)}


class WhiskHook:
    """The trigger as an in-process hook (``--hook examples/whisk_trigger.py:WhiskHook``);
    its summary goes to stderr when the pipeline stops."""

    def __init__(self) -> None:
        self.trigger = Trigger("whisk", threshold=2.2)

    def process(self, result) -> None:
        self.trigger.process(result)

    def close(self) -> None:
        print("whisk_trigger (hook): " + json.dumps(self.trigger.summary()), file=sys.stderr, flush=True)


def _signal_name(text: str) -> str:
    if text == "whisk" or (text.startswith("neural:") and text[7:].isdigit()):
        return text
    raise argparse.ArgumentTypeError("expected whisk or neural:K")


def main() -> int:
    from facestream.streamer.client import Subscriber

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("endpoint", nargs="?", default="tcp://127.0.0.1:5555")
    p.add_argument("--signal", type=_signal_name, default="whisk", help="whisk (amplitude in px) or neural:K (activity component K)")
    p.add_argument("--threshold", type=float, default=2.2, help="fire when the signal reaches this (default 2.2 px of whisking)")
    p.add_argument("--rearm", type=float, default=0.7, help="re-arm below this fraction of the threshold")
    p.add_argument("--refractory", type=float, default=0.5, help="seconds between two stimuli at least")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = Ctrl-C)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    args = p.parse_args()

    trigger = Trigger(args.signal, args.threshold, args.rearm, args.refractory)
    stop = {"now": False}
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    t_end = time.monotonic() + args.duration if args.duration else math.inf
    with Subscriber(args.endpoint) as sub:
        sub.run(trigger.process, latest=True, should_stop=lambda: stop["now"] or time.monotonic() >= t_end)
        summary = {**trigger.summary(), "frames_read": len(trigger.decided_ms), "skipped": sub.skipped, "lost": sub.lost}
    if args.json:
        print(json.dumps(summary))
    else:
        lat, dec = summary["trigger_latency_ms"], summary["decision_latency_ms"]
        print(f"whisk_trigger: {summary['triggers']} stimuli; capture to stimulus p50 {lat['p50']} ms p99 {lat['p99']} ms "
              f"max {lat['max']} ms; capture to decision (every frame read, n={dec['n']}) p50 {dec['p50']} ms "
              f"p99 {dec['p99']} ms max {dec['max']} ms; {sub.skipped} frames skipped for newer ones", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
