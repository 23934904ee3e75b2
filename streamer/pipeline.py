"""The live pipeline: capture processes -> ring buffers -> tracker -> encoders -> publisher.

One tracker serves every camera of the run: each pass takes the newest (or next) frame of each
camera that has one, waiting up to ``[camera] sync_ms`` for the others once one has arrived, and
runs frames of the same size through the network as one batch. Each camera keeps its own
``CameraStream`` (ring buffer, drop counts, encoder state, forecasts) and its own topic,
``frame/<name>``.

The tracker loop owns the ZeroMQ socket (sockets are not thread-safe), so it also sends
``meta`` and refreshes the status line between frames; it never waits longer than ``_IDLE_S``
for a frame, so a stalled camera is noticed and ``meta`` keeps flowing. Drop accounting is per
camera (``camera_stream``); the run's counts are their sums.
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np

from facestream.camera_adapters.calibration import source_calibration
from facestream.engines.bodyparts import BODYPARTS
from facestream.engines.encoder import load_encoder
from facestream.engines.quantize import VideoCalibration
from facestream.engines.tracker import load_tracker
from facestream.streamer.camera_stream import CameraStream, CaptureError, Drops, per_camera_path
from facestream.streamer.config import Settings
from facestream.streamer.hooks import HookRunner
from facestream.streamer.monitor import MonitorProcess, local_endpoint
from facestream.streamer.motion_svd import Components, MotionSVD
from facestream.streamer.preview import Previews
from facestream.streamer.publisher import Publisher
from facestream.streamer.pupil import PupilFinder
from facestream.streamer.recorder import Recording, RecordingError, check_free_space, check_record_path
from facestream.streamer.stats import LatencyHistogram, StageTimes
from facestream.streamer.video_recorder import VideoRecordingError, check_video_path

_IDLE_S = 0.05
_POLL_S = 0.0005


def versions() -> dict:
    """Versions of Python and the packages that shape the results."""
    found = {"python": platform.python_version()}
    for package in ("facestream", "numpy", "onnxruntime", "torch", "pyzmq", "msgpack", "h5py", "opencv-python-headless", "pypylon"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


class PipelineError(RuntimeError):
    """The pipeline cannot go on; the message is one line."""


@dataclass
class RunStats:
    started_ns: int = field(default_factory=time.monotonic_ns)
    frames: int = 0
    drops: Drops = field(default_factory=Drops)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    window: LatencyHistogram = field(default_factory=LatencyHistogram)
    stages: StageTimes = field(default_factory=StageTimes)
    batches: int = 0
    unprocessed_at_stop: int = 0
    recorded: int | None = None

    def fps(self) -> float:
        elapsed = (time.monotonic_ns() - self.started_ns) / 1e9
        return self.frames / elapsed if elapsed > 0 else 0.0

    def summary(self) -> dict:
        return {
            "frames": self.frames,
            "seconds": round((time.monotonic_ns() - self.started_ns) / 1e9, 3),
            "fps": round(self.fps(), 2),
            "latency_ms": self.latency.summary(),
            "dropped": self.drops.as_dict(),
            "frames_per_batch": round(self.frames / self.batches, 2) if self.batches else None,
            "unprocessed_at_stop": self.unprocessed_at_stop,
            "recorded": self.recorded,
            "stages_ms": self.stages.means(),
            "stages_p99_ms": self.stages.p99s(),
        }


def synthetic_model_warning(model_name: str, synthetic_only: bool, specs: list[str] | tuple[str, ...]) -> str | None:
    """One line when a model trained on synthetic faces only tracks a real camera (any camera of
    the run that is not the synthetic one); None otherwise."""
    real = [s for s in specs if s.partition(":")[0].strip().lower() != "synthetic"]
    if not synthetic_only or not real:
        return None
    return (f"the tracker model {model_name} was trained on synthetic faces only, and {real[0]} is a real camera: "
            "for real faces use Facemap's own model, `facestream run --model facemap ...` (downloads it on first use)")


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def status_line(report: dict, fps: float, window: dict, hook: str | None = None) -> str:
    """The live status line: the run's ``report()``, with frames/s and latency over the last
    status interval (``window``: a latency summary) and the hook's piece of it."""
    stats = report["stats"]
    d = stats["dropped"]
    line = (
        f"frames {stats['frames']}  {fps:.1f} fps  latency p50 {_ms(window['p50'])} ms p99 {_ms(window['p99'])} ms  "
        f"dropped {d['total']} (camera {d['camera']}, overrun {d['overrun']}, skipped {d['skipped']})"
    )
    # the camera delivers nothing (STALLED) or the pipeline does not keep up with it (BEHIND)
    line += "".join(f"  STALLED {c['name']}: {c['stalled']}" for c in report["cameras"] if c["stalled"])
    line += "".join(f"  {c['name']} BEHIND ({c['behind']})" for c in report["cameras"] if c.get("behind"))
    line += "" if hook is None else f"  {hook}"
    monitor = report["monitor"]
    recording = report["recording"]
    line += "  RECORDING STOPPED: disk full" if recording is not None and recording.get("error") is not None else ""
    return line + ("  MONITOR DOWN" if monitor is not None and monitor["error"] is not None else "")


