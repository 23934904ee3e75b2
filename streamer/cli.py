"""The ``facestream`` command line."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any, Callable

import click

from facestream.engines.engine_names import ENGINE_HELP
from facestream.streamer.config import ConfigError, load_config

_DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors whose message is meant for the user: one line, no traceback."""
    from facestream.camera_adapters.base import CameraError
    from facestream.engines.encoder import EncoderFileError
    from facestream.engines.encoder_training import EncoderTrainingError
    from facestream.engines.model_files import ModelFileError
    from facestream.engines.onnx_engine import ExportError
    from facestream.engines.tracker import TrackerError
    from facestream.streamer.curve import CurveError
    from facestream.streamer.hooks import HookError
    from facestream.streamer.pipeline import PipelineError
    from facestream.streamer.protocol import ProtocolError
    from facestream.streamer.publisher import PublishError
    from facestream.streamer.recorder import RecordingError
    from facestream.streamer.report import ReportError
    from facestream.streamer.ringbuffer import RingBufferError
    from facestream.streamer.video_recorder import VideoRecordingError

    return (ConfigError, CameraError, EncoderFileError, EncoderTrainingError, ModelFileError, ExportError, TrackerError, HookError,
            CurveError, PipelineError, ProtocolError, PublishError, RecordingError, RingBufferError, ReportError,
            VideoRecordingError, OSError)


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"facestream: error: {message}", err=True)
    sys.exit(code)


def _guarded(fn: Callable[[], Any]) -> Any:
    """Run a command body, turning any error into one line on stderr and a non-zero exit."""
    try:
        return fn()
    except SystemExit:  # an exit already decided: not worth importing every error class to match it
        raise
    except ConfigError as e:
        _fail(str(e), 2)
    except _user_errors() as e:
        _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    except Exception as e:  # a bug: still one line, the traceback on request
        if os.environ.get("FACESTREAM_DEBUG"):
            raise
        _fail(f"internal error: {type(e).__name__}: {e} (set FACESTREAM_DEBUG=1 for the traceback)")


class _StopFlag:
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


class _StatusLine:
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


def _parse_bbox(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"--bbox {text!r}: expected four integers ROW1,ROW2,COL1,COL2") from None
    return values


def _overrides(**flags) -> dict:
    """Command-line flags as config overrides ({section: {key: value}}), skipping unset flags."""
    where = {
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
    out: dict[str, dict] = {}
    for flag, value in flags.items():
        if value is not None and value != ():  # () = a repeatable flag not given
            section, key = where[flag]
            out.setdefault(section, {})[key] = list(value) if isinstance(value, tuple) else value
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="facestream")
def main() -> None:
    """facestream: Facemap's mouse-face tracker and neural encoder, live."""


_pipeline_options = [
    click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML settings file (see configs/default.toml)."),
    click.option("--camera", multiple=True, help="Frame source: synthetic | video:PATH | pylon[:SERIAL] | webcam:INDEX (see `facestream cameras`); repeat for several cameras."),
    click.option("--realtime/--unpaced", default=None, help="Video files: at the file's frame rate (default) or as fast as they decode."),
    click.option("--fps", type=float, help="Synthetic camera frame rate (0 = as fast as possible)."),
    click.option("--seed", type=int, help="Synthetic camera seed."),
    click.option("--engine", help=ENGINE_HELP),
    click.option("--model", help="Facemap model state file (*.pt) or folder; default: the bundled model."),
    click.option("--bbox", help="Crop ROW1,ROW2,COL1,COL2 (Facemap's convention)."),
    click.option("--threads", type=int, help="CPU inference threads (0 = one per core, at most 4)."),
    click.option("--encoder", help="Streaming encoder file (.npz); default: the bundled encoder."),
    click.option("--publish", help=f"ZeroMQ endpoint to bind (default {_DEFAULT_ENDPOINT})."),
    click.option("--policy", help="latest (newest frame, closed loop) | every (every frame while it keeps up)."),
    click.option("--wait-subscribers", type=int, help="Wait for N subscribers before the camera starts."),
    click.option("--encoding", help="Payload encoding: msgpack (default) | json (same fields, for Bonsai and other msgpack-less consumers)."),
    click.option("--predict-ms", type=float, help="Also publish keypoints and activity predicted this many ms past capture (0 = off)."),
    click.option("--hook", help="Run your code on every result in the tracker process: module:function or file.py:function (or a class)."),
    click.option("--record", type=click.Path(dir_okay=False), help="Record every published frame to this new .h5 file."),
    click.option("--record-video", type=click.Path(dir_okay=False), help="Write every camera frame to this new .mkv/.avi file (frame ids in FILE.frames.csv)."),
    click.option("--frames", type=int, help="Stop after N processed frames."),
    click.option("--duration", type=float, help="Stop after S seconds."),
]


