"""Track many recorded videos at once on Dask distributed: one task per video (issue 22).

Each task runs ``track.track_video`` on one video, so each output is the file ``facestream track``
writes for that video. A task is run on a worker of a Dask cluster: a ``LocalCluster`` of worker
processes sized to this machine (workers x inference threads <= cores), or an existing cluster
given by its scheduler's address (SLURM through dask-jobqueue: docs/batch.md).

Outputs. ``track_video`` writes under a temporary name (``.<output name>.<pid>.tmp`` in the
output's folder) and renames it into place, so the final file exists only once it is complete. A
task first removes the temporaries a killed earlier attempt at the same output left behind, and
the batch removes those of its outputs once every task has ended, so a worker that dies
mid-video leaves no partial file. A video is skipped when its output is there, was tracked
with the same model (sha256), engine and crop, and every frame of the video was read; an
output of a damaged video (written with the frames that could be read) is tracked again.

Failures. A video that cannot be read, or can be read only in part, fails on its own: its line
in the summary (``track_batch_summary.tsv``) says why in one line and the other videos go on.
Errors of the task's code that are not about the video are retried (``RETRIES``); a worker that
dies mid-video has its task run again on another worker by the scheduler, at most
``ALLOWED_FAILURES`` times (``distributed.scheduler.allowed-failures``) before the video is
reported as failed.
"""
from __future__ import annotations

import csv
import glob
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

SUMMARY_NAME = "track_batch_summary.tsv"
SUMMARY_COLUMNS = ("video", "output", "status", "frames", "seconds", "error")
# what Facemap's GUI offers to open, and the common containers besides
VIDEO_SUFFIXES = {".avi", ".mp4", ".mkv", ".mov", ".mj2", ".mpg", ".mpeg", ".m4v", ".wmv", ".webm"}
RETRIES = 1  # re-runs of a task whose code raised an unexpected error (not an error about its video)
ALLOWED_FAILURES = 2  # re-runs of a task whose worker died under it, before the video is reported failed


class BatchError(Exception):
    """Bad input to the batch (no videos, an output folder that cannot be written, ...); one line."""


@dataclass(frozen=True)
class TrackOptions:
    """What ``track_video`` is given for every video: as ``facestream track``."""

    model: str | None = None
    bbox: tuple[int, int, int, int] | None = None
    engine: str = "onnx"
    batch: int = 1
    threads: int = 0


@dataclass
class VideoResult:
    video: Path
    output: Path
    status: str  # done | skipped | failed | not run
    frames: int = 0
    seconds: float = 0.0  # the task's wall time: loading the model, decoding, tracking, writing
    error: str = ""


@dataclass
class BatchResult:
    results: list[VideoResult]
    summary: Path
    seconds: float  # from the first task submitted to the last ended
    workers: int
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(r.status in ("failed", "not run") for r in self.results)

    @property
    def tracked_frames(self) -> int:
        return sum(r.frames for r in self.results if r.status in ("done", "failed"))

    @property
    def tracked_videos(self) -> int:
        return sum(r.status in ("done", "failed") for r in self.results)


# ----------------------------------------------------------------------------- inputs


def find_videos(patterns: list[str] | tuple[str, ...]) -> list[Path]:
    """The videos named by files, folders (their video files, not recursing) and glob patterns
    (``**`` recurses), in the order given, each once. Files named outright are taken whatever
    their suffix; those found in a folder or by a pattern only with a video suffix."""
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        elif path.is_file():
            found.append(path)
        elif glob.has_magic(pattern):
            found += sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True)
                            if Path(p).is_file() and Path(p).suffix.lower() in VIDEO_SUFFIXES)
        else:
            raise BatchError(f"{pattern}: no such file or folder")
    seen: set[Path] = set()
    videos = []
    for video in found:
        key = video.resolve()
        if key not in seen:
            seen.add(key)
            videos.append(video)
    if not videos:
        raise BatchError(f"no videos matched {' '.join(patterns)} (video suffixes: {', '.join(sorted(VIDEO_SUFFIXES))})")
    return videos


def plan_outputs(videos: list[Path], out_dir: Path | None) -> list[Path]:
    """Each video's keypoints file: ``<stem>_FacemapPose.h5`` in ``out_dir``, else beside the video
    (as ``facestream track``). Two videos that would write the same file are an error."""
    from facestream.streamer.tools.track import default_output

    outputs = [out_dir / default_output(v).name if out_dir is not None else default_output(v) for v in videos]
    first: dict[Path, Path] = {}
    for video, out in zip(videos, outputs):
        key = out.resolve()
        if key in first:
            raise BatchError(f"{first[key]} and {video} would both write {out}; track them into different --out-dir folders")
        first[key] = video
    return outputs


