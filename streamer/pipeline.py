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

import multiprocessing as mp
import platform
import time
from importlib import metadata
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from facestream.engines.bodyparts import BODYPARTS
from facestream.engines.encoder import load_encoder
from facestream.engines.tracker import load_tracker
from facestream.streamer.camera_stream import CameraStream, CaptureError, Drops, per_camera_path
from facestream.streamer.config import Config, ConfigError
from facestream.streamer.hooks import HookRunner
from facestream.streamer.monitor import MonitorProcess, local_endpoint
from facestream.streamer.preview import Previews
from facestream.streamer.protocol import Result
from facestream.streamer.publisher import Publisher
from facestream.streamer.recorder import Recording, RecordingError, check_record_path
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


def status_line(stats: RunStats, fps: float, stalled: dict[str, str] | None = None) -> str:
    """The live status line; ``stalled``: camera name -> why it delivers no frames."""
    w = stats.window.summary()
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    d = stats.drops
    line = (
        f"frames {stats.frames}  {fps:.1f} fps  latency p50 {fmt(w['p50'])} ms p99 {fmt(w['p99'])} ms  "
        f"dropped {d.total} (camera {d.camera}, overrun {d.overrun}, skipped {d.skipped})"
    )
    return line + "".join(f"  STALLED {name}: {why}" for name, why in (stalled or {}).items())


