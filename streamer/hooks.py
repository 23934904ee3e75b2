"""In-process hooks: user code run in the tracker process on every result, for the lowest
latency (no socket, no decoding).

A hook is named ``module:function`` or ``path/to/file.py:function``; the name may also be a
class, made once with no arguments, whose ``process(result)`` is called per frame and whose
``close()`` (if any) is called at the end. ``result`` is a :class:`~facestream.streamer.protocol.Result`.

The hook runs after the frame is published, so subscribers never wait for it; but it runs
in the tracker's own thread, and Python cannot interrupt a running function safely, so a
hook cannot be preempted: a slow hook delays the next frame (with the ``latest`` policy,
frames are skipped meanwhile) and a hook that never returns stalls the pipeline. What the
runner does instead: it times every call against the budget (p50, p99, max, overruns),
catches every exception, ``sys.exit()`` included (counted, the last one kept), and switches
the hook off after ``disable_after`` consecutive exceptions. All of it goes into ``meta.hook``.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import time
from pathlib import Path
from typing import Any, Callable

from facestream.streamer.protocol import Result
from facestream.streamer.stats import LatencyHistogram


class HookError(ValueError):
    """A hook that cannot be loaded; the message is one line."""


def _import(module: str):
    if module.endswith(".py"):
        path = Path(module)
        if not path.is_file():
            raise HookError(f"hook file not found: {module}")
        spec = importlib.util.spec_from_file_location(f"facestream_hook_{path.stem}", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        try:
            spec.loader.exec_module(mod)
        except Exception as e:
            raise HookError(f"hook file {module} failed to load: {type(e).__name__}: {e}") from None
        return mod
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise HookError(f"hook module {module!r} cannot be imported: {e}") from None
    except Exception as e:
        raise HookError(f"hook module {module!r} failed to load: {type(e).__name__}: {e}") from None


def load_hook(target: str) -> tuple[Callable[[Result], Any], Callable[[], Any] | None]:
    """``(process, close)`` for a ``module:name`` or ``file.py:name`` target."""
    module, sep, name = target.rpartition(":")
    if not sep or not module or not name:
        raise HookError(f"hook {target!r}: expected module:function or path/to/file.py:function")
    obj = getattr(_import(module), name, None)
    if obj is None:
        raise HookError(f"hook {target!r}: {module} has no {name!r}")
    if inspect.isclass(obj):
        try:
            obj = obj()
        except Exception as e:
            raise HookError(f"hook {target!r}: {name}() failed: {type(e).__name__}: {e}") from None
        process = getattr(obj, "process", None)
        if not callable(process):
            raise HookError(f"hook {target!r}: class {name} has no process(result) method")
        close = getattr(obj, "close", None)
        return process, close if callable(close) else None
    if not callable(obj):
        raise HookError(f"hook {target!r}: {name} is not callable")
    return obj, None


class HookRunner:
    """Runs a hook on every result, timing it and containing its failures."""

    def __init__(self, target: str, budget_ms: float, disable_after: int) -> None:
        self.target = target
        self.budget_ms = budget_ms
        self.disable_after = disable_after
        self._process, self._close = load_hook(target)
        self.times = LatencyHistogram()
        self.window = LatencyHistogram()  # since the last status line
        self.calls = 0
        self.overruns = 0
        self.errors = 0
        self.consecutive_errors = 0
        self.last_error: str | None = None
        self.disabled = False

    def __call__(self, result: Result) -> None:
        if self.disabled:
            return
        t0 = time.perf_counter_ns()
        try:
            self._process(result)
            self.consecutive_errors = 0
        except (Exception, SystemExit) as e:  # the hook's failure is reported, never the pipeline's
            self.errors += 1
            self.consecutive_errors += 1
            self.last_error = f"{type(e).__name__}: {e}".splitlines()[0][:200]
            if self.disable_after and self.consecutive_errors >= self.disable_after:
                self.disabled = True
        ms = (time.perf_counter_ns() - t0) / 1e6
        self.calls += 1
        self.times.add(ms)
        self.window.add(ms)
        if ms > self.budget_ms:
            self.overruns += 1

    def close(self) -> None:
        if self._close is not None:
            try:
                self._close()
            except Exception as e:
                self.errors += 1
                self.last_error = f"close(): {type(e).__name__}: {e}".splitlines()[0][:200]

    def describe(self) -> dict:
        """For ``meta.hook``: plain types only."""
        return {
            "target": self.target, "budget_ms": self.budget_ms, "calls": self.calls,
            "time_ms": self.times.summary(), "overruns": self.overruns, "errors": self.errors,
            "last_error": self.last_error, "disabled": self.disabled, "disable_after": self.disable_after,
        }

    def status(self) -> str:
        """A short piece of the live status line; the window restarts with each call."""
        p99 = self.window.percentile(99)
        self.window = LatencyHistogram()
        text = f"hook p99 {'-' if p99 is None else f'{p99:.2f}'} ms, {self.overruns} over {self.budget_ms:g} ms"
        if self.errors:
            text += f", {self.errors} errors (last: {self.last_error[:60]})"
        if self.disabled:
            text += f", DISABLED after {self.disable_after} errors in a row"
        return text