def check_writable(folder: Path) -> None:
    """Create ``folder`` if missing and prove a file can be written in it; a one-line BatchError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".track_batch_probe.{os.getpid()}.tmp"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
        probe.unlink()
    except OSError as e:
        raise BatchError(f"cannot write to folder {folder}: {(e.strerror or str(e)).lower()}") from None


def local_cluster_size(workers: int | None, threads: int, cores: int | None = None) -> tuple[int, int]:
    """(worker processes, inference threads per worker) for a LocalCluster on this machine:
    workers x threads <= cores. By default one single-threaded worker per core (videos in
    parallel gain more than threads within one network call)."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if threads > cores:
        raise BatchError(f"--threads {threads} is more than this machine's {cores} cores")
    if workers is None:
        threads = threads or 1
        return cores // threads, threads
    if workers > cores:
        raise BatchError(f"--workers {workers} is more than this machine's {cores} cores")
    threads = threads or max(1, cores // workers)
    if workers * threads > cores:
        raise BatchError(f"--workers {workers} x --threads {threads} is more than this machine's {cores} cores")
    return workers, threads


# ----------------------------------------------------------------------------- outputs


def temporaries(out: Path) -> list[Path]:
    """The temporary files of ``track_video`` writing ``out`` (``.<name>.<pid>.tmp``)."""
    return [Path(p) for p in glob.glob(str(out.parent / f".{glob.escape(out.name)}.*.tmp"))]


def remove_temporaries(out: Path) -> int:
    removed = 0
    for tmp in temporaries(out):
        try:
            tmp.unlink()
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def finished(out: Path, sha256: str, options: TrackOptions) -> int | None:
    """The frames of ``out`` when it is a complete output of this model, engine and crop (the
    file's presence means it was written whole: it is renamed into place); else None."""
    import json

    import h5py

    if not out.is_file():
        return None
    try:
        with h5py.File(out, "r") as f:
            own = f["facestream"]
            attrs = {k: json.loads(v) for k, v in own.attrs.items()}
            frames = int(own["frame_id"].shape[0])
    except Exception:  # not a keypoints file of ours, or unreadable: track again
        return None
    bbox = None if options.bbox is None else list(options.bbox)
    same = (
        (attrs.get("model") or {}).get("sha256") == sha256
        and (options.engine == "auto" or attrs.get("engine") == options.engine)
        and attrs.get("bbox") == bbox
        and attrs.get("unreadable_frames") == 0
    )
    return frames if same else None


# ----------------------------------------------------------------------------- the task


def track_one(video: str, out: str, options: TrackOptions) -> dict:
    """One video, on a worker. Errors about the video (and the model, the output folder) come
    back as a failed result, not an exception, so Dask does not retry what would fail again."""
    from facestream.camera_adapters.base import CameraError
    from facestream.engines.model_files import ModelFileError
    from facestream.engines.onnx_engine import ExportError
    from facestream.engines.tracker import TrackerError
    from facestream.streamer.tools.track import IncompleteVideoError, track_video

    t0 = time.perf_counter()
    remove_temporaries(Path(out))  # of an attempt whose worker died
    try:
        result = track_video(video, out=out, model=options.model, bbox=options.bbox, engine=options.engine,
                             batch=options.batch, threads=options.threads, progress=False)
    except IncompleteVideoError as e:
        return {"status": "failed", "frames": e.result.frames, "seconds": time.perf_counter() - t0, "error": _one_line(e)}
    except (CameraError, TrackerError, ModelFileError, ExportError, OSError) as e:
        return {"status": "failed", "frames": 0, "seconds": time.perf_counter() - t0, "error": _one_line(e)}
    return {"status": "done", "frames": result.frames, "seconds": time.perf_counter() - t0, "error": ""}


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# ----------------------------------------------------------------------------- the batch


def run_batch(
    patterns: list[str] | tuple[str, ...],
    out_dir: str | Path | None = None,
    options: TrackOptions = TrackOptions(),
    scheduler: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    say=None,
) -> BatchResult:
    """Track every video of ``patterns``; write the summary; the results.

    out_dir: where the keypoints files and the summary go (default: each file beside its video,
    the summary in the current folder). scheduler: the address of a running Dask scheduler
    (``tcp://host:8786``); None starts a LocalCluster of ``workers`` processes (default: as many
    as the cores allow at ``options.threads`` threads each). Raises BatchError (one line) for bad
    input before any video is tracked."""
    from facestream.engines.model_files import load_model

    say = say or (lambda _text: None)
    videos = find_videos(patterns)
    out_path = Path(out_dir).expanduser() if out_dir is not None else None
    summary_dir = out_path if out_path is not None else Path.cwd()
    check_writable(summary_dir)
    outputs = plan_outputs(videos, out_path)
    if scheduler is not None and workers is not None:
        raise BatchError("--workers sizes a local cluster; with --scheduler the cluster's own workers are used")
    if scheduler is None:
        workers, threads = local_cluster_size(workers, options.threads)
        options = TrackOptions(options.model, options.bbox, options.engine, options.batch, threads)
    sha256 = load_model(options.model).sha256  # also: a bad model is one error, not one per video

    results = [VideoResult(v, o, "not run") for v, o in zip(videos, outputs)]
    todo = []
    for r in results:
        frames = finished(r.output, sha256, options)
        if frames is None:
            todo.append(r)
        else:
            r.status, r.frames = "skipped", frames
    skipped = len(results) - len(todo)
    batch = BatchResult(results, summary_dir / SUMMARY_NAME, 0.0, 0)
    try:
        if todo:
            if skipped:
                say(f"{skipped} of {len(results)} videos already tracked with this model: skipped")
            _run_tasks(todo, options, scheduler, workers, progress, batch)
    finally:
        for r in todo:  # temporaries of tasks killed with no attempt after them
            remove_temporaries(r.output)
        _write_summary(batch.summary, results)
    batch.counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed", "not run")}
    return batch


def _run_tasks(todo: list[VideoResult], options: TrackOptions, scheduler: str | None, workers: int | None,
               progress: bool, batch: BatchResult) -> None:
    import dask
    from distributed import Client, LocalCluster, as_completed

    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
        cluster = None
        try:
            if scheduler is None:
                # one task at a time per worker process; no memory limit (the nanny would restart a
                # worker for decoding a large frame); no dashboard port to collide with
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=0,
                                       dashboard_address=None, silence_logs=logging.ERROR)
                client = Client(cluster)
            else:
                try:
                    client = Client(scheduler, timeout="20s")
                except (OSError, TimeoutError) as e:
                    raise BatchError(f"cannot reach the Dask scheduler at {scheduler}: {_one_line(e)}") from None
            with client:
                batch.workers = len(client.scheduler_info(n_workers=-1)["workers"]) if scheduler else workers
                t0 = time.perf_counter()
                futures = {}
                for k, r in enumerate(todo):
                    # absolute paths: a remote worker's working folder is not this one
                    future = client.submit(track_one, str(r.video.absolute()), str(r.output.absolute()), options, retries=RETRIES,
                                           pure=False, key=f"track-{k}-{r.video.name}")
                    futures[future] = r
                frames = 0
                with tqdm(total=len(todo), unit="video", desc="track-batch", disable=not progress,
                          dynamic_ncols=True) as bar:
                    for future in as_completed(futures):
                        r = futures[future]
                        try:
                            got = future.result()
                        except Exception as e:  # retries spent, or a worker died under it too often
                            got = {"status": "failed", "frames": 0, "seconds": 0.0,
                                   "error": _task_error(e)}
                        r.status, r.frames, r.seconds, r.error = got["status"], got["frames"], got["seconds"], got["error"]
                        frames += r.frames
                        elapsed = time.perf_counter() - t0
                        bar.set_postfix_str(f"{frames / elapsed:.1f} frames/s" if elapsed > 0 else "", refresh=False)
                        bar.update(1)
                batch.seconds = time.perf_counter() - t0
        finally:
            if cluster is not None:
                cluster.close()