def pipeline_options(fn):
    for option in reversed(_pipeline_options):
        fn = option(fn)
    return fn


@main.command()
@pipeline_options
@click.option("--json", "as_json", is_flag=True, help="Print the run's summary as JSON on stdout at the end.")
@click.option("--quiet", is_flag=True, help="No live status line.")
@click.option("--monitor/--no-monitor", default=None, help="Serve a live web page of the run (docs/monitor.md).")
@click.option("--monitor-port", type=click.IntRange(0, 65535), help="Port of that page (default 8765, 0 = any free port); implies --monitor.")
def run(config_path, bbox, as_json, quiet, **flags) -> None:
    """Run the live pipeline until Ctrl-C (or --frames / --duration)."""

    def body() -> None:
        from facestream.streamer.pipeline import Pipeline

        if flags["monitor_port"] is not None and flags["monitor"] is None:
            flags["monitor"] = True
        cfg = load_config(config_path, _overrides(bbox=_parse_bbox(bbox), **flags))
        if quiet:
            cfg["run"]["status_interval"] = 0.0
        stop = _StopFlag()
        status = _StatusLine()
        pipeline = Pipeline(cfg, on_status=status)
        click.echo(
            f"facestream: {' + '.join(f'{n} = {s}' for n, s in zip(pipeline.names, pipeline.specs))} -> "
            f"{pipeline.tracker.describe()['engine']} tracker -> "
            f"publishing on {cfg['stream']['publish']} (Ctrl-C stops)",
            err=True,
        )
        try:
            summary = pipeline.run(stop)
        finally:
            status.end()
        lat = summary["latency_ms"]
        fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        click.echo(
            f"facestream: {pipeline.status}: {summary['frames']} frames in {summary['seconds']:.1f} s "
            f"({summary['fps']:.1f} fps), latency p50 {fmt(lat['p50'])} ms p99 {fmt(lat['p99'])} ms "
            f"max {fmt(lat['max'])} ms, dropped {summary['dropped']['total']} {summary['dropped']}",
            err=True,
        )
        if pipeline.hook is not None:
            h = pipeline.hook.describe()
            click.echo(
                f"facestream: hook {h['target']}: {h['calls']} calls, p50 {fmt(h['time_ms']['p50'])} ms "
                f"p99 {fmt(h['time_ms']['p99'])} ms max {fmt(h['time_ms']['max'])} ms, {h['overruns']} over "
                f"{h['budget_ms']:g} ms, {h['errors']} errors" + (f" (last: {h['last_error']})" if h["errors"] else "")
                + (", disabled" if h["disabled"] else ""),
                err=True,
            )
        for stream in pipeline.streams:
            if stream.video is not None:
                v = stream.video.describe()
                click.echo(f"facestream: video {v['path']}: {v['frames']} frames, {v['dropped']} dropped by the video recorder", err=True)
        if as_json:
            click.echo(json.dumps(summary))

    _guarded(body)


def _curve_options(fn):
    """--curve-server and --curve-key: subscribe to a publisher with CURVE keys."""
    fn = click.option("--curve-key", type=click.Path(dir_okay=False), help="CURVE: this subscriber's secret key file (NAME.key_secret).")(fn)
    return click.option("--curve-server", type=click.Path(dir_okay=False), help="CURVE: the publisher's public key file (server.key).")(fn)


