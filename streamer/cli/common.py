"""What every command shares: one-line errors and exit codes, Ctrl-C, the status line, and the
flags that become settings."""
from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any, Callable

import click

from facestream.streamer.config import ConfigError

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
MODEL_HELP = ("Facemap model state file (*.pt) or folder, facemap (Facemap's base model, downloaded on first use), "
              "a student file (*.npz, from facestream distill) or student (the bundled student); "
              "default: the bundled model.")


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors whose message is meant for the user: one line, no traceback."""
    from facestream.camera_adapters.base import CameraError
    from facestream.engines.encoder import EncoderFileError
    from facestream.engines.model_files import ModelFileError
    from facestream.engines.onnx_engine import ExportError
    from facestream.engines.training.encoder_training import EncoderTrainingError
    from facestream.engines.tracker import TrackerError
    from facestream.streamer.curve import CurveError
    from facestream.streamer.endpoints import EndpointError
    from facestream.streamer.hooks import HookError
    from facestream.streamer.pipeline import PipelineError
    from facestream.streamer.protocol import ProtocolError
    from facestream.streamer.publisher import PublishError
    from facestream.streamer.recorder import RecordingError
    from facestream.streamer.ringbuffer import RingBufferError
    from facestream.streamer.tools.report import ReportError
    from facestream.streamer.video_recorder import VideoRecordingError

    return (ConfigError, CameraError, EncoderFileError, EncoderTrainingError, ModelFileError, ExportError, TrackerError, HookError,
            CurveError, EndpointError, PipelineError, ProtocolError, PublishError, RecordingError, RingBufferError, ReportError,
            VideoRecordingError, OSError)


def fail(message: str, code: int = 1) -> None:
    click.echo(f"facestream: error: {message}", err=True)
    sys.exit(code)


def say(message: str) -> None:
    """A line for the person at the terminal, on stderr (stdout stays for data)."""
    click.echo(f"facestream: {message}", err=True)


def guarded(fn: Callable[[], Any]) -> Any:
    """Run a command body, turning any error into one line on stderr and a non-zero exit."""
    try:
        return fn()
    except SystemExit:  # an exit already decided: not worth importing every error class to match it
        raise
    except ConfigError as e:
        fail(str(e), 2)
    except _user_errors() as e:
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    except Exception as e:  # a bug: still one line, the traceback on request
        if os.environ.get("FACESTREAM_DEBUG"):
            raise
        fail(f"internal error: {type(e).__name__}: {e} (set FACESTREAM_DEBUG=1 for the traceback)")


class StopFlag:
    """Set by the first Ctrl-C or SIGTERM; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.set = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, _frame) -> None:
        self.set = True
        signal.signal(signum, signal.SIG_DFL if signum == signal.SIGTERM else signal.default_int_handler)

    def __call__(self) -> bool:
        return self.set


class StatusLine:
    """A live line on a terminal; a plain line every 10 s when stderr is a file or a pipe."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self._next = 0.0

    def __call__(self, line: str) -> None:
        if self.tty:
            sys.stderr.write("\r\x1b[K" + line)
            sys.stderr.flush()
        elif time.monotonic() >= self._next:
            sys.stderr.write(line + "\n")
            self._next = time.monotonic() + 10.0

    def end(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def parse_bbox(text: str | None) -> list[int] | None:
    """``--bbox ROW1,ROW2,COL1,COL2`` as integers (their meaning is checked where they are used)."""
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"--bbox {text!r}: expected four integers ROW1,ROW2,COL1,COL2") from None


_FLAG_SETTINGS = {
    "camera": ("camera", "spec"), "fps": ("camera", "fps"), "seed": ("camera", "seed"),
    "engine": ("tracker", "engine"), "model": ("tracker", "model"), "bbox": ("tracker", "bbox"),
    "threads": ("tracker", "threads"), "encoder": ("encoder", "model"),
    "publish": ("stream", "publish"), "policy": ("stream", "policy"),
    "wait_subscribers": ("stream", "wait_subscribers"),
    "encoding": ("stream", "encoding"), "predict_ms": ("stream", "predict_ms"), "hook": ("hook", "target"),
    "frames": ("run", "frames"), "duration": ("run", "duration"),
    "record": ("record", "path"), "record_video": ("record", "video"), "realtime": ("camera", "realtime"),
    "monitor": ("monitor", "enabled"), "monitor_port": ("monitor", "port"),
}


def overrides(**flags) -> dict:
    """Command-line flags as settings overrides ({section: {key: value}}), skipping unset flags."""
    out: dict[str, dict] = {}
    for flag, value in flags.items():
        if value is not None and value != ():  # () = a repeatable flag not given
            section, key = _FLAG_SETTINGS[flag]
            out.setdefault(section, {})[key] = list(value) if isinstance(value, tuple) else value
    return out


def curve_options(fn):
    """--curve-server and --curve-key: subscribe to a publisher with CURVE keys."""
    fn = click.option("--curve-key", type=click.Path(dir_okay=False), help="CURVE: this subscriber's secret key file (NAME.key_secret).")(fn)
    return click.option("--curve-server", type=click.Path(dir_okay=False), help="CURVE: the publisher's public key file (server.key).")(fn)