def summary_lines(report: dict) -> list[str]:
    """The run's final summary for a person: frames, latency, drops, the hook and the videos."""
    s = report["stats"]
    lat = s["latency_ms"]
    if s["frames"] == 0:
        lines = [f"{report['status']} before the first frame: the run was still starting (loading the tracker, opening "
                 f"the camera), so nothing was tracked, published or recorded; dropped {s['dropped']['total']}"]
    else:
        lines = [
            f"{report['status']}: {s['frames']} frames in {s['seconds']:.1f} s ({s['fps']:.1f} fps), latency p50 "
            f"{_ms(lat['p50'])} ms p99 {_ms(lat['p99'])} ms max {_ms(lat['max'])} ms, dropped {s['dropped']['total']} "
            f"{s['dropped']}"
        ]
    h = report["hook"]
    if h is not None:
        lines.append(
            f"hook {h['target']}: {h['calls']} calls, p50 {_ms(h['time_ms']['p50'])} ms p99 {_ms(h['time_ms']['p99'])} ms "
            f"max {_ms(h['time_ms']['max'])} ms, {h['overruns']} over {h['budget_ms']:g} ms, {h['errors']} errors"
            + (f" (last: {h['last_error']})" if h["errors"] else "") + (", disabled" if h["disabled"] else ""))
    recording = report["recording"]
    for error, unrecorded in zip((recording or {}).get("errors", []), (recording or {}).get("unrecorded", [])):
        if error is not None:
            lines.append(f"{error}; the run went on publishing: {unrecorded} frames after it were not recorded")
    for camera in report["cameras"]:
        v = camera["video"]
        if v is not None:
            lines.append(f"video {v['path']}: {v['frames']} frames, {v['dropped']} dropped by the video recorder")
    return lines


