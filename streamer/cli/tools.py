"""Tool commands: benchmark the pipeline, track a recorded video, simulate a session, report a
recording. Each imports its tool only when it runs."""
from __future__ import annotations

import json

import click

from facestream.engines.registry import HELP as ENGINE_HELP
from facestream.streamer.cli.common import MODEL_HELP, StatusLine, StopFlag, fail, guarded, overrides, parse_bbox, say
from facestream.streamer.config import load_config


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML settings file (its camera is replaced by the synthetic one).")
@click.option("--frames", type=click.IntRange(min=1), default=1000, show_default=True, help="Frames to process.")
@click.option("--fps", type=click.FloatRange(min=0), default=500.0, show_default=True, help="Synthetic camera frame rate (0 = as fast as it can write).")
@click.option("--loop", type=click.IntRange(min=0, max=10000), default=200, show_default=True, help="Frames drawn once and replayed (0 = draw every frame, which costs the capture process ~3 ms each).")
@click.option("--cameras", type=click.IntRange(min=1, max=16), default=1, show_default=True, help="Synthetic cameras at once (one tracker batches them).")
@click.option("--engine", help=ENGINE_HELP)
@click.option("--model", help=MODEL_HELP)
@click.option("--threads", type=int, help="CPU inference threads (0 = one per core, at most 4).")
@click.option("--policy", help="latest | every.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results to this JSON file ('-' = stdout).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Plot the latency distribution to this PNG or SVG file.")
@click.option("--facemap/--no-facemap", default=True, show_default=True, help="Also time Facemap itself on the same frames, where it is installed (FACEMAP_PYTHON).")
@click.option("--soak", type=click.FloatRange(min=0, min_open=True), help="Run for this many minutes instead of --frames; the JSON's over_time shows latency and memory over time.")
@click.option("--interval", type=click.FloatRange(min=1), default=60.0, show_default=True, help="Seconds per row of over_time (latency percentiles and memory).")
@click.option("--browser", metavar="PATH", help="Also run the monitor, its page open in this browser (headless, e.g. /usr/bin/chromium) for the whole run; CPU per process then shows 'monitor' and 'browser'.")
@click.option("--alternate", type=click.FloatRange(min=1), metavar="SECONDS", help="With --browser: close and open the page in turn, measuring SECONDS in each state, and compare frames/s with and without it (the JSON's monitor.page_cost).")
@click.option("--competing", type=click.IntRange(min=0, max=64), default=0, show_default=True, help="Busy processes (one core's work each) beside the pipeline for the whole run: a rig PC running other software.")
def bench(config_path, frames, fps, loop, cameras, json_path, plot_path, facemap, soak, interval, browser, alternate, competing, **flags) -> None:
    """Measure the real pipeline: frames/s, capture-to-subscriber latency, stages, drops, CPU."""

    def body() -> None:
        from facestream.streamer.tools.bench import plot_latency, run_bench, summary_text

        if alternate and not browser:
            fail("--alternate needs --browser: the page to open and close")
        run = {"frames": 0, "duration": soak * 60} if soak else {"frames": frames}
        bench_camera = {
            "camera": {"spec": ["synthetic"] * cameras, "names": [], "loop": loop},
            "record": {"path": ""},
            "stream": {"curve_secret": "", "curve_clients": ""},  # its own subscriber has no keys: plain publishing
            "run": run,
        }
        given = overrides(fps=fps, **flags)
        for section, values in bench_camera.items():
            given[section] = {**given.get(section, {}), **values}
        cfg = load_config(config_path, given)
        status = StatusLine()
        try:
            result, latencies = run_bench(cfg, on_status=status, should_stop=StopFlag(), facemap=facemap, interval_s=interval,
                                          browser=browser, alternate_s=alternate, competing=competing)
        finally:
            status.end()
        click.echo(summary_text(result))
        text = json.dumps(result, indent=2)
        if json_path == "-":
            click.echo(text)
        elif json_path:
            with open(json_path, "w") as f:
                f.write(text + "\n")
        if plot_path and latencies:
            plot_latency(latencies, result, plot_path)

    guarded(body)