@main.command()
@click.argument("endpoint", default=_DEFAULT_ENDPOINT)
@click.option("--count", type=click.IntRange(min=1), help="Exit after N frame messages.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message (with its topic).")
@click.option("--topic", type=click.Choice(["all", "frame", "meta"]), default="all", show_default=True)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Exit with an error if nothing arrives for S seconds.")
@_curve_options
def listen(endpoint, count, as_json, topic, timeout, curve_server, curve_key) -> None:
    """Print what a running pipeline publishes."""

    def body() -> None:
        from facestream.streamer.client import Subscriber

        topics = ("frame", "meta") if topic == "all" else (topic,)
        stop = _StopFlag()
        frames = 0
        with Subscriber(endpoint, topics=topics, curve_server=curve_server, curve_key=curve_key) as sub:
            last = time.monotonic()
            while not stop():
                msg = sub.recv(timeout=0.1)
                if msg is None:
                    if timeout and time.monotonic() - last > timeout:
                        hint = " (a CURVE publisher sends nothing to a client whose public key is not in its clients folder)"
                        _fail(f"no message from {endpoint} for {timeout:g} s" + (hint if curve_key else ""))
                    continue
                last = time.monotonic()
                if as_json:
                    click.echo(json.dumps({"topic": msg.topic, **msg.data}))
                else:
                    click.echo(_describe(msg))
                if msg.topic == "frame":
                    frames += 1
                    if count and frames >= count:
                        break
            if sub.lost:
                click.echo(f"facestream: this subscriber lost {sub.lost} frame messages (seq gaps)", err=True)

    _guarded(body)


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML settings file (its camera is replaced by the synthetic one).")
@click.option("--frames", type=click.IntRange(min=1), default=1000, show_default=True, help="Frames to process.")
@click.option("--fps", type=click.FloatRange(min=0), default=500.0, show_default=True, help="Synthetic camera frame rate (0 = as fast as it can write).")
@click.option("--loop", type=click.IntRange(min=0, max=10000), default=200, show_default=True, help="Frames drawn once and replayed (0 = draw every frame, which costs the capture process ~1.5 ms each).")
@click.option("--cameras", type=click.IntRange(min=1, max=16), default=1, show_default=True, help="Synthetic cameras at once (one tracker batches them).")
@click.option("--engine", help=ENGINE_HELP)
@click.option("--model", help="Facemap model state file (*.pt) or folder.")
@click.option("--threads", type=int, help="CPU inference threads (0 = one per core, at most 4).")
@click.option("--policy", help="latest | every.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results to this JSON file ('-' = stdout).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Plot the latency distribution to this PNG or SVG file.")
@click.option("--facemap/--no-facemap", default=True, show_default=True, help="Also time Facemap itself on the same frames, where it is installed (FACEMAP_PYTHON).")
@click.option("--soak", type=click.FloatRange(min=0, min_open=True), help="Run for this many minutes instead of --frames; the JSON's over_time shows latency and memory over time.")
@click.option("--interval", type=click.FloatRange(min=1), default=60.0, show_default=True, help="Seconds per row of over_time (latency percentiles and memory).")
@click.option("--browser", metavar="PATH", help="Also run the monitor, its page open in this browser (headless, e.g. /usr/bin/chromium) for the whole run; CPU per process then shows 'monitor' and 'browser'.")
@click.option("--alternate", type=click.FloatRange(min=1), metavar="SECONDS", help="With --browser: close and open the page in turn, measuring SECONDS in each state, and compare frames/s with and without it (the JSON's monitor.page_cost).")
def bench(config_path, frames, fps, loop, cameras, json_path, plot_path, facemap, soak, interval, browser, alternate, **flags) -> None:
    """Measure the real pipeline: frames/s, capture-to-subscriber latency, stages, drops, CPU."""

    def body() -> None:
        from facestream.streamer.bench import plot_latency, run_bench

        if alternate and not browser:
            _fail("--alternate needs --browser: the page to open and close")
        run = {"frames": 0, "duration": soak * 60} if soak else {"frames": frames}
        cfg = load_config(config_path, _overrides(fps=fps, **flags) | {"run": run})
        cfg["camera"].update(spec=["synthetic"] * cameras, names=[], loop=loop)
        cfg["record"]["path"] = ""
        cfg["stream"].update(curve_secret="", curve_clients="")  # its own subscriber has no keys: plain publishing
        status = _StatusLine()
        try:
            result, latencies = run_bench(cfg, on_status=status, should_stop=_StopFlag(), facemap=facemap, interval_s=interval,
                                          browser=browser, alternate_s=alternate)
        finally:
            status.end()
        click.echo(_bench_summary(result))
        text = json.dumps(result, indent=2)
        if json_path == "-":
            click.echo(text)
        elif json_path:
            with open(json_path, "w") as f:
                f.write(text + "\n")
        if plot_path and latencies:
            plot_latency(latencies, result, plot_path)

    _guarded(body)