class Pipeline:
    """A live pipeline over one or several cameras. ``run()`` blocks until stopped and returns the
    run's statistics; ``report()`` says how it goes, for ``meta``, the status line and summaries."""

    def __init__(self, cfg: Settings, on_status: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.on_status = on_status
        self.specs = cfg.camera.spec
        self.names = cfg.camera.camera_names
        several = len(self.specs) > 1
        r = cfg.record
        self.record_paths = [check_record_path(per_camera_path(r.path, n, several)) for n in self.names] if r.path else []
        self.video_paths = [per_camera_path(r.video, n, several) for n in self.names] if r.video else []
        for path in self.video_paths:
            check_video_path(path)
        t = cfg.tracker
        self.tracker = load_tracker(
            engine=t.engine, model=t.model or None, bbox=t.crop, threads=t.threads,
            calibration=(VideoCalibration(Path(t.calibration)) if t.calibration
                         else source_calibration(self.specs[0], cfg.camera.options(0, cfg.pylon))),
        )
        self.warning = synthetic_model_warning(self.tracker.model.name, self.tracker.model.synthetic_only, self.specs)
        # one encoder per camera: its filter state is that camera's history
        self.encoders = [load_encoder(cfg.encoder.model or None) for _ in self.specs]
        self.encoder = self.encoders[0]
        ms = cfg.motion_svd
        # components from a file: one per camera, as recordings are named; read now, so a bad one stops the run first
        self.motion_components = [Components.load(per_camera_path(ms.load, n, several)) if ms.load else None
                                  for n in self.names] if ms.enabled else []
        # each camera's motion_svd length, for its recording's column (0: none)
        self.motion_widths = [0 if not ms.enabled else c.components.shape[1] if c is not None else ms.components
                              for c in self.motion_components or [None] * len(self.names)]
        check_free_space(self.record_paths, self.encoder.describe()["n_out"], cfg.pupil.enabled, max(self.motion_widths))
        self.predict_ns = round(cfg.stream.predict_ms * 1e6)
        h = cfg.hook
        self.hook = HookRunner(h.target, h.budget_ms, h.disable_after) if h.target else None
        self.stats = RunStats()
        self.status = "starting"
        self.streams: list[CameraStream] = []
        self.recordings: list[Recording] = []
        self.publisher: Publisher | None = None
        self.processes: dict[str, int] = {}  # role -> pid of the processes this run started
        self.monitor: MonitorProcess | None = None
        self.monitor_error: str | None = None

    # -- the run ------------------------------------------------------------------------
    def run(self, should_stop: Callable[[], bool] = lambda: False) -> dict:
        cfg = self.cfg
        ctx = mp.get_context("spawn")
        s = cfg.stream
        publisher = Publisher(s.publish, s.send_hwm, encoding=s.encoding, curve_secret=s.curve_secret,
                              curve_clients=s.curve_clients)
        self.publisher = publisher
        m = cfg.monitor
        monitor = MonitorProcess(ctx, local_endpoint(s.publish), m.host, m.port, publisher.monitor_keys) if m.enabled else None
        self.monitor = monitor
        for i, (spec, name, encoder) in enumerate(zip(self.specs, self.names, self.encoders)):
            previews = Previews(publisher, m.preview_fps, m.preview_width)
            self.streams.append(CameraStream(ctx, name, spec, cfg.camera.options(i, cfg.pylon), encoder, self.predict_ns,
                                             publisher, previews, self.hook, cfg.camera.priority,
                                             pupil=self._pupil_finder()))
        failed = False
        video_error = None
        try:
            for path, name, width in zip(self.record_paths, self.names, self.motion_widths):
                recording = Recording(
                    ctx, path, publisher.open_tee(), self.encoder.describe()["n_out"], self._run_info(),
                    cfg.record.flush_interval, camera=name, pupil=cfg.pupil.enabled, motion_svd=width,
                )
                self.recordings.append(recording)
                recording.start()
                self.processes[f"recorder-{name}"] = recording.pid
            if monitor is not None:
                monitor.start()
                self.processes["monitor"] = monitor.pid
            for i, stream in enumerate(self.streams):
                shape = stream.wait_opened()
                self.tracker.infer(np.zeros(shape, np.uint8))  # warm up (the first inference is slow); checks the bbox
                stream.motion = self._motion_svd(i, shape)
                stream.open_ring(shape, cfg.buffer.slots, ctx, self.video_paths[i] if self.video_paths else None,
                                 cfg.record.video_codec)
                self.processes.update(stream.processes())
            self.status = "waiting for subscribers"
            if publisher.wait_for_subscribers(s.wait_subscribers, should_stop):
                for stream in self.streams:
                    stream.go()
                self.stats = RunStats()
                self._loop(publisher, should_stop)
        except CaptureError as e:
            failed = True
            raise PipelineError(str(e)) from None
        except BaseException:
            failed = True
            raise
        finally:
            self.status = "failed" if failed else ("ended" if self.status == "ended" else "stopped")
            if self.hook is not None:
                self.hook.close()
            publisher.publish_meta(self.report())  # the last word, for subscribers and the recording
            if monitor is not None:
                monitor.stop()
            for stream in self.streams:
                try:
                    stream.close()
                except VideoRecordingError as e:
                    video_error = e
            try:
                rows = [recording.finish() for recording in self.recordings]
                self.stats.recorded = None if not rows or None in rows else sum(rows)
            except RecordingError:
                if not failed:
                    raise
            finally:
                publisher.close()
        if video_error is not None:
            raise video_error
        return self.stats.summary()

    def _pupil_finder(self) -> PupilFinder | None:
        p = self.cfg.pupil
        return PupilFinder(p.region_scale, p.min_likelihood, p.smooth_px) if p.enabled else None

    def _motion_svd(self, index: int, frame_shape: tuple[int, int]) -> MotionSVD | None:
        """The ``index``-th camera's motion SVD: on the region set, else the tracker's bbox."""
        ms = self.cfg.motion_svd
        if not ms.enabled:
            return None
        save = per_camera_path(ms.save, self.names[index], len(self.names) > 1) if ms.save else ""
        return MotionSVD(frame_shape, ms.crop or self.cfg.tracker.crop, ms.bin, ms.components, ms.learn_seconds,
                         self.motion_components[index], save)

    def _run_info(self) -> dict:
        """What a recording keeps about the run: settings, models, versions."""
        return {
            "config": self.cfg.as_dict(),
            "tracker": self.tracker.describe(),
            "encoder": self.encoder.describe(),
            "versions": versions(),
            "clock": {"monotonic_ns": time.monotonic_ns(), "time_ns": time.time_ns()},
        }

    def _gather(self, latest: bool) -> list:
        """(stream, read) for each camera with a frame waiting: once one camera has delivered,
        the others get up to ``sync_ms`` to deliver theirs; [] if nothing came within ``_IDLE_S``."""
        waiting = [s for s in self.streams if not s.exhausted]
        reads: list = []
        deadline = time.monotonic() + _IDLE_S
        sync_deadline = None
        while waiting:
            for stream in list(waiting):
                read = stream.take(latest)
                if read is not None:
                    reads.append((stream, read))
                    waiting.remove(stream)
            now = time.monotonic()
            if reads and sync_deadline is None:
                sync_deadline = now + self.cfg.camera.sync_ms / 1e3
            if not waiting or now >= (deadline if sync_deadline is None else sync_deadline):
                break
            # the wait for a frame reads subscription messages (a flood's backlog), never more than a poll's time
            self.publisher.idle(_POLL_S)
        return reads

    def _loop(self, publisher: Publisher, should_stop) -> None:
        cfg = self.cfg
        latest = cfg.stream.policy == "latest"
        max_frames, duration = cfg.run.frames, cfg.run.duration
        meta_every, status_every = cfg.stream.meta_interval, cfg.run.status_interval
        stats = self.stats
        now = time.monotonic()
        next_meta, next_status = now, now + status_every
        status_frames, status_t = 0, now
        self.status = "running"
        if status_every and self.on_status and self.warning:
            # once, above the first status line (a terminal goes on updating the line below it)
            self.on_status(f"facestream: warning: {self.warning}\n" + status_line(self.report(), 0.0, stats.window.summary(),
                                                                      None if self.hook is None else self.hook.status()))
        reported: set[str] = set()  # the cameras last reported stalled: a change is reported at once, not at the next interval
        while not should_stop():
            reads = self._gather(latest)
            now = time.monotonic()
            if not reads:
                if all(s.exhausted for s in self.streams):
                    break
                for stream in self.streams:
                    stream.poll()
            else:
                self._process(reads)
                stats.drops = sum((s.drops for s in self.streams), Drops())
                if (max_frames and stats.frames >= max_frames) or (duration and now - stats.started_ns / 1e9 >= duration):
                    break
            stalled = self.stalled()
            self.status = "waiting for camera" if stalled else "running"
            if set(stalled) != reported:
                reported = set(stalled)
                next_meta = next_status = now
            if now >= next_meta:
                for recording in self.recordings:
                    recording.check()
                self._check_monitor()
                for stream in self.streams:
                    stream.poll()
                publisher.publish_meta(self.report())
                next_meta = now + meta_every
            if status_every and now >= next_status and self.on_status:
                fps = (stats.frames - status_frames) / max(now - status_t, 1e-3)
                self.on_status(status_line(self.report(), fps, stats.window.summary(),
                                           None if self.hook is None else self.hook.status()))
                status_frames, status_t = stats.frames, now
                next_status = now + status_every
                stats.window = LatencyHistogram()
        stats.unprocessed_at_stop = sum(s.unprocessed for s in self.streams)
        if all(s.ended or s.exhausted for s in self.streams):
            self.status = "ended"

    def _process(self, reads: list) -> None:
        """Track the frames (one network call per frame size), then hand each its camera's stream."""
        picked_ns = time.monotonic_ns()
        by_shape: dict[tuple, list] = {}
        for stream, read in reads:
            by_shape.setdefault(read.frame.pixels.shape, []).append((stream, read.frame))
        self.stats.batches += 1
        for group in by_shape.values():
            t0 = time.perf_counter_ns()
            keypoints = self.tracker.infer(np.stack([frame.pixels for _, frame in group]))
            track_ms = (time.perf_counter_ns() - t0) / 1e6
            timings = self.tracker.last_timings_ms
            for (stream, frame), points in zip(group, keypoints):
                message, stages = stream.step(frame, points)
                latency_ms = (message["t_publish_ns"] - frame.t_capture_ns) / 1e6
                self.stats.frames += 1
                self.stats.latency.add(latency_ms)
                self.stats.window.add(latency_ms)
                self.stats.stages.add({
                    "wait_ms": (picked_ns - frame.t_capture_ns) / 1e6,
                    # the pipeline's own cost: everything from picking the frame up to its message, but the tracker
                    "overhead_ms": (message["t_publish_ns"] - picked_ns) / 1e6 - track_ms,
                    **{f"{k}_ms": v for k, v in timings.items()},
                    "track_ms": track_ms,
                    **stages,
                })

    def _check_monitor(self) -> None:
        """A monitor that died is reported (meta, status line) and the run goes on: a viewer's
        failure must not end an experiment."""
        if self.monitor is not None and self.monitor_error is None and not self.monitor.alive():
            self.monitor_error = f"the monitor stopped unexpectedly (exit code {self.monitor.exitcode}); the run goes on without it"

    def stalled(self) -> dict[str, str]:
        """Camera name -> why it delivers no frames, for each camera that does not right now."""
        after = self.cfg.camera.stall_after
        return {s.name: why for s in self.streams if (why := s.stall(after)) is not None}

    def previews_sent(self) -> int:
        """Preview pictures sent so far, every camera together (a page that is open gets them)."""
        return sum(s.previews.sent for s in self.streams)

    # -- the report -----------------------------------------------------------------------
    def report(self) -> dict:
        """How the run goes: what ``meta`` publishes, and what the status line and summaries show."""
        enc = self.encoder.describe()
        cameras = [s.report(self.cfg.camera.stall_after) for s in self.streams]
        first = cameras[0] if cameras else {}
        return {
            "status": self.status,
            "bodyparts": list(BODYPARTS),
            "keypoints": {"layout": "[x, y, likelihood] per bodypart; x = column, y = row, frame pixels"},
            "cameras": cameras,
            "camera": first,
            "frame": {"height": first.get("height"), "width": first.get("width")},
            "tracker": {**self.tracker.describe(), "warning": self.warning},
            "encoder": enc,
            "neural": self.encoder.output_meta(first.get("fps")),
            "policy": self.cfg.stream.policy,
            "pupil": None if not self.cfg.pupil.enabled else {
                **dataclasses.asdict(self.cfg.pupil), "method": "facemap gaussian fit, otsu threshold, eye keypoints' ellipse"},
            "prediction": None if not self.predict_ns else {
                "horizon_ms": self.cfg.stream.predict_ms, "method": "kalman constant velocity",
                "q_over_r": self.streams[0].forecasts[0].q},
            "hook": None if self.hook is None else self.hook.describe(),
            "monitor": None if self.monitor is None else {"url": self.monitor.url, "error": self.monitor_error},
            "processes": dict(self.processes),
            "subscriptions": None if self.publisher is None else self.publisher.subscription_report(),
            "recording": None if not self.recordings and not self.video_paths else {
                **({} if not self.recordings else {
                    "path": str(self.recordings[0].path), "paths": [str(r.path) for r in self.recordings],
                    "dropped": self.publisher.tee_dropped,
                    # why a recording stopped before the run (a full disk: the run goes on publishing)
                    "error": next((r.error for r in self.recordings if r.error is not None), None),
                    "errors": [r.error for r in self.recordings], "unrecorded": [r.unrecorded for r in self.recordings]}),
                "video": None if not self.video_paths else first.get("video")},
            "stats": self.stats.summary(),
            "clock": {"monotonic_ns": time.monotonic_ns(), "time_ns": time.time_ns()},
        }
