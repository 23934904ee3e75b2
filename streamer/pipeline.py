"""The live pipeline: capture process -> ring buffer -> tracker -> encoder -> publisher.

The tracker loop owns the ZeroMQ socket (sockets are not thread-safe), so it also sends
``meta`` and refreshes the status line between frames; it never waits longer than
``_IDLE_S`` for a frame, so a stalled camera is noticed and ``meta`` keeps flowing.

From the run's first processed frame on, every frame the camera produced is either processed or
counted as dropped, by cause:
``camera`` (gaps in the camera's frame counter: the camera or its driver lost them),
``overrun`` (the ring buffer overwrote them before the tracker read them, policy ``every``)
and ``skipped`` (passed over for a newer frame, policy ``latest``).
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
from facestream.engines.forecast import KalmanForecaster
from facestream.engines.tracker import load_tracker
from facestream.streamer.capture import capture_main
from facestream.streamer.config import Config, ConfigError
from facestream.streamer.hooks import HookRunner
from facestream.streamer.monitor import MonitorProcess, local_endpoint
from facestream.streamer.preview import Previews
from facestream.streamer.protocol import Result
from facestream.streamer.publisher import Publisher
from facestream.streamer.recorder import Recording, RecordingError, check_record_path
from facestream.streamer.ringbuffer import RingBuffer
from facestream.streamer.stats import LatencyHistogram, StageTimes
from facestream.streamer.video_recorder import VideoRecording, VideoRecordingError, check_video_path

_IDLE_S = 0.05
_CAMERA_STALL_S = 1.0
_OPEN_TIMEOUT_S = 30.0


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
class Drops:
    camera: int = 0
    overrun: int = 0
    skipped: int = 0

    @property
    def total(self) -> int:
        return self.camera + self.overrun + self.skipped

    def as_dict(self) -> dict:
        return {"total": self.total, "camera": self.camera, "overrun": self.overrun, "skipped": self.skipped}


@dataclass
class RunStats:
    started_ns: int = field(default_factory=time.monotonic_ns)
    frames: int = 0
    drops: Drops = field(default_factory=Drops)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    window: LatencyHistogram = field(default_factory=LatencyHistogram)
    stages: StageTimes = field(default_factory=StageTimes)
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
            "unprocessed_at_stop": self.unprocessed_at_stop,
            "recorded": self.recorded,
            "stages_ms": self.stages.means(),
            "stages_p99_ms": self.stages.p99s(),
        }


def status_line(stats: RunStats, fps: float) -> str:
    w = stats.window.summary()
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    d = stats.drops
    return (
        f"frames {stats.frames}  {fps:.1f} fps  latency p50 {fmt(w['p50'])} ms p99 {fmt(w['p99'])} ms  "
        f"dropped {d.total} (camera {d.camera}, overrun {d.overrun}, skipped {d.skipped})"
    )


class Pipeline:
    """One camera's live pipeline. ``run()`` blocks until stopped and returns the run's summary."""

    def __init__(self, cfg: Config, on_status: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.on_status = on_status
        self.record_path = check_record_path(cfg["record"]["path"]) if cfg["record"]["path"] else None
        if cfg["record"]["video"]:
            check_video_path(cfg["record"]["video"])
        t = cfg["tracker"]
        self.tracker = load_tracker(
            engine=t["engine"], model=t["model"] or None, bbox=tuple(t["bbox"]) or None, threads=t["threads"],
            calibration=t["calibration"] or None,
        )
        self.encoder = load_encoder(cfg["encoder"]["model"] or None)
        self.predict_ns = round(cfg["stream"]["predict_ms"] * 1e6)
        # one forecaster for the keypoints' x, y and one for the activity
        self.forecasts = (KalmanForecaster(), KalmanForecaster()) if self.predict_ns else None
        h = cfg["hook"]
        self.hook = HookRunner(h["target"], h["budget_ms"], h["disable_after"]) if h["target"] else None
        self.stats = RunStats()
        self.status = "starting"
        self.recording: Recording | None = None
        self.video: VideoRecording | None = None
        self.camera_stalled: str | None = None  # why the camera delivers no frames, while it does not
        self.previews: Previews | None = None
        self.publisher: Publisher | None = None
        self._camera: dict = {}
        self.processes: dict[str, int] = {}  # role -> pid of the processes this run started

    # -- the run ------------------------------------------------------------------------
    def run(self, should_stop: Callable[[], bool] = lambda: False) -> dict:
        cfg = self.cfg
        ctx = mp.get_context("spawn")
        publisher = Publisher(cfg["stream"]["publish"], cfg["stream"]["send_hwm"], encoding=cfg["stream"]["encoding"])
        self.publisher = publisher
        m = cfg["monitor"]
        self.previews = Previews(publisher, m["preview_fps"], m["preview_width"])
        monitor = MonitorProcess(ctx, local_endpoint(cfg["stream"]["publish"]), m["host"], m["port"]) if m["enabled"] else None
        conn, child_conn = ctx.Pipe()
        stop = ctx.Event()
        c = cfg["camera"]
        camera_args = dict(
            spec=c["spec"], width=c["width"], height=c["height"], fps=c["fps"],
            seed=c["seed"], frames=c["frames"], loop=c["loop"], realtime=c["realtime"], pylon=cfg["pylon"],
        )
        proc = ctx.Process(target=capture_main, args=(camera_args, child_conn, stop), name="facestream-capture", daemon=True)
        ring = None
        failed = False
        video_error = None
        try:
            if self.record_path is not None:
                self.recording = Recording(
                    ctx, self.record_path, publisher.open_tee(), self.encoder.describe()["n_out"],
                    self._run_info(), cfg["record"]["flush_interval"],
                )
                self.recording.start()
            if monitor is not None:
                monitor.start()
            proc.start()
            self.processes["capture"] = proc.pid
            shape, self._camera = self._wait_opened(conn, proc)
            self._check_bbox(shape)
            self.tracker.infer(np.zeros(shape, np.uint8))  # warm up: the first inference is slow
            ring = RingBuffer.create(shape, cfg["buffer"]["slots"])
            if cfg["record"]["video"]:  # its reader starts at the ring's first frame
                self.video = VideoRecording(ctx, cfg["record"]["video"], cfg["record"]["video_codec"])
                self.video.start(ring.name, self._camera.get("fps", 0.0))
            self.status = "waiting for subscribers"
            if publisher.wait_for_subscribers(cfg["stream"]["wait_subscribers"], should_stop):
                reader = ring.reader()  # before capture starts writing: its first frame is ours
                conn.send(ring.name)
                self.stats = RunStats()
                self._loop(ring, reader, publisher, conn, proc, should_stop)
        except BaseException:
            failed = True
            raise
        finally:
            self.status = "failed" if failed else ("ended" if self.status == "ended" else "stopped")
            if self.hook is not None:
                self.hook.close()
            publisher.publish_meta(self.meta())  # the last word, for subscribers and the recording
            stop.set()
            if monitor is not None:
                monitor.stop()
            if proc.pid is not None:
                proc.join(2.0)
                if proc.is_alive():
                    proc.terminate()
                    proc.join(1.0)
            try:
                if self.video is not None:
                    self.video.finish()  # the frames still in the ring, now that capture has stopped
            except VideoRecordingError as e:
                video_error = e
            if ring is not None:
                ring.close()
                ring.unlink()
            try:
                if self.recording is not None:
                    self.stats.recorded = self.recording.finish()
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

    def _wait_opened(self, conn, proc) -> tuple[tuple[int, int], dict]:
        deadline = time.monotonic() + _OPEN_TIMEOUT_S
        while time.monotonic() < deadline:
            if conn.poll(0.1):
                msg = conn.recv()
                if msg[0] == "error":
                    raise PipelineError(msg[1])
                return tuple(msg[1]), msg[2]
            if not proc.is_alive():
                raise PipelineError(f"capture process exited (code {proc.exitcode}) before the camera opened")
        raise PipelineError(f"camera {self.cfg['camera']['spec']!r} did not open within {_OPEN_TIMEOUT_S:.0f} s")

    def _check_bbox(self, shape: tuple[int, int]) -> None:
        bbox = self.cfg["tracker"]["bbox"]
        if bbox and (bbox[1] > shape[0] or bbox[3] > shape[1]):
            raise ConfigError(f"[tracker] bbox = {bbox} lies outside the {shape[0]}x{shape[1]} frame")

    def _loop(self, ring: RingBuffer, reader, publisher: Publisher, conn, proc, should_stop) -> None:
        cfg = self.cfg
        latest = cfg["stream"]["policy"] == "latest"
        max_frames, duration = cfg["run"]["frames"], cfg["run"]["duration"]
        meta_every, status_every = cfg["stream"]["meta_interval"], cfg["run"]["status_interval"]
        stats = self.stats
        first: tuple[int, int] | None = None  # frame_id and ring index of the run's first frame
        last_index = -1
        camera_ended = False
        now = time.monotonic()
        next_meta, next_status, last_frame_at = now, now + status_every, now
        status_frames, status_t = 0, now
        self.status = "running"
        while not should_stop():
            read = reader.latest(_IDLE_S) if latest else reader.next(_IDLE_S)
            now = time.monotonic()
            if read is None:
                if reader.exhausted:
                    break
                camera_ended = self._poll_capture(conn, proc, camera_ended)
                if now - last_frame_at > _CAMERA_STALL_S and not camera_ended:
                    self.status = "waiting for camera"
            else:
                last_frame_at = now
                self.status = "running"
                frame = read.frame
                if first is None:  # the run starts at its first processed frame
                    first = (frame.frame_id, read.index)
                else:
                    stats.drops.overrun += read.missed
                    stats.drops.skipped += read.skipped
                stats.drops.camera = (frame.frame_id - first[0]) - (read.index - first[1])
                last_index = read.index
                self._process(frame, publisher)
                if (max_frames and stats.frames >= max_frames) or (duration and now - stats.started_ns / 1e9 >= duration):
                    break
            if now >= next_meta:
                if self.recording is not None:
                    self.recording.check()
                camera_ended = self._poll_capture(conn, proc, camera_ended)
                publisher.publish_meta(self.meta())
                next_meta = now + meta_every
            if status_every and now >= next_status and self.on_status:
                line = status_line(stats, (stats.frames - status_frames) / (now - status_t))
                self.on_status(line if self.hook is None else f"{line}  {self.hook.status()}")
                status_frames, status_t = stats.frames, now
                next_status = now + status_every
                stats.window = LatencyHistogram()
        stats.unprocessed_at_stop = max(0, ring.written - 1 - last_index) if first is not None else 0
        if camera_ended or reader.exhausted:
            self.status = "ended"

    def _process(self, frame, publisher: Publisher) -> None:
        picked_ns = time.monotonic_ns()
        t0 = time.perf_counter_ns()
        keypoints = self.tracker.infer(frame.pixels)[0]
        t1 = time.perf_counter_ns()
        neural = self.encoder.step(keypoints)
        t2 = time.perf_counter_ns()
        predicted = self._forecast(frame.t_capture_ns, keypoints, neural) if self.forecasts else {}
        t3 = time.perf_counter_ns()
        message = publisher.publish_frame({
            "frame_id": frame.frame_id,
            "t_capture_ns": frame.t_capture_ns,
            "t_camera_ns": frame.t_camera_ns if frame.t_camera_ns >= 0 else None,
            "camera": self._camera.get("name", "camera"),
            "keypoints": keypoints.tolist(),
            "neural": neural.tolist(),
            "dropped": self.stats.drops.total,
            **{k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in predicted.items()},
        })
        t4 = time.perf_counter_ns()
        if self.hook is not None:
            self.hook(Result(
                seq=message["seq"], frame_id=frame.frame_id, t_capture_ns=frame.t_capture_ns,
                t_publish_ns=message["t_publish_ns"], t_camera_ns=message["t_camera_ns"], camera=message["camera"],
                keypoints=keypoints, neural=neural, dropped=message["dropped"], **predicted,
            ))
        latency_ms = (message["t_publish_ns"] - frame.t_capture_ns) / 1e6
        self.stats.frames += 1
        self.stats.latency.add(latency_ms)
        self.stats.window.add(latency_ms)
        self.stats.stages.add({
            "wait_ms": (picked_ns - frame.t_capture_ns) / 1e6,
            "overhead_ms": (message["t_publish_ns"] - picked_ns) / 1e6 - self.tracker.last_timings_ms["network"],
            **{f"{k}_ms": v for k, v in self.tracker.last_timings_ms.items()},
            "track_ms": (t1 - t0) / 1e6,
            "encode_ms": (t2 - t1) / 1e6,
            **({"forecast_ms": (t3 - t2) / 1e6} if self.forecasts else {}),
            "publish_ms": (t4 - t3) / 1e6,
        })
        # after the frame is out and timed: a preview never delays the message it shows
        self.previews.offer(frame.pixels, frame.frame_id, frame.t_capture_ns, message["camera"], message["keypoints"])

    def _forecast(self, t_capture_ns: int, keypoints: np.ndarray, neural: np.ndarray) -> dict:
        """Keypoints (likelihood kept) and activity extrapolated to capture + ``predict_ms``."""
        points, activity = self.forecasts
        t = t_capture_ns + self.predict_ns
        points.update(keypoints[:, :2], t_capture_ns)
        activity.update(neural, t_capture_ns)
        ahead = keypoints.copy()
        ahead[:, :2] = points.predict(t, (len(keypoints), 2))
        return {"keypoints_predicted": ahead, "neural_predicted": activity.predict(t), "t_predicted_ns": t}

    def _poll_capture(self, conn, proc, camera_ended: bool) -> bool:
        while conn.poll():
            msg = conn.recv()
            if msg[0] == "error":
                raise PipelineError(msg[1])
            if msg[0] == "ended":
                camera_ended = True
            if msg[0] in ("stalled", "resumed"):
                self.camera_stalled = msg[1] if msg[0] == "stalled" else None
        if not camera_ended and not proc.is_alive():
            raise PipelineError(f"capture process died (exit code {proc.exitcode})")
        return camera_ended

    # -- meta ---------------------------------------------------------------------------
    def meta(self) -> dict:
        enc = self.encoder.describe()
        return {
            "status": self.status,
            "bodyparts": list(BODYPARTS),
            "keypoints": {"layout": "[x, y, likelihood] per bodypart; x = column, y = row, frame pixels"},
            "camera": {**self._camera, "stalled": self.camera_stalled},
            "frame": {"height": self._camera.get("height"), "width": self._camera.get("width")},
            "tracker": self.tracker.describe(),
            "encoder": enc,
            "neural": self.encoder.output_meta(self._camera.get("fps")),
            "policy": self.cfg["stream"]["policy"],
            "prediction": None if not self.predict_ns else {
                "horizon_ms": self.cfg["stream"]["predict_ms"], "method": "kalman constant velocity",
                "q_over_r": self.forecasts[0].q},
            "hook": None if self.hook is None else self.hook.describe(),
            "recording": None if self.recording is None and self.video is None else {
                **({} if self.recording is None else {"path": str(self.recording.path), "dropped": self.publisher.tee_dropped}),
                "video": None if self.video is None else self.video.describe()},
            "stats": self.stats.summary(),
            "clock": {"monotonic_ns": time.monotonic_ns(), "time_ns": time.time_ns()},
        }
