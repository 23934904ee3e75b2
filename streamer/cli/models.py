"""Model and data commands: fetch, list, build, train and measure the tracker and the encoder."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from facestream.engines.registry import EXPORTABLE
from facestream.engines.registry import HELP as ENGINE_HELP
from facestream.streamer.cli.common import MODEL_HELP, StopFlag, fail, guarded, parse_bbox, say
from facestream.streamer.config import ConfigError


@click.command("fetch-models")
@click.option("--dest", type=click.Path(file_okay=False), help="Folder for the two files (default ~/.facemap/models, where Facemap looks).")
@click.option("--url-state", help="Address of the state file (default: $FACESTREAM_FACEMAP_STATE_URL, else Facemap's base model).")
@click.option("--url-params", help="Address of the params file (default: $FACESTREAM_FACEMAP_PARAMS_URL, else Facemap's base model).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True, help="Seconds to wait for the server before an attempt fails.")
@click.option("--retries", type=click.IntRange(min=0), default=3, show_default=True, help="Further attempts per file after a lost connection, timeout or server error.")
def fetch_models(dest, url_state, url_params, timeout, retries) -> None:
    """Download Facemap's base tracker model and check that it loads."""

    def body() -> None:
        from facestream.engines.fetch import fetch_models as fetch

        model = fetch(dest, url_state, url_params, timeout=timeout, retries=retries)
        say(f"Facemap model in {model.state_path.parent} (sha256 {model.sha256[:12]}, channels {list(model.channels)})")

    guarded(body)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def models(as_json) -> None:
    """List the tracker models --model can name: the bundled default and ~/.facemap/models/."""

    def body() -> None:
        from facestream.engines.model_files import available_models

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
                if entry["kind"] == "student":
                    click.echo(f"{mark} {entry['name']} (student of {entry['teacher_sha256'][:12]}, {entry['sha256']})  {entry['state']}")
                    continue
                click.echo(f"{mark} {entry['name']} ({state}, {entry['sha256']})  {entry['state']}  params {entry['params']}")
        click.echo("(* = the default)")

    guarded(body)


@click.command("export")
@click.option("--engine", type=click.Choice(EXPORTABLE), default="onnx-int8", show_default=True, help="What to build.")
@click.option("--model", help=MODEL_HELP)
@click.option("--calibration", type=click.Path(dir_okay=False), help="int8: a video of your rig whose frames calibrate it (default: the synthetic face).")
@click.option("--bbox", help="int8: the crop ROW1,ROW2,COL1,COL2 the tracker will use (calibration sees what the tracker sees).")
@click.option("--out", type=click.Path(dir_okay=False), help="Also copy the built file here (an .onnx runs in any ONNX runtime).")
def export(engine, model, calibration, bbox, out) -> None:
    """Build an engine ahead of a run into the cache (~/.cache/facestream), with its progress.

    Runs find it there: a TensorRT build takes tens of seconds to minutes, an int8 calibration a
    few seconds; both are cached by model, calibration, runtime version (and GPU for TensorRT).
    """

    def body() -> None:
        import shutil

        from facestream.camera_adapters.registry import default_calibration
        from facestream.engines.model_files import load_model
        from facestream.engines.preprocess import BboxError, check_bbox
        from facestream.engines.quantize import VideoCalibration
        from facestream.engines.registry import ENGINES, BuildOptions

        kind = ENGINES[engine]
        missing = kind.missing()
        if missing is not None:
            fail(f"cannot build a {kind.runtime} engine here: {engine} {missing}")
        try:
            crop = check_bbox(parse_bbox(bbox))
        except BboxError as e:
            raise ConfigError(f"--bbox: {e}") from None
        source = VideoCalibration(Path(calibration)) if calibration else default_calibration()
        if kind.calibrated:
            say(f"{engine}, calibrated on {calibration or 'the synthetic face'}")
        path = kind.export(load_model(model), BuildOptions(threads=0, bbox=crop, calibration=source), _BuildProgress())
        click.echo(str(path))
        if out:
            shutil.copyfile(path, out)

    guarded(body)


class _BuildProgress:
    """Build phases as progress bars on stderr (top-level phases only)."""

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


_RESUME_KEEPS = {"out", "resume", "quiet"}