@click.command()
@click.argument("video", type=click.Path(dir_okay=False))
@click.option("--model", help=MODEL_HELP)
@click.option("--bbox", help="Crop ROW1,ROW2,COL1,COL2 (Facemap's convention).")
@click.option("--engine", default="onnx", show_default=True, help=ENGINE_HELP + " Default onnx: fp32, Facemap's own numbers.")
@click.option("--out", type=click.Path(dir_okay=False), help="Keypoints file (default: <video stem>_FacemapPose.h5 beside the video).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Frames per network call.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True, help="CPU inference threads (0 = one per core, at most 4).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def track(video, model, bbox, engine, out, batch, threads, quiet) -> None:
    """Track a recorded video offline into Facemap's keypoints file (h5)."""

    def body() -> None:
        from facestream.streamer.tools.track import track_video

        crop = parse_bbox(bbox)
        result = track_video(
            video, out=out, model=model, bbox=None if crop is None else tuple(crop), engine=engine,
            batch=batch, threads=threads, progress=not quiet,
        )
        say(f"{result.frames} frames in {result.seconds:.1f} s ({result.fps:.1f} frames/s) -> {result.path}")

    guarded(body)


@click.command("track-batch")
@click.argument("videos", nargs=-1, required=True)
@click.option("--out-dir", type=click.Path(file_okay=False), help="Folder for the keypoints files and the summary (default: each file beside its video, the summary here).")
@click.option("--scheduler", metavar="ADDRESS", help="A running Dask scheduler (tcp://host:8786); default: a local cluster of this machine's cores.")
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes of the local cluster (default: cores / threads).")
@click.option("--model", help=MODEL_HELP)
@click.option("--bbox", help="Crop ROW1,ROW2,COL1,COL2 (Facemap's convention).")
@click.option("--engine", default="onnx", show_default=True, help=ENGINE_HELP + " Default onnx: fp32, Facemap's own numbers.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Frames per network call.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True, help="CPU inference threads per worker (0 = cores / workers on a local cluster).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def track_batch(videos, out_dir, scheduler, workers, model, bbox, engine, batch, threads, quiet) -> None:
    """Track many videos (files, folders, globs) on Dask, one task per video, as `track` would;
    finished ones are skipped, the summary is track_batch_summary.tsv."""

    def body() -> None:
        from facestream.streamer.tools.track_batch import BatchError, TrackOptions, final_line, run_batch

        crop = parse_bbox(bbox)
        options = TrackOptions(model, None if crop is None else tuple(crop), engine, batch, threads)
        try:
            result = run_batch(videos, out_dir, options, scheduler=scheduler, workers=workers, progress=not quiet, say=say)
        except BatchError as e:
            fail(str(e))
        except KeyboardInterrupt:
            fail("interrupted: finished videos are kept, the summary lists the rest as not run; a rerun goes on with them", 130)
        say(final_line(result))
        if result.failed:
            fail(f"{result.failed} of {len(result.results)} videos failed (see {result.summary})")

    guarded(body)


@click.command()
@click.option("--frames", type=click.IntRange(min=1), required=True, help="Frames to render.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Folder to write into (created if missing).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="The animal, its look and its behaviour.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=50.0, show_default=True, help="Nominal frame rate: the timestamps and the speed of the behaviour.")
@click.option("--width", type=click.IntRange(min=64), default=640, show_default=True, help="Frame width.")
@click.option("--height", type=click.IntRange(min=48), default=480, show_default=True, help="Frame height.")
@click.option("--neurons", type=click.IntRange(min=0), default=1000, show_default=True, help="Synthetic neurons driven by the behaviour (0 = no neural files).")
@click.option("--neural-rate", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True, help="Their sampling rate in Hz (the neural rig's clock is the camera's).")
@click.option("--population", type=click.Choice(["default", "heldout"]), default="default", show_default=True, help="The neurons' construction: the default, or the differently built one encoders are evaluated on (docs/encoder.md).")
@click.option("--no-video", is_flag=True, help="Write the keypoints, latents and neurons without rendering frames (much faster).")
@click.option("--motion-svd", "motion_components", type=click.IntRange(min=0, max=1000), default=50, show_default=True, help="Components of Facemap's motion SVD written with the video, as `run` computes it (0 = none; not with --no-video).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def simulate(frames, out_dir, seed, fps, width, height, neurons, neural_rate, population, no_video, motion_components,
             quiet) -> None:
    """Write a synthetic session: video, true keypoints (Facemap's h5), latent behaviour and
    the activity of a neural population driven by it (neural.npy, neural_t_ns.npy)."""

    def body() -> None:
        from facestream.streamer.tools.simulate import write_session

        session = write_session(
            out_dir, frames, seed=seed, fps=fps, width=width, height=height, neurons=neurons,
            neural_rate=neural_rate, population=population, video=not no_video, progress=not quiet,
            motion_components=motion_components,
        )
        neural = f", {session.neural} ({session.neurons} {population} neurons at {neural_rate:g} Hz)" if session.neural else ""
        video = f"{session.video}, " if session.video else ""
        motion = f" with {session.motion_svd} motion SVD components" if session.motion_svd else ""
        say(f"{session.frames} frames -> {video}{session.pose}{motion}{neural}")

    guarded(body)


@click.command()
@click.argument("recording", type=click.Path(dir_okay=False))
@click.option("--out", "-o", type=click.Path(dir_okay=False), help="Image (.png, .svg, .pdf) or page (.html); default: <recording>_report.png beside it.")
def report(recording, out) -> None:
    """Plot a recording's keypoints, likelihoods, latency and drops to an image or a web page."""

    def body() -> None:
        from facestream.streamer.tools.report import write_report

        say(f"report -> {write_report(recording, out)}")

    guarded(body)


@click.command(name="export-nwb", epilog="\b\n--metadata FILE (TOML):\n" + "\n".join(
    ["  [session]", '  description = "..."       # required', '  experimenter = ["Doe, Jane"]',
     '  start = "2026-12-05T09:30:00+01:00"', "  [subject]", '  id = "m1"                  # required',
     '  species = "Mus musculus"', '  sex = "F"', '  age = "P90D"',
     "  also: [session] id, lab, institution, identifier, keywords;",
     "  [subject] date_of_birth, strain, genotype, description"]))
@click.argument("recording", type=click.Path(dir_okay=False))
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True, help="NWB file to write (its folder must exist).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--metadata", "metadata_path", type=click.Path(dir_okay=False), help="TOML file of the session's metadata ([session], [subject]); the options below override it.")
@click.option("--session-description", help="What the session was (required by NWB).")
@click.option("--subject-id", help="The animal's id (required).")
@click.option("--species", help="Latin binomial (default: Mus musculus).")
@click.option("--sex", type=click.Choice(["M", "F", "U", "O"]), help="M, F, U (unknown) or O (other).")
@click.option("--age", help="ISO 8601 duration, e.g. P90D.")
@click.option("--date-of-birth", help="ISO 8601 date, e.g. 2026-09-06.")
@click.option("--strain", help="e.g. C57BL/6J.")
@click.option("--experimenter", multiple=True, help="Repeat for several (\"Last, First\").")
@click.option("--lab", help="Lab name.")
@click.option("--institution", help="Institution name.")
@click.option("--session-id", help="The lab's id of the session.")
@click.option("--identifier", help="The file's unique identifier (default: a new UUID).")
@click.option("--session-start", help="ISO 8601 time, with its time zone, of the first frame: required for a tracked video (no wall clock in the file); for a live recording it replaces the recorded clock.")
@click.option("--rate", type=float, help="Frames/s, for a file without timestamps: rows are timed by frame id / rate.")
def export_nwb(recording, out, overwrite, metadata_path, rate, **given) -> None:
    """Export a recording (or a tracked video's keypoints) to NWB with ndx-pose, for DANDI."""

    def body() -> None:
        try:
            from facestream.streamer.tools.export_nwb import ExportError, SessionInfo, load_metadata
            from facestream.streamer.tools.export_nwb import export_nwb as export
        except ImportError as e:
            fail(f"export-nwb needs pynwb and ndx-pose: pip install 'facestream[nwb]' ({e})")
        try:
            info = (load_metadata(metadata_path) if metadata_path else SessionInfo()).merged(**given)
            if not info.species:
                info.species = "Mus musculus"
            result = export(recording, out, info, overwrite=overwrite, rate=rate)
        except ExportError as e:
            fail(str(e))
        neural = f", {result.neural} columns of predicted activity" if result.neural else ""
        say(f"{result.frames} frames x {result.bodyparts} bodyparts{neural}, {result.duration_s:.2f} s from "
            f"{result.session_start.isoformat()} -> {result.path}")

    guarded(body)


@click.command("pupil-error")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML settings file: its [pupil] settings are measured.")
@click.option("--frames", type=click.IntRange(min=1), default=400, show_default=True, help="Open-eyed frames to measure.")
@click.option("--seeds", type=click.IntRange(min=1, max=1000), default=20, show_default=True, help="Held-out synthetic faces they come from.")
@click.option("--engine", help=ENGINE_HELP)
@click.option("--model", help=MODEL_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the results on stdout.")
def pupil_error(config_path, frames, seeds, engine, model, as_json) -> None:
    """Measure the live pupil against the synthetic face's true pupil: area and centre error,
    from tracked and from true eye keypoints, on held-out faces."""

    def body() -> None:
        from facestream.streamer.tools.pupil_error import measure, summary_text

        cfg = load_config(config_path, overrides(engine=engine, model=model))
        result = measure(cfg.pupil, frames=frames, seeds=seeds, engine=cfg.tracker.engine, model=cfg.tracker.model or None)
        say(summary_text(result))
        if as_json:
            click.echo(json.dumps(result))

    guarded(body)


COMMANDS = (bench, track, track_batch, simulate, report, export_nwb, pupil_error)