class Pipeline:
    """A live pipeline over one or several cameras. ``run()`` blocks until stopped and returns the
    run's summary."""

    def __init__(self, cfg: Config, on_status: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.on_status = on_status
        c = cfg["camera"]
        self.specs = c["spec"]
        self.names = c["names"] or (["cam0"] if len(self.specs) == 1 else [f"cam{i}" for i in range(len(self.specs))])
        if len(self.names) != len(self.specs) or len(set(self.names)) != len(self.names):
            raise ConfigError(f"[camera] names = {c['names']} must name each of the {len(self.specs)} cameras once")
        several = len(self.specs) > 1
        r = cfg["record"]
        self.record_paths = [check_record_path(per_camera_path(r["path"], n, several)) for n in self.names] if r["path"] else []
        self.video_paths = [per_camera_path(r["video"], n, several) for n in self.names] if r["video"] else []
        for path in self.video_paths:
            check_video_path(path)
        t = cfg["tracker"]
        self.tracker = load_tracker(
            engine=t["engine"], model=t["model"] or None, bbox=tuple(t["bbox"]) or None, threads=t["threads"],
            calibration=t["calibration"] or None,
        )
        # one encoder per camera: its filter state is that camera's history
        self.encoders = [load_encoder(cfg["encoder"]["model"] or None) for _ in self.specs]
        self.encoder = self.encoders[0]
        self.predict_ns = round(cfg["stream"]["predict_ms"] * 1e6)
        h = cfg["hook"]
        self.hook = HookRunner(h["target"], h["budget_ms"], h["disable_after"]) if h["target"] else None
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
        publisher = Publisher(cfg["stream"]["publish"], cfg["stream"]["send_hwm"], encoding=cfg["stream"]["encoding"],
                              curve_secret=cfg["stream"]["curve_secret"], curve_clients=cfg["stream"]["curve_clients"])
        self.publisher = publisher
        m = cfg["monitor"]
        monitor = (MonitorProcess(ctx, local_endpoint(cfg["stream"]["publish"]), m["host"], m["port"], publisher.monitor_keys)
                   if m["enabled"] else None)
        self.monitor = monitor
        c = cfg["camera"]
        for i, (spec, name, encoder) in enumerate(zip(self.specs, self.names, self.encoders)):
            camera_args = dict(
                spec=spec, width=c["width"], height=c["height"], fps=c["fps"], seed=c["seed"] + i,
                frames=c["frames"], loop=c["loop"], realtime=c["realtime"], pylon=cfg["pylon"],
            )
            previews = Previews(publisher, m["preview_fps"], m["preview_width"])
            self.streams.append(CameraStream(ctx, name, camera_args, encoder, self.predict_ns, previews))
        failed = False
        video_error = None
        try:
            for path, name in zip(self.record_paths, self.names):
                recording = Recording(
                    ctx, path, publisher.open_tee(), self.encoder.describe()["n_out"], self._run_info(),
                    cfg["record"]["flush_interval"], camera=name,
                )
                self.recordings.append(recording)
                recording.start()
                self.processes[f"recorder-{name}"] = recording.pid
            if monitor is not None:
                monitor.start()
                self.processes["monitor"] = monitor.pid
            for i, stream in enumerate(self.streams):
                shape = stream.wait_opened()
                self.processes[f"capture-{stream.name}"] = stream.proc.pid
                self._check_bbox(shape)
                self.tracker.infer(np.zeros(shape, np.uint8))  # warm up: the first inference is slow
                stream.open_ring(shape, cfg["buffer"]["slots"], ctx, self.video_paths[i] if self.video_paths else None,
                                 cfg["record"]["video_codec"])
                if stream.video is not None:
                    self.processes[f"video-{stream.name}"] = stream.video.pid
            self.status = "waiting for subscribers"
            if publisher.wait_for_subscribers(cfg["stream"]["wait_subscribers"], should_stop):
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
            publisher.publish_meta(self.meta())  # the last word, for subscribers and the recording
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

    def _run_info(self) -> dict:
        """What a recording keeps about the run: settings, models, versions."""
        return {
            "config": self.cfg,
            "tracker": self.tracker.describe(),
            "encoder": self.encoder.describe(),
            "versions": versions(),
            "clock": {"monotonic_ns": time.monotonic_ns(), "time_ns": time.time_ns()},
        }

    def _check_bbox(self, shape: tuple[int, int]) -> None:
        bbox = self.cfg["tracker"]["bbox"]
        if bbox and (bbox[1] > shape[0] or bbox[3] > shape[1]):
            raise ConfigError(f"[tracker] bbox = {bbox} lies outside the {shape[0]}x{shape[1]} frame")

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
                sync_deadline = now + self.cfg["camera"]["sync_ms"] / 1e3
            if not waiting or now >= (deadline if sync_deadline is None else sync_deadline):
                break
            time.sleep(_POLL_S)
        return reads

    def _loop(self, publisher: Publisher, should_stop) -> None:
        cfg = self.cfg
        latest = cfg["stream"]["policy"] == "latest"
        max_frames, duration = cfg["run"]["frames"], cfg["run"]["duration"]
        meta_every, status_every = cfg["stream"]["meta_interval"], cfg["run"]["status_interval"]
        stats = self.stats
        now = time.monotonic()
        next_meta, next_status = now, now + status_every
        status_frames, status_t = 0, now
        self.status = "running"
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
                self._process(reads, publisher)
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
                publisher.publish_meta(self.meta())
                next_meta = now + meta_every
            if status_every and now >= next_status and self.on_status:
                line = status_line(stats, (stats.frames - status_frames) / max(now - status_t, 1e-3), stalled)
                line += "" if self.hook is None else f"  {self.hook.status()}"
                self.on_status(line if self.monitor_error is None else f"{line}  MONITOR DOWN")
                status_frames, status_t = stats.frames, now
                next_status = now + status_every
                stats.window = LatencyHistogram()
        stats.unprocessed_at_stop = sum(s.unprocessed for s in self.streams)
        if all(s.ended or s.exhausted for s in self.streams):
            self.status = "ended"

    def _process(self, reads: list, publisher: Publisher) -> None:
        """Track the frames (one network call per frame size), then encode and publish each."""
        picked_ns = time.monotonic_ns()
        by_shape: dict[tuple, list] = {}
        for stream, read in reads:
            by_shape.setdefault(read.frame.pixels.shape, []).append((stream, read.frame))
        self.stats.batches += 1
        for group in by_shape.values():
            t0 = time.perf_counter_ns()
            keypoints = self.tracker.infer(np.stack([frame.pixels for _, frame in group]))
            t1 = time.perf_counter_ns()
            timings = self.tracker.last_timings_ms
            for (stream, frame), points in zip(group, keypoints):
                self._publish_one(stream, frame, points, publisher, picked_ns, timings, (t1 - t0) / 1e6)

    def _publish_one(self, stream: CameraStream, frame, keypoints: np.ndarray, publisher: Publisher,
                     picked_ns: int, timings: dict, track_ms: float) -> None:
        t1 = time.perf_counter_ns()
        neural = stream.encoder.step(keypoints)
        t2 = time.perf_counter_ns()
        predicted = stream.forecast(frame.t_capture_ns, keypoints, neural)
        t3 = time.perf_counter_ns()
        stream.frames += 1
        message = publisher.publish_frame({
            "frame_id": frame.frame_id,
            "t_capture_ns": frame.t_capture_ns,
            "t_camera_ns": frame.t_camera_ns if frame.t_camera_ns >= 0 else None,
            "camera": stream.name,
            "keypoints": keypoints.tolist(),
            "neural": neural.tolist(),
            "dropped": stream.drops.total,
            **{k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in predicted.items()},
        })
        t4 = time.perf_counter_ns()
        if self.hook is not None:
            self.hook(Result(
                seq=message["seq"], frame_id=frame.frame_id, t_capture_ns=frame.t_capture_ns,
                t_publish_ns=message["t_publish_ns"], t_camera_ns=message["t_camera_ns"], camera=stream.name,
                keypoints=keypoints, neural=neural, dropped=message["dropped"], **predicted,
            ))
        latency_ms = (message["t_publish_ns"] - frame.t_capture_ns) / 1e6
        self.stats.frames += 1
        self.stats.latency.add(latency_ms)
        self.stats.window.add(latency_ms)
        stream.latency.add(latency_ms)
        self.stats.stages.add({
            "wait_ms": (picked_ns - frame.t_capture_ns) / 1e6,
            # the pipeline's own cost: everything from picking the frame up to its message, but the tracker
            "overhead_ms": (message["t_publish_ns"] - picked_ns) / 1e6 - track_ms,
            **{f"{k}_ms": v for k, v in timings.items()},
            "track_ms": track_ms,
            "encode_ms": (t2 - t1) / 1e6,
            **({"forecast_ms": (t3 - t2) / 1e6} if predicted else {}),
            "publish_ms": (t4 - t3) / 1e6,
        })
        # after the frame is out and timed: a preview never delays the message it shows
        stream.previews.offer(frame.pixels, frame.frame_id, frame.t_capture_ns, stream.name, message["keypoints"])

    def _check_monitor(self) -> None:
        """A monitor that died is reported (meta, status line) and the run goes on: a viewer's
        failure must not end an experiment."""
        if self.monitor is not None and self.monitor_error is None and not self.monitor.alive():
            self.monitor_error = f"the monitor stopped unexpectedly (exit code {self.monitor.exitcode}); the run goes on without it"

    def stalled(self) -> dict[str, str]:
        """Camera name -> why it delivers no frames, for each camera that does not right now."""
        after = self.cfg["camera"]["stall_after"]
        return {s.name: why for s in self.streams if (why := s.stall(after)) is not None}

    # -- meta ---------------------------------------------------------------------------
    def meta(self) -> dict:
        enc = self.encoder.describe()
        cameras = [s.describe(self.cfg["camera"]["stall_after"]) for s in self.streams]
        first = cameras[0] if cameras else {}
        return {
            "status": self.status,
            "bodyparts": list(BODYPARTS),
            "keypoints": {"layout": "[x, y, likelihood] per bodypart; x = column, y = row, frame pixels"},
            "cameras": cameras,
            "camera": first,
            "frame": {"height": first.get("height"), "width": first.get("width")},
            "tracker": self.tracker.describe(),
            "encoder": enc,
            "neural": self.encoder.output_meta(first.get("fps")),
            "policy": self.cfg["stream"]["policy"],
            "prediction": None if not self.predict_ns else {
                "horizon_ms": self.cfg["stream"]["predict_ms"], "method": "kalman constant velocity",
                "q_over_r": self.streams[0].forecasts[0].q},
            "hook": None if self.hook is None else self.hook.describe(),
            "monitor": None if self.monitor is None else {"url": self.monitor.url, "error": self.monitor_error},
            "processes": dict(self.processes),
            "recording": None if not self.recordings and not self.video_paths else {
                **({} if not self.recordings else {
                    "path": str(self.recordings[0].path), "paths": [str(r.path) for r in self.recordings],
                    "dropped": self.publisher.tee_dropped}),
                "video": None if not self.video_paths else first.get("video")},
            "stats": self.stats.summary(),
            "clock": {"monotonic_ns": time.monotonic_ns(), "time_ns": time.time_ns()},
        }