@click.command("train-tracker")
@click.option("--out", type=click.Path(file_okay=False), help="Folder for the model files and the checkpoint (default ./trained_tracker).")
@click.option("--from", "init", help="Starting weights: default (the bundled model), scratch (a new network), or a Facemap model file or folder.")
@click.option("--data", multiple=True, help="synthetic (profiles of the synthetic camera's faces), views (3D heads from side, oblique-front and below cameras), or a Facemap *_Facemap_refined_data.npy; repeat to combine (default synthetic).")
@click.option("--steps", type=click.IntRange(min=1), help="Optimizer steps (instead of --epochs).")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), help="Passes over the labelled frames (default 36, Facemap's).")
@click.option("--batch", type=click.IntRange(min=1), help="Frames per step (default 8).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Peak learning rate (default 1e-4 fine-tuning, 2e-3 from scratch).")
@click.option("--schedule", help="facemap (lr /10, /25 over the last 6/36, 3/36) | cosine (warm-up, cosine decay); default by --from.")
@click.option("--seed", type=click.IntRange(min=0), help="Seed of the initial weights, batch order and augmentation (default 0).")
@click.option("--augment", type=click.FloatRange(0, 3), help="Augmentation strength, 0 = none (default 1).")
@click.option("--synthetic-seeds", type=click.IntRange(min=1), help="Distinct synthetic faces (default 512).")
@click.option("--frames-per-seed", type=click.IntRange(min=1), help="Rendered frames of each synthetic face (default 24).")
@click.option("--view-animals", type=click.IntRange(min=1), help="--data views: distinct 3D heads (default 1024).")
@click.option("--views-per-animal", type=click.IntRange(min=1), help="--data views: cameras on each head (default 4).")
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

        from facestream.engines.training.tracker_training import TrainConfig, Trainer

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
        say(f"training {cfg.name}: step {trainer.step} of {cfg.steps}, batch {cfg.batch}, lr {cfg.lr:g} ({cfg.schedule}), "
            f"{len(trainer.data)} frames, {cfg.precision}, {cfg.threads} threads (Ctrl-C saves and stops)")
        result = trainer.run(should_stop=StopFlag(), progress=not quiet)
        recent = result.losses[-100:]
        say(f"step {result.step} of {result.total_steps} ({result.seconds_per_step:.2f} s/step), "
            f"loss {sum(recent) / max(len(recent), 1):.3f} -> {result.out}")
        if not result.complete:
            fail(f"stopped at step {result.step}; `facestream train-tracker --resume --out {shlex.quote(str(result.out))}` goes on", 130)

    guarded(body)