def _task_error(e: BaseException) -> str:
    if type(e).__name__ == "KilledWorker":
        return f"a worker died while tracking it, {ALLOWED_FAILURES + 1} times"
    return f"{type(e).__name__}: {_one_line(e)}"


def _write_summary(path: Path, results: list[VideoResult]) -> None:
    """One line per video, tab-separated, written under a temporary name and renamed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(SUMMARY_COLUMNS)
        for r in results:
            writer.writerow([str(r.video), str(r.output), r.status, r.frames, f"{r.seconds:.2f}", r.error])
    os.replace(tmp, path)


def read_summary(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def final_line(batch: BatchResult) -> str:
    """Counts, then throughput of the videos tracked in this run: videos/hour and frames/s."""
    c = batch.counts
    parts = [f"{c.get('done', 0)} tracked", f"{c.get('skipped', 0)} skipped", f"{c.get('failed', 0)} failed"]
    if c.get("not run"):
        parts.append(f"{c['not run']} not run")
    text = f"{len(batch.results)} videos: {', '.join(parts)}"
    if batch.tracked_videos and batch.seconds > 0:
        hours = batch.seconds / 3600
        text += (f"; {batch.tracked_frames} frames in {batch.seconds:.1f} s on {batch.workers} workers: "
                 f"{batch.tracked_videos / hours:.0f} videos/hour, {batch.tracked_frames / batch.seconds:.1f} frames/s")
    return f"{text} -> {batch.summary}"