def _bench_summary(r: dict) -> str:
    fmt = lambda p: "-" if p["p50"] is None else f"p50 {p['p50']:.2f}  p99 {p['p99']:.2f}  max {p['max']:.2f} ms"  # noqa: E731
    stages = "  ".join(f"{k} {v['mean']:.2f}/{v['p99']:.2f}" for k, v in r["stages"].items())
    d = r["dropped"]
    lines = [
        f"{r['engine']} ({r['runtime']}, {r['threads']} threads; {r['engine_reason']})",
        f"  {r['fps']:.1f} frames/s over {r['frames']} frames, camera {r['camera_fps']:g} fps, policy {r['policy']}",
        f"  capture -> subscriber  {fmt(r['latency_ms'])}",
        f"  pipeline overhead (all but the tracker)  mean {r['overhead_ms']['mean']} ms, p99 {r['overhead_ms']['p99']} ms; publish -> subscriber p99 {r['transport_ms']['p99']} ms",
        f"  stages mean/p99 ms: {stages}",
        f"  dropped {d['total']} (camera {d['camera']}, overrun {d['overrun']}, skipped {d['skipped']}); subscriber lost {r['subscriber']['lost']}",
        f"  CPU %: {r['cpu_percent']}",
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


@main.command("fetch-models")
@click.option("--dest", type=click.Path(file_okay=False), help="Folder for the two files (default ~/.facemap/models, where Facemap looks).")
@click.option("--url-state", help="Address of the state file (default: Facemap's base model).")
@click.option("--url-params", help="Address of the params file (default: Facemap's base model).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True, help="Seconds to wait for the server before an attempt fails.")
@click.option("--retries", type=click.IntRange(min=0), default=3, show_default=True, help="Further attempts per file after a lost connection, timeout or server error.")
def fetch_models_command(dest, url_state, url_params, timeout, retries) -> None:
    """Download Facemap's base tracker model and check that it loads."""

    def body() -> None:
        from facestream.engines.fetch import PARAMS_URL, STATE_URL, fetch_models

        model = fetch_models(dest, url_state or STATE_URL, url_params or PARAMS_URL, timeout=timeout, retries=retries)
        click.echo(
            f"facestream: Facemap model in {model.state_path.parent} (sha256 {model.sha256[:12]}, "
            f"channels {list(model.channels)})",
            err=True,
        )

    _guarded(body)


@main.command()
@click.argument("video", type=click.Path(dir_okay=False))
@click.option("--model", help="Facemap model state file (*.pt) or folder; default: the bundled model.")
@click.option("--bbox", help="Crop ROW1,ROW2,COL1,COL2 (Facemap's convention).")
@click.option("--engine", default="onnx", show_default=True, help=ENGINE_HELP + " Default onnx: fp32, Facemap's own numbers.")
@click.option("--out", type=click.Path(dir_okay=False), help="Keypoints file (default: <video stem>_FacemapPose.h5 beside the video).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Frames per network call.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True, help="CPU inference threads (0 = one per core, at most 4).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def track(video, model, bbox, engine, out, batch, threads, quiet) -> None:
    """Track a recorded video offline into Facemap's keypoints file (h5)."""

    def body() -> None:
        from facestream.streamer.track import track_video

        crop = _parse_bbox(bbox)
        result = track_video(
            video, out=out, model=model, bbox=None if crop is None else tuple(crop), engine=engine,
            batch=batch, threads=threads, progress=not quiet,
        )
        click.echo(
            f"facestream: {result.frames} frames in {result.seconds:.1f} s ({result.fps:.1f} frames/s) -> {result.path}",
            err=True,
        )

    _guarded(body)


@main.command()
@click.option("--frames", type=click.IntRange(min=1), required=True, help="Frames to render.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Folder to write into (created if missing).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="The animal, its look and its behaviour.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=50.0, show_default=True, help="Nominal frame rate: the timestamps and the speed of the behaviour.")
@click.option("--width", type=click.IntRange(min=64), default=640, show_default=True, help="Frame width.")
@click.option("--height", type=click.IntRange(min=48), default=480, show_default=True, help="Frame height.")
@click.option("--neurons", type=click.IntRange(min=0), default=1000, show_default=True, help="Synthetic neurons driven by the behaviour (0 = no neural files).")
@click.option("--neural-rate", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True, help="Their sampling rate in Hz (the neural rig's clock is the camera's).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def simulate(frames, out_dir, seed, fps, width, height, neurons, neural_rate, quiet) -> None:
    """Write a synthetic session: video, true keypoints (Facemap's h5), latent behaviour and
    the activity of a neural population driven by it (neural.npy, neural_t_ns.npy)."""

    def body() -> None:
        from facestream.streamer.simulate import write_session

        session = write_session(
            out_dir, frames, seed=seed, fps=fps, width=width, height=height, neurons=neurons,
            neural_rate=neural_rate, progress=not quiet,
        )
        neural = f", {session.neural} ({session.neurons} neurons at {neural_rate:g} Hz)" if session.neural else ""
        click.echo(f"facestream: {session.frames} frames -> {session.video}, {session.pose}{neural}", err=True)

    _guarded(body)


_RESUME_KEEPS = {"out", "resume", "quiet"}


@main.command("train-tracker")
@click.option("--out", type=click.Path(file_okay=False), help="Folder for the model files and the checkpoint (default ./trained_tracker).")
@click.option("--from", "init", help="Starting weights: default (the bundled model), scratch (a new network), or a Facemap model file or folder.")
@click.option("--data", multiple=True, help="synthetic, or a Facemap *_Facemap_refined_data.npy; repeat to combine (default synthetic).")
@click.option("--steps", type=click.IntRange(min=1), help="Optimizer steps (instead of --epochs).")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), help="Passes over the labelled frames (default 36, Facemap's).")
@click.option("--batch", type=click.IntRange(min=1), help="Frames per step (default 8).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Peak learning rate (default 1e-4 fine-tuning, 2e-3 from scratch).")
@click.option("--schedule", help="facemap (lr /10, /25 over the last 6/36, 3/36) | cosine (warm-up, cosine decay); default by --from.")
@click.option("--seed", type=click.IntRange(min=0), help="Seed of the initial weights, batch order and augmentation (default 0).")
@click.option("--augment", type=click.FloatRange(0, 3), help="Augmentation strength, 0 = none (default 1).")
@click.option("--synthetic-seeds", type=click.IntRange(min=1), help="Distinct synthetic faces (default 512).")
@click.option("--frames-per-seed", type=click.IntRange(min=1), help="Rendered frames of each synthetic face (default 24).")
@click.option("--checkpoint-every", type=click.IntRange(min=1), help="Steps between checkpoints (default 200).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint, with its own settings.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train_tracker(out, resume, quiet, **settings) -> None:
    """Train the tracker on synthetic faces and/or Facemap's refined data (Facemap's recipe).

    Writes facemap_model_state.pt and facemap_model_params.pth (Facemap's format, usable with
    --model) and a resumable checkpoint into --out. Ctrl-C saves and stops; --resume goes on.
    """

    def body() -> None:
        import shlex

        from facestream.engines.training import TrainConfig, Trainer

        if resume:
            ctx = click.get_current_context()
            given = [f"--{name.replace('_', '-')}" for name in ctx.params
                     if name not in _RESUME_KEEPS and ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
            if given:
                raise ConfigError(f"--resume continues the run with its own settings; drop {', '.join(given)}")
            trainer = Trainer.resume(out or TrainConfig.out, progress=not quiet)
        else:
            chosen = {k: v for k, v in settings.items() if v is not None and v != ()}
            if "data" in chosen:
                chosen["data"] = tuple(chosen["data"])
            config = TrainConfig(out=out or TrainConfig.out, command=shlex.join(["facestream", *sys.argv[1:]]), **chosen)
            trainer = Trainer.start(config, progress=not quiet)
        cfg = trainer.config
        click.echo(
            f"facestream: training {cfg.name}: step {trainer.step} of {cfg.steps}, batch {cfg.batch}, lr {cfg.lr:g} "
            f"({cfg.schedule}), {len(trainer.data)} frames, {cfg.precision}, {cfg.threads} threads (Ctrl-C saves and stops)",
            err=True,
        )
        result = trainer.run(should_stop=_StopFlag(), progress=not quiet)
        recent = result.losses[-100:]
        click.echo(
            f"facestream: step {result.step} of {result.total_steps} ({result.seconds_per_step:.2f} s/step), "
            f"loss {sum(recent) / max(len(recent), 1):.3f} -> {result.out}",
            err=True,
        )
        if not result.complete:
            _fail(f"stopped at step {result.step}; `facestream train-tracker --resume --out {shlex.quote(str(result.out))}` goes on", 130)

    _guarded(body)


@main.command("eval")
@click.option("--frames", type=click.IntRange(min=1), default=300, show_default=True, help="Held-out synthetic frames to track.")
@click.option("--model", help="Facemap model state file (*.pt) or folder; default: the bundled model.")
@click.option("--engine", default="onnx", show_default=True, help=ENGINE_HELP + " Default onnx: fp32, Facemap's own numbers.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True, help="CPU inference threads (0 = one per core, at most 4).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the results.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def eval_command(frames, model, engine, threads, as_json, quiet) -> None:
    """Pixel error of a tracker on 640x480 synthetic faces never used in training."""

    def body() -> None:
        from tqdm import tqdm

        from facestream.engines.evaluation import WITHIN_PX, evaluate
        from facestream.engines.tracker import load_tracker

        tracker = load_tracker(engine, model, threads=threads)
        with tqdm(total=frames, desc="evaluating", unit="frame", disable=quiet, leave=False) as bar:
            result = evaluate(tracker, frames, progress=lambda n: bar.update(n - bar.n))
        if as_json:
            click.echo(json.dumps(result))
            return
        fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        click.echo(f"{result['model']} ({result['engine']}) on {result['frames']} held-out frames")
        click.echo(f"{'keypoint':<14}{'error px':>10}{f'<= {WITHIN_PX:g} px':>10}{'in view':>9}")
        for name, row in result["per_keypoint"].items():
            click.echo(f"{name:<14}{fmt(row['mean_px_error'], '10.2f')}{fmt(row['within_5px'], '10.1%')}{row['visible']:>9}")
        click.echo(
            f"mean {fmt(result['mean_px_error'], '.2f')} px, median {fmt(result['median_px_error'], '.2f')} px, "
            f"within {WITHIN_PX:g} px {fmt(result['within_5px'], '.1%')}; likelihood in view "
            f"{fmt(result['likelihood_visible'], '.3f')}, out of view or hidden {fmt(result['likelihood_occluded'], '.3f')}"
        )

    _guarded(body)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def models(as_json) -> None:
    """List the tracker models --model can name: the bundled default and ~/.facemap/models/."""

    def body() -> None:
        from facestream.engines.evaluation import available_models

        entries = available_models()
        if as_json:
            click.echo(json.dumps(entries))
            return
        for entry in entries:
            mark = "*" if entry["default"] else " "
            if "error" in entry:
                click.echo(f"{mark} {entry['state']}: {entry['error']}")
            else:
                state = "trained" if entry["trained"] else "untrained"
                click.echo(f"{mark} {entry['name']} ({state}, {entry['sha256']})  {entry['state']}  params {entry['params']}")
        click.echo("(* = the default)")

    _guarded(body)


@main.command()
@click.argument("endpoint", default=_DEFAULT_ENDPOINT)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve the page on (0.0.0.0 = every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port of the page (0 = any free port).")
@_curve_options
def monitor(endpoint, host, port, curve_server, curve_key) -> None:
    """Serve a live web page of a running pipeline: video, keypoints, traces, health."""

    def body() -> None:
        from facestream.streamer.monitor import serve

        serve(endpoint, host, port, _StopFlag(),
              announce=lambda url: click.echo(f"facestream: monitor of {endpoint} on {url} (Ctrl-C stops)", err=True),
              curve_server=curve_server, curve_key=curve_key)

    _guarded(body)


@main.command()
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--client", "client_name", help="Write only this client's pair, NAME.key and NAME.key_secret (the server's is left alone).")
def keys(folder, client_name) -> None:
    """Write CURVE key files that encrypt the stream and name who may subscribe (docs/protocol.md).

    Without --client: the publisher's server.key and server.key_secret and one subscriber's
    client.key and client.key_secret. Secret files are mode 0600; no file is overwritten.
    """

    def body() -> None:
        from facestream.streamer.curve import create

        for public, secret in create(folder, ["server", "client"] if client_name is None else [client_name]):
            if public.stem == "server" and client_name is None:
                click.echo(f"facestream: {secret}: the publisher's secret key; stays on the rig ([stream] curve_secret)", err=True)
                click.echo(f"facestream: {public}: its public key, for every subscriber (--curve-server)", err=True)
            else:
                click.echo(f"facestream: {public}: a subscriber's public key; into the publisher's clients folder ([stream] curve_clients)", err=True)
                click.echo(f"facestream: {secret}: its secret key; with that subscriber only (--curve-key)", err=True)

    _guarded(body)


@main.command()
@click.argument("recording", type=click.Path(dir_okay=False))
@click.option("--out", "-o", type=click.Path(dir_okay=False), help="Image (.png, .svg, .pdf) or page (.html); default: <recording>_report.png beside it.")
def report(recording, out) -> None:
    """Plot a recording's keypoints, likelihoods, latency and drops to an image or a web page."""

    def body() -> None:
        from facestream.streamer.report import write_report

        click.echo(f"facestream: report -> {write_report(recording, out)}", err=True)

    _guarded(body)


@main.command()
@click.option("--webcams", type=click.IntRange(min=0), default=8, show_default=True, help="Webcam indices to try (0 .. N-1).")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def cameras(webcams, as_json) -> None:
    """List the cameras facestream can open: Basler (pylon) and webcams, with the --camera to use."""

    def body() -> None:
        from facestream.camera_adapters.base import CameraError
        from facestream.camera_adapters.pylon import list_cameras
        from facestream.camera_adapters.webcam import list_webcams

        try:
            basler, pylon_problem = list_cameras(), None
        except CameraError as e:
            basler, pylon_problem = [], str(e)
        found = list_webcams(range(webcams))
        if as_json:
            click.echo(json.dumps({"pylon": basler, "pylon_error": pylon_problem, "webcams": found}))
            return
        click.echo("Basler cameras (pylon):")
        if pylon_problem:
            click.echo(f"  {pylon_problem}")
        for cam in basler:
            emulated = "  (emulated: PYLON_CAMEMU)" if cam["interface"] == "BaslerCamEmu" else ""
            click.echo(f"  {cam['spec']:<24}{cam['vendor']} {cam['model']}, serial {cam['serial']}, {cam['interface']}{emulated}")
        if not basler and not pylon_problem:
            click.echo("  none found")
        click.echo(f"Webcams (OpenCV, indices 0-{webcams - 1}):" if webcams else "Webcams: not probed")
        for cam in found:
            click.echo(f"  {cam['spec']:<24}{cam['width']}x{cam['height']}, {cam['fps']:g} frames/s, {cam['backend']}")
        if webcams and not found:
            click.echo("  none found")

    _guarded(body)


@main.command("train-encoder")
@click.argument("session_dir", required=False, type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Encoder file to write (.npz), for `facestream run --encoder`.")
@click.option("--keypoints", type=click.Path(dir_okay=False), help="Keypoints in Facemap's layout (*_FacemapPose.h5); default: the one in SESSION_DIR.")
@click.option("--neural", type=click.Path(dir_okay=False), help="Neural activity, neurons x samples (.npy); default: SESSION_DIR/neural.npy.")
@click.option("--neural-times", type=click.Path(dir_okay=False), help="The neural samples' times in ns on the frames' clock (.npy); default: SESSION_DIR/neural_t_ns.npy if there, else spread evenly over the frames.")
@click.option("--frame-times", type=click.Path(dir_okay=False), help="Frame times in ns (.npy); default: those recorded in the keypoints file.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), help="Frame rate, for keypoints files without frame times (frame k at k / fps).")
@click.option("--output", type=click.Choice(["pcs", "neurons"]), default="pcs", show_default=True, help="Predict the population's principal components or every neuron.")
@click.option("--pcs", type=click.IntRange(min=1), default=128, show_default=True, help="Principal components (fewer if there are fewer neurons).")
@click.option("--lookahead", type=click.IntRange(0, 100), default=0, show_default=True, help="Future frames the filter sees; each costs one frame period of latency.")
@click.option("--epochs", type=click.IntRange(min=1), default=300, show_default=True, help="Passes over the training segments, at most.")
@click.option("--patience", type=click.IntRange(min=0), default=20, show_default=True, help="Stop this many epochs after the best validation score and keep that epoch's weights (0 = run every epoch, as Facemap).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True, help="AdamW learning rate (divided by 10 at 2/3 and 5/6 of the epochs).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the initial weights and the segment order.")
@click.option("--threads", type=click.IntRange(min=0), default=1, show_default=True, help="Torch threads (0 = one per core).")
@click.option("--shuffled-control", is_flag=True, help="Also train on activity shifted half the session against the keypoints and report its test variance explained.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the results on stdout.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_encoder(session_dir, out, keypoints, neural, neural_times, frame_times, fps, output, pcs, lookahead,
                  epochs, patience, lr, seed, threads, shuffled_control, as_json, quiet) -> None:
    """Train the causal keypoints-to-neural encoder on a paired recording (Facemap's recipe),
    and the symmetric Facemap-style model on the same split for comparison.

    SESSION_DIR holds one *_FacemapPose.h5, neural.npy and, if the rates differ, neural_t_ns.npy
    (as `facestream simulate` writes them); the options name files instead or as well.
    """

    def body() -> None:
        from pathlib import Path

        from facestream.engines.encoder_training import (
            EncoderTrainingError,
            TrainSettings,
            load_recording,
            session_files,
            train_encoders,
        )

        found = session_files(session_dir) if session_dir else {}
        files = {
            "keypoints": keypoints or found.get("keypoints"),
            "neural": neural or found.get("neural"),
        }
        for what, path in files.items():
            if path is None:
                where = f"{session_dir} has none" if session_dir else "no SESSION_DIR"
                raise EncoderTrainingError(f"no {what} file: {where}; name one with --{what}")
        target = Path(out)
        if not target.parent.is_dir():
            raise EncoderTrainingError(f"--out {target}: folder {target.parent} does not exist")
        if target.is_dir():
            raise EncoderTrainingError(f"--out {target} is a folder")
        settings = TrainSettings(
            n_pcs=pcs, output=output, lookahead_frames=lookahead, epochs=epochs, patience=patience, lr=lr, seed=seed,
            threads=threads, shuffled_control=shuffled_control,
        )
        recording = load_recording(
            files["keypoints"], files["neural"], neural_times or found.get("neural_times"), frame_times, fps)
        result = train_encoders(recording, settings, progress=not quiet)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            result.save(tmp, name=target.stem)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        r = result.summary
        control = f", shuffled control {r['test_variance_explained_shuffled']:.3f}" if shuffled_control else ""
        click.echo(
            f"facestream: test variance explained {r['test_variance_explained']:.3f} causal "
            f"(look-ahead {lookahead} frames, {r['lookahead_ms']:.0f} ms), {r['test_variance_explained_noncausal']:.3f} "
            f"symmetric (+-{r['noncausal_lookahead_frames']} frames){control}; {r['n_pcs']} PCs of {r['n_neurons']} "
            f"neurons, {r['frames_train']} training / {r['frames_test']} test frames, {r['seconds']:.0f} s -> {target}",
            err=True,
        )
        if as_json:
            click.echo(json.dumps({**r, "out": str(target)}))

    _guarded(body)


@main.command("export")
@click.option("--engine", type=click.Choice(["onnx", "onnx-int8", "tensorrt", "tensorrt-int8"]), default="onnx-int8", show_default=True, help="What to build.")
@click.option("--model", help="Facemap model state file (*.pt) or folder; default: the bundled model.")
@click.option("--calibration", type=click.Path(dir_okay=False), help="int8: a video of your rig whose frames calibrate it (default: the synthetic face).")
@click.option("--bbox", help="int8: the crop ROW1,ROW2,COL1,COL2 the tracker will use (calibration sees what the tracker sees).")
@click.option("--out", type=click.Path(dir_okay=False), help="Also copy the built file here (an .onnx runs in any ONNX runtime).")
def export_command(engine, model, calibration, bbox, out) -> None:
    """Build an engine ahead of a run into the cache (~/.cache/facestream), with its progress.

    Runs find it there: a TensorRT build takes tens of seconds to minutes, an int8 calibration a
    few seconds; both are cached by model, calibration, runtime version (and GPU for TensorRT).
    """

    def body() -> None:
        import shutil

        from facestream.engines.model_files import load_model
        from facestream.engines.onnx_engine import onnx_model_path

        tracker_model = load_model(model)
        if engine == "onnx":
            path = onnx_model_path(tracker_model)
        elif engine == "onnx-int8":
            from facestream.engines.quantize import int8_model_path

            crop = _parse_bbox(bbox)
            click.echo(f"int8, calibrated on {calibration or 'the synthetic face'}", err=True)
            path = int8_model_path(tracker_model, calibration, None if crop is None else tuple(crop))
        else:
            from facestream.engines import tensorrt_engine

            missing = tensorrt_engine.available()
            if missing is not None:
                _fail(f"cannot build a TensorRT engine here: {missing}")
            path = tensorrt_engine.build_engine(tracker_model, "int8" if engine.endswith("int8") else "fp16", progress=_BuildProgress())
        click.echo(str(path))
        if out:
            shutil.copyfile(path, out)

    _guarded(body)


class _BuildProgress:
    """TensorRT build phases as progress bars on stderr (top-level phases only)."""

    def __init__(self) -> None:
        self.bars: dict = {}

    def __call__(self, phase: str, step: int, steps: int) -> None:
        from tqdm import tqdm

        bar = self.bars.get(phase)
        if bar is None:
            bar = self.bars[phase] = tqdm(total=steps, desc=phase, unit="step", leave=False)
        bar.update(step - bar.n)
        if step >= steps:
            bar.close()


def _describe(msg) -> str:
    d = msg.data
    if msg.topic == "meta":
        s = d.get("stats", {})
        lat = s.get("latency_ms", {})
        return (f"meta   status {d.get('status')}  frames {s.get('frames')}  fps {s.get('fps')}  "
                f"p50 {lat.get('p50')} ms  dropped {s.get('dropped', {}).get('total')}  policy {d.get('policy')}")
    tip = d["keypoints"][8]
    neural = " ".join(f"{v:+.3f}" for v in d["neural"][:3])
    return (f"frame  seq {d['seq']}  id {d['frame_id']}  latency {msg.latency_ms:.2f} ms  dropped {d['dropped']}  "
            f"nose(tip) ({tip[0]:.1f}, {tip[1]:.1f}) p={tip[2]:.2f}  neural[{len(d['neural'])}] {neural} ...")
if __name__ == "__main__":
    main()