@click.command("distill")
@click.argument("videos", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="Folder for student.npz, the checkpoint and distill_report.json (default ./student).")
@click.option("--teacher", help="The model to distil: default (the bundled model), facemap (Facemap's base model) or a Facemap model file or folder (default: default).")
@click.option("--from", "init", help="Start from this student (a student file, or student: the bundled one), distilled from the same teacher; its shape replaces --widths.")
@click.option("--widths", help="The student's four widths, e.g. 16,32,64,128 (the default).")
@click.option("--separable", is_flag=True, default=None, help="Depthwise separable blocks (fewer FLOPs; slower than full 3x3 under int8 in ONNX Runtime).")
@click.option("--full-res", type=click.IntRange(0, 1), help="Blocks at 128x128 after the stem (default 0).")
@click.option("--steps", type=click.IntRange(min=1), help="Optimizer steps (default 2400).")
@click.option("--batch", type=click.IntRange(min=1), help="Frames per step (default 16).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Peak learning rate (default 2e-3, cosine schedule).")
@click.option("--seed", type=click.IntRange(min=0), help="Seed of the initial weights, frame order and augmentation (default 0).")
@click.option("--augment", type=click.FloatRange(0, 3), help="Facemap's zoom, rotation, shift and contrast jitter, 0 = none (default 1).")
@click.option("--rig-augment", type=click.FloatRange(0, 3), help="Rig randomisation (mirroring, camera angle, light, props, sensor), 0 = none (the default: the student serves this rig).")
@click.option("--max-frames", type=click.IntRange(min=1), help="Frames read per video, spread evenly (default 1000).")
@click.option("--holdout", type=float, help="Final fraction of each video kept for evaluation (default 0.2).")
@click.option("--view-animals", type=click.IntRange(min=1), help="--data views: distinct 3D heads (default 1024).")
@click.option("--views-per-animal", type=click.IntRange(min=1), help="--data views: cameras on each head (default 4).")
@click.option("--checkpoint-every", type=click.IntRange(min=1), help="Steps between checkpoints (default 200).")
@click.option("--threads", type=click.IntRange(min=0), help="Torch threads (default: torch's).")
@click.option("--eval-video", "eval_videos", multiple=True, type=click.Path(dir_okay=False), help="Also compare student and teacher on this video (never trained on); repeat for more.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint, with its own settings.")
@click.option("--json", "as_json", is_flag=True, help="Print the evaluation as one JSON object.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def distill(videos, out, resume, eval_videos, as_json, quiet, **settings) -> None:
    """Train a small student network to give a teacher model's keypoints on your own VIDEOS.

    The teacher labels augmented frames of the videos (no human labels); the last --holdout of
    each video is never trained on. Writes student.npz (for --model), a resumable checkpoint and
    distill_report.json (distance from the teacher, likelihood agreement, GFLOP, speed) into --out.
    Ctrl-C saves and stops; --resume goes on.
    """

    def body() -> None:
        import shlex

        from facestream.engines.training.distill import DistillConfig, Distiller, report_lines

        if resume:
            ctx = click.get_current_context()
            given = [f"--{name.replace('_', '-')}" for name in (*settings, "videos")
                     if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
            if given:
                raise ConfigError(f"--resume continues the run with its own settings; drop {', '.join(given)}")
            run = Distiller.resume(out or DistillConfig.out)
        else:
            chosen = {k: v for k, v in settings.items() if v is not None}
            if "widths" in chosen:
                chosen["widths"] = _widths(chosen["widths"])
            config = DistillConfig(out=out or DistillConfig.out, videos=tuple(videos),
                                   command=shlex.join(["facestream", *sys.argv[1:]]), **chosen)
            run = Distiller.start(config, progress=not quiet)
        cfg = run.config
        say(f"distilling {run.teacher.name} into a {'-'.join(map(str, cfg.widths))} student: step {run.step} of {cfg.steps}, "
            f"batch {cfg.batch}, {len(run.data)} training frames, {sum(len(f) for f in run.held_out)} held out, "
            f"{cfg.precision}, {cfg.threads} threads (Ctrl-C saves and stops)")
        result = run.run(should_stop=StopFlag(), progress=not quiet)
        if not result.complete:
            fail(f"stopped at step {result.step}; `facestream distill --resume --out {shlex.quote(str(result.out))}` goes on", 130)
        report = run.evaluate(tuple(eval_videos))
        for line in report_lines(report):
            say(line)
        say(f"student -> {result.out / 'student.npz'} (--model {shlex.quote(str(result.out / 'student.npz'))})")
        if as_json:
            click.echo(json.dumps(report))

    guarded(body)


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(v) for v in text.split(","))
    except ValueError:
        widths = ()
    if len(widths) != 4 or min(widths) < 1:
        raise ConfigError(f"--widths must be 4 positive integers separated by commas, got {text!r}")
    return widths


@click.command("eval")
@click.option("--frames", type=click.IntRange(min=1), default=300, show_default=True, help="Held-out synthetic frames to track (without --labels).")
@click.option("--views", is_flag=True, help="Track 3D views of held-out synthetic heads (side, oblique-front, below) instead of the synthetic camera's profiles.")
@click.option("--labels", help="Score on labelled real frames instead: Facemap's *_Facemap_refined_data.npy, or a folder of png/jpg images with labels.csv (image,bodypart,x,y; x = column, y = row; a bodypart with no row is not in view).")
@click.option("--model", help=MODEL_HELP)
@click.option("--engine", default="onnx", show_default=True, help=ENGINE_HELP + " Default onnx: fp32, Facemap's own numbers.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True, help="CPU inference threads (0 = one per core, at most 4).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the results.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def eval_command(frames, views, labels, model, engine, threads, as_json, quiet) -> None:
    """Pixel error of a tracker on 640x480 synthetic faces never used in training, or with
    --labels on labelled real frames, as labelled and mirrored, beside a blind baseline."""

    def body() -> None:
        from tqdm import tqdm

        from facestream.camera_adapters.registry import default_calibration
        from facestream.engines.tracker import load_tracker
        from facestream.engines.training import evaluation

        labelled = None
        if views and labels is not None:
            raise ConfigError("--views and --labels pick different frames; give one")
        if labels is not None:  # read (and refuse bad input) before building an engine
            from facestream.engines.training.labelled_frames import load_labelled

            labelled = load_labelled(labels)
        tracker = load_tracker(engine, model, threads=threads, calibration=default_calibration())
        total = frames if labelled is None else 2 * len(labelled)
        with tqdm(total=total, desc="evaluating", unit="frame", disable=quiet, leave=False) as bar:
            progress = lambda n: bar.update(n - bar.n)  # noqa: E731
            if labelled is None:
                result = evaluation.evaluate(tracker, frames, progress=progress, views=views)
                lines = evaluation.result_lines
            else:
                result = evaluation.evaluate_labelled(tracker, labelled, progress=progress)
                lines = evaluation.labelled_result_lines
        click.echo(json.dumps(result) if as_json else "\n".join(lines(result)))

    guarded(body)


@click.command("train-encoder")
@click.argument("session_dir", required=False, type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), help="Encoder file to write (.npz), for `facestream run --encoder`; required with --inputs keypoints, refused otherwise.")
@click.option("--inputs", default="keypoints", show_default=True, help="What the models take, comma-separated: keypoints, motion_svd (the keypoints file's /facestream/motion_svd). Anything but keypoints alone is scored only, never saved: the streaming encoder takes keypoints.")
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
@click.option("--model", "model_choice", type=click.Choice(["best", "ridge", "network", "ridge+network"]), default="best", show_default=True, help="The model saved: the best on validation of the causal ridge model, the causal network and the two summed (the network fitted to the ridge model's residuals), or the one named.")
@click.option("--shuffled-control", is_flag=True, help="Also train on activity shifted half the session against the keypoints and report its test variance explained.")
@click.option("--facemap", is_flag=True, help="Also train Facemap 1.0.8's own network on the same split, in Facemap's interpreter (FACEMAP_PYTHON), and score it the same way.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the results on stdout.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_encoder(session_dir, out, inputs, keypoints, neural, neural_times, frame_times, fps, output, pcs, lookahead,
                  epochs, patience, lr, seed, threads, model_choice, shuffled_control, facemap, as_json, quiet) -> None:
    """Train causal keypoints-to-neural models on a paired recording (a ridge model, Facemap's
    network made causal, and the two summed), score them on the recorded neural samples of
    held-out blocks and save the best on validation; the symmetric Facemap-style network trains
    on the same split for comparison.

    SESSION_DIR holds one *_FacemapPose.h5, neural.npy and, if the rates differ, neural_t_ns.npy
    (as `facestream simulate` writes them); the options name files instead or as well.
    """

    def body() -> None:
        from facestream.engines.training.encoder_training import (
            EncoderTrainingError,
            TrainSettings,
            load_recording,
            session_files,
            train_encoders,
        )

        found = session_files(session_dir) if session_dir else {}
        files = {"keypoints": keypoints or found.get("keypoints"), "neural": neural or found.get("neural")}
        for what, path in files.items():
            if path is None:
                where = f"{session_dir} has none" if session_dir else "no SESSION_DIR"
                raise EncoderTrainingError(f"no {what} file: {where}; name one with --{what}")
        names = tuple(n.strip() for n in inputs.split(","))
        if names == ("keypoints",) and not out:
            raise EncoderTrainingError("--out is required: the encoder file to write")
        if names != ("keypoints",) and out:
            raise EncoderTrainingError(f"--out: models on {inputs} are scored only and never saved (the streaming "
                                       "encoder takes keypoints alone); drop --out")
        target = Path(out or ".")
        if out and not target.parent.is_dir():
            raise EncoderTrainingError(f"--out {target}: folder {target.parent} does not exist")
        if out and target.is_dir():
            raise EncoderTrainingError(f"--out {target} is a folder")
        python = None
        if facemap:
            from facestream.streamer.tools.facemap_compare import facemap_python

            python = facemap_python()
            if python is None:
                raise EncoderTrainingError("--facemap: Facemap not found (set FACEMAP_PYTHON to an interpreter that has it)")
        settings = TrainSettings(
            n_pcs=pcs, output=output, lookahead_frames=lookahead, epochs=epochs, patience=patience, lr=lr, seed=seed,
            threads=threads, model=model_choice, shuffled_control=shuffled_control, facemap_python=python, inputs=names,
        )
        recording = load_recording(
            files["keypoints"], files["neural"], neural_times or found.get("neural_times"), frame_times, fps,
            motion_svd="motion_svd" in names)
        result = train_encoders(recording, settings, progress=not quiet)
        if out:
            result.save(target)
        say(result.line() + (f" -> {target}" if out else ""))
        if as_json:
            click.echo(json.dumps({**result.summary, "out": str(target) if out else None}))

    guarded(body)


@click.command("predict-neural")
@click.argument("encoder")
@click.argument("keypoints", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(), required=True, help="Predictions to write: float32 (frames, outputs) .npy.")
@click.option("--neurons", is_flag=True, help="Every neuron of the training population in its units (an encoder of principal components applies its projection).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def predict_neural_command(encoder, keypoints, out, neurons, quiet) -> None:
    """Apply ENCODER (an .npz file, or default) to KEYPOINTS (Facemap's h5 layout, a recording
    or a tracked video) as the live pipeline would: streaming, causal, one row per frame, row t
    being what a run publishes with frame t."""

    def body() -> None:
        from facestream.streamer.tools.predict_neural import predict_neural, save_npy

        predicted, model = predict_neural(None if encoder == "default" else encoder, keypoints, neurons, progress=not quiet)
        target = save_npy(predicted, out)
        unit = "neurons" if neurons or model.meta["kind"] == "neurons" else "principal components"
        say(f"{predicted.shape[0]} frames x {predicted.shape[1]} {unit} -> {target}")

    guarded(body)


COMMANDS = (fetch_models, models, export, train_tracker, distill, eval_command, train_encoder, predict_neural_command)
