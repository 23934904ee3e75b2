"""The live commands: run the pipeline, listen to it, watch it, secure it, find cameras."""
from __future__ import annotations

import json
import threading
import time

import click

from facestream.engines.registry import HELP as ENGINE_HELP
from facestream.streamer.cli.common import (
    MODEL_HELP,
    DEFAULT_ENDPOINT,
    StatusLine,
    StopFlag,
    curve_options,
    fail,
    guarded,
    overrides,
    parse_bbox,
    say,
)
from facestream.streamer.config import load_config
from facestream.streamer.endpoints import is_open_to_the_network

_pipeline_options = [
    click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML settings file (see configs/default.toml)."),
    click.option("--camera", multiple=True, help="Frame source: synthetic | video:PATH | pylon[:SERIAL] | webcam:INDEX (see `facestream cameras`); repeat for several cameras."),
    click.option("--realtime/--unpaced", default=None, help="Video files: at the file's frame rate (default) or as fast as they decode."),
    click.option("--fps", type=float, help="Synthetic camera frame rate (0 = as fast as possible)."),
    click.option("--seed", type=int, help="Synthetic camera seed."),
    click.option("--engine", help=ENGINE_HELP),
    click.option("--model", help=MODEL_HELP),
    click.option("--bbox", help="Crop ROW1,ROW2,COL1,COL2 (Facemap's convention)."),
    click.option("--threads", type=int, help="CPU inference threads (0 = one per core, at most 4)."),
    click.option("--encoder", help="Streaming encoder file (.npz); default: the bundled encoder."),
    click.option("--publish", help=f"ZeroMQ endpoint to bind (default {DEFAULT_ENDPOINT})."),
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


@click.command()
@pipeline_options
@click.option("--json", "as_json", is_flag=True, help="Print the run's summary as JSON on stdout at the end.")
@click.option("--quiet", is_flag=True, help="No live status line.")
@click.option("--monitor/--no-monitor", default=None, help="Serve a live web page of the run (docs/monitor.md).")
@click.option("--monitor-port", type=click.IntRange(0, 65535), help="Port of that page (default 8765, 0 = any free port); implies --monitor.")
def run(config_path, bbox, as_json, quiet, **flags) -> None:
    """Run the live pipeline until Ctrl-C (or --frames / --duration)."""

    def body() -> None:
        from facestream.streamer.pipeline import Pipeline, summary_lines

        if flags["monitor_port"] is not None and flags["monitor"] is None:
            flags["monitor"] = True
        given = overrides(bbox=parse_bbox(bbox), **flags)
        if quiet:
            given.setdefault("run", {})["status_interval"] = 0.0
        cfg = load_config(config_path, given)
        if is_open_to_the_network(cfg.stream.publish) and not cfg.stream.curve_secret:
            say(f"warning: {cfg.stream.publish} publishes on the network unencrypted: anyone who can reach this "
                "machine can read the stream ([stream] curve_secret and curve_clients encrypt it and name who may)")
        stop = StopFlag()
        status = StatusLine()
        # a first run with a model and camera builds the tracker's engine: say so, on a terminal
        notice = threading.Timer(STARTING_NOTICE_S, status, (STARTING_NOTICE,))
        if status.tty and not quiet:
            notice.start()
        try:
            pipeline = Pipeline(cfg, on_status=status)
        finally:
            notice.cancel()
        say(f"{' + '.join(f'{n} = {s}' for n, s in zip(pipeline.names, pipeline.specs))} -> "
            f"{pipeline.tracker.describe()['engine']} tracker -> publishing on {cfg.stream.publish} (Ctrl-C stops)")
        try:
            summary = pipeline.run(stop)
        finally:
            status.end()
        for line in summary_lines(pipeline.report()):
            say(line)
        if as_json:
            click.echo(json.dumps(summary))

    guarded(body)


STARTING_NOTICE_S = 1.0
STARTING_NOTICE = ("starting: loading the tracker (the first run with a model and camera builds its engine and "
                   "caches it, about a minute; Ctrl-C stops once it is built)")


@click.command()
@click.argument("endpoint", default=DEFAULT_ENDPOINT)
@click.option("--count", type=click.IntRange(min=1), help="Exit after N frame messages.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message (with its topic).")
@click.option("--topic", type=click.Choice(["all", "frame", "meta"]), default="all", show_default=True)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Exit with an error if nothing arrives for S seconds.")
@curve_options
def listen(endpoint, count, as_json, topic, timeout, curve_server, curve_key) -> None:
    """Print what a running pipeline publishes."""

    def body() -> None:
        from facestream.streamer.client import Subscriber

        topics = ("frame", "meta") if topic == "all" else (topic,)
        stop = StopFlag()
        frames = 0
        with Subscriber(endpoint, topics=topics, curve_server=curve_server, curve_key=curve_key) as sub:
            last = time.monotonic()
            while not stop():
                msg = sub.recv(timeout=0.1)
                if msg is None:
                    if timeout and time.monotonic() - last > timeout:
                        hint = " (a CURVE publisher sends nothing to a client whose public key is not in its clients folder)"
                        fail(f"no message from {endpoint} for {timeout:g} s" + (hint if curve_key else ""))
                    continue
                last = time.monotonic()
                click.echo(json.dumps({"topic": msg.topic, **msg.data}) if as_json else msg.line())
                if msg.topic == "frame":
                    frames += 1
                    if count and frames >= count:
                        break
            if sub.lost:
                say(f"this subscriber lost {sub.lost} frame messages (seq gaps)")

    guarded(body)


STARTING_NOTICE_S = 1.0
STARTING_NOTICE = ("starting: loading the tracker (the first run with a model and camera builds its engine and "
                   "caches it, about a minute; Ctrl-C stops once it is built)")


@click.command()
@click.argument("endpoint", default=DEFAULT_ENDPOINT)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve the page on (0.0.0.0 = every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port of the page (0 = any free port).")
@curve_options
def monitor(endpoint, host, port, curve_server, curve_key) -> None:
    """Serve a live web page of a running pipeline: video, keypoints, traces, health."""

    def body() -> None:
        from facestream.streamer.monitor import serve

        serve(endpoint, host, port, StopFlag(), announce=lambda url: say(f"monitor of {endpoint} on {url} (Ctrl-C stops)"),
              curve_server=curve_server, curve_key=curve_key)

    guarded(body)


@click.command()
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
                say(f"{secret}: the publisher's secret key; stays on the rig ([stream] curve_secret)")
                say(f"{public}: its public key, for every subscriber (--curve-server)")
            else:
                say(f"{public}: a subscriber's public key; into the publisher's clients folder ([stream] curve_clients)")
                say(f"{secret}: its secret key; with that subscriber only (--curve-key)")

    guarded(body)


@click.command()
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

    guarded(body)


COMMANDS = (run, listen, monitor, keys, cameras)
