"""One camera's share of a run: its capture process, ring buffer and reader, drop counts,
encoder state, forward prediction, pupil and motion SVD, publishing, preview and video recording.

A run has one ``CameraStream`` per camera; the tracker serves them all (frames of the same size
go through the network in one batch) and hands each stream its keypoints: ``step`` does the rest
of that frame's work. Everything that depends on a camera's own history lives here: the
streaming encoder's filter state and the Kalman forecasters must never mix two cameras.

Drop accounting, from the camera's first processed frame on: every frame it produced is either
processed or counted as dropped, by cause: ``camera`` (gaps in the camera's frame counter),
``overrun`` (overwritten in the ring before it was read, policy ``every``) and ``skipped``
(passed over for a newer frame, policy ``latest``).

A camera that delivers nothing and a pipeline that does not keep up are told apart: the camera's
side is the ring's write count (what capture delivered, seen whenever the tracker loop looks),
the pipeline's side the frames it processed. ``stall`` is the camera: capture said so, or the ring
got no new frame for ``stall_after`` seconds; ``behind`` is the pipeline: over the last
``_RATE_WINDOW_S`` it processed under ``_BEHIND`` of the frames the camera delivered.
"""
from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facestream.camera_adapters.base import Frame
from facestream.camera_adapters.registry import CameraOptions
from facestream.engines.encoder import StreamingEncoder
from facestream.engines.forecast import KalmanForecaster
from facestream.streamer.capture import capture_main
from facestream.streamer.hooks import HookRunner
from facestream.streamer.motion_svd import MotionSVD
from facestream.streamer.preview import Previews
from facestream.streamer.protocol import Result
from facestream.streamer.publisher import Publisher
from facestream.streamer.pupil import PupilFinder
from facestream.streamer.ringbuffer import RingBuffer, RingRead
from facestream.streamer.stats import LatencyHistogram
from facestream.streamer.video_recorder import VideoRecording

_OPEN_TIMEOUT_S = 30.0
_RATE_WINDOW_S = 2.0  # rates of the camera and of the pipeline over about this long
_RATE_MIN_S = 1.0  # ... once this much has been seen
_RATE_SAMPLE_S = 0.1
_BEHIND = 0.9  # the pipeline is behind when it processes fewer than this share of the camera's frames


class CaptureError(RuntimeError):
    """A camera cannot be opened or has failed; the message is one line."""


@dataclass
class Drops:
    camera: int = 0
    overrun: int = 0
    skipped: int = 0

    @property
    def total(self) -> int:
        return self.camera + self.overrun + self.skipped

    def __add__(self, other: "Drops") -> "Drops":
        return Drops(self.camera + other.camera, self.overrun + other.overrun, self.skipped + other.skipped)

    def as_dict(self) -> dict:
        return {"total": self.total, "camera": self.camera, "overrun": self.overrun, "skipped": self.skipped}


def per_camera_path(path: str, name: str, several: bool) -> str:
    """``path`` itself for a single camera; ``stem-NAME.suffix`` beside it when there are several."""
    if not several:
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}-{name}{p.suffix}"))


class CameraStream:
    def __init__(self, ctx, name: str, spec: str, options: CameraOptions, encoder: StreamingEncoder, predict_ns: int,
                 publisher: Publisher, previews: Previews, hook: HookRunner | None, priority: int = 0,
                 pupil: PupilFinder | None = None):
        self.name = name
        self.priority = priority  # the capture process's nice value
        self.spec = spec
        self.encoder = encoder
        self.predict_ns = predict_ns
        # one forecaster for the keypoints' x, y and one for the activity
        self.forecasts = (KalmanForecaster(), KalmanForecaster()) if predict_ns else None
        self.publisher = publisher
        self.previews = previews
        self.hook = hook
        self.pupil = pupil
        # set by the pipeline once the frame size is known; its state is this camera's previous frame
        self.motion: MotionSVD | None = None
        self.drops = Drops()
        self.frames = 0
        self.latency = LatencyHistogram()
        self.description: dict = {}
        self.stalled: str | None = None  # why the camera delivers no frames, while it does not
        self.ended = False
        self.ring: RingBuffer | None = None
        self.reader = None
        self.video: VideoRecording | None = None
        self.last_frame_at = time.monotonic()  # when the pipeline last took a frame
        self._written = 0  # the ring's write count when last looked at ...
        self.last_written_at = time.monotonic()  # ... and when it was first seen: the camera's last frame, to within a look
        self._rates: deque[tuple[float, int, int]] = deque()  # (time, written, processed) samples
        self._closing = False
        self._first: tuple[int, int] | None = None  # frame_id and ring index of the first processed frame
        self._last_index = -1
        self._conn, child = ctx.Pipe()
        self.stop = ctx.Event()
        self.proc = ctx.Process(target=capture_main, args=(spec, options, child, self.stop), name=f"facestream-capture-{name}",
                                daemon=True)

    # -- start and stop -----------------------------------------------------------------
    def wait_opened(self) -> tuple[int, int]:
        """Start capture and wait for the camera to open; its frame shape."""
        self.proc.start()
        if self.priority:
            try:
                os.setpriority(os.PRIO_PROCESS, self.proc.pid, self.priority)
            except PermissionError:
                raise CaptureError(
                    f"camera.priority {self.priority}: not permitted here (a nice value below 0 needs root, the CAP_SYS_NICE "
                    f"capability, or a nice limit for this user in /etc/security/limits.conf); set it to 0 or grant one"
                ) from None
        deadline = time.monotonic() + _OPEN_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._conn.poll(0.1):
                msg = self._conn.recv()
                if msg[0] == "error":
                    raise CaptureError(msg[1])
                self.description = {**msg[2], "name": self.name, "kind": msg[2].get("name")}
                return tuple(msg[1])
            if not self.proc.is_alive():
                raise CaptureError(f"camera {self.name}: capture exited (code {self.proc.exitcode}) before the camera opened")
        raise CaptureError(f"camera {self.spec!r} did not open within {_OPEN_TIMEOUT_S:.0f} s")

    def open_ring(self, shape: tuple[int, int], slots: int, ctx, video_path: str | None, codec: str) -> None:
        self.ring = RingBuffer.create(shape, slots)
        if video_path:  # its reader starts at the ring's first frame
            self.video = VideoRecording(ctx, video_path, codec)
            self.video.start(self.ring.name, self.description.get("fps", 0.0))

    def processes(self) -> dict[str, int]:
        """Role -> pid of the processes this camera runs (capture, video recorder)."""
        found = {f"capture-{self.name}": self.proc.pid}
        if self.video is not None:
            found[f"video-{self.name}"] = self.video.pid
        return found

    def go(self) -> None:
        """Capture starts writing; the reader made first sees its first frame."""
        self.reader = self.ring.reader()
        self._conn.send(self.ring.name)
        self.last_frame_at = self.last_written_at = time.monotonic()
        self._written = self.ring.written
        self._rates.clear()

    def close(self) -> None:
        """Stop capture, let the video recorder drain the ring, free the ring (raises the
        recorder's VideoRecordingError after freeing it)."""
        self.stop.set()
        self._closing = True  # the ring goes: what was last seen of it stands (report after the run)
        if self.proc.pid is not None:
            self.proc.join(2.0)
            if self.proc.is_alive():
                self.proc.terminate()
                self.proc.join(1.0)
        try:
            if self.video is not None:
                self.video.finish()  # the frames still in the ring, now that capture has stopped
        finally:
            if self.ring is not None:
                self.ring.close()
                self.ring.unlink()

    # -- frames ---------------------------------------------------------------------------
    def take(self, latest: bool) -> RingRead | None:
        """The newest (or next) frame if one is waiting, with the drops it reveals counted."""
        read = self.reader.latest(0) if latest else self.reader.next(0)
        if read is None:
            return None
        self.last_frame_at = time.monotonic()
        if self._first is None:  # this camera's run starts at its first processed frame
            self._first = (read.frame.frame_id, read.index)
        else:
            self.drops.overrun += read.missed
            self.drops.skipped += read.skipped
        self.drops.camera = (read.frame.frame_id - self._first[0]) - (read.index - self._first[1])
        self._last_index = read.index
        return read

    @property
    def unprocessed(self) -> int:
        """Frames in the ring after the last one processed (at the end of a run)."""
        return max(0, self.ring.written - 1 - self._last_index) if self._first is not None else 0

    @property
    def exhausted(self) -> bool:
        return self.reader is not None and self.reader.exhausted

    def poll(self) -> None:
        """Read what capture reported: an error raises CaptureError; end of stream, stall, resume."""
        while self._conn.poll():
            try:
                msg = self._conn.recv()
            except EOFError:  # capture has exited and said all it had to say
                break
            if msg[0] == "error":
                raise CaptureError(msg[1])
            if msg[0] == "ended":
                self.ended = True
            if msg[0] in ("stalled", "resumed"):
                self.stalled = msg[1] if msg[0] == "stalled" else None
        if not self.ended and not self.proc.is_alive():
            raise CaptureError(f"camera {self.name}: capture process died (exit code {self.proc.exitcode})")
        if self.video is not None:
            self.video.check()

    def step(self, frame: Frame, keypoints: np.ndarray) -> tuple[dict, dict[str, float]]:
        """The rest of one tracked frame's work: pupil and motion SVD, encode, forecast, publish,
        run the hook, count it, and offer it as a preview last (a preview never delays the message
        or the hook). The message as published, and the milliseconds each step took."""
        pupil, motion, measure_ms = self._measure(frame, keypoints)
        t1 = time.perf_counter_ns()
        neural = self.encoder.step(keypoints)
        t2 = time.perf_counter_ns()
        predicted = self._forecast(frame.t_capture_ns, keypoints, neural)
        t3 = time.perf_counter_ns()
        message = self.publisher.publish_frame({
            "frame_id": frame.frame_id,
            "t_capture_ns": frame.t_capture_ns,
            "t_camera_ns": frame.t_camera_ns if frame.t_camera_ns >= 0 else None,
            "camera": self.name,
            "keypoints": keypoints.tolist(),
            "neural": neural.tolist(),
            "dropped": self.drops.total,
            **{k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in predicted.items()},
            **({} if pupil is None else {"pupil": pupil}),
            **({} if motion is None else {"motion_svd": motion.tolist()}),
        })
        t4 = time.perf_counter_ns()
        if self.hook is not None:
            self.hook(Result(
                seq=message["seq"], frame_id=frame.frame_id, t_capture_ns=frame.t_capture_ns,
                t_publish_ns=message["t_publish_ns"], t_camera_ns=message["t_camera_ns"], camera=self.name,
                keypoints=keypoints, neural=neural, dropped=message["dropped"], **predicted,
                pupil=pupil, motion_svd=motion,
            ))
        self.frames += 1
        self.latency.add((message["t_publish_ns"] - frame.t_capture_ns) / 1e6)
        self.previews.offer(frame.pixels, frame.frame_id, frame.t_capture_ns, self.name, message["keypoints"])
        stages = {**measure_ms, "encode_ms": (t2 - t1) / 1e6, **({"forecast_ms": (t3 - t2) / 1e6} if predicted else {}),
                  "publish_ms": (t4 - t3) / 1e6}
        return message, stages

    def _measure(self, frame: Frame, keypoints: np.ndarray) -> tuple[dict | None, np.ndarray | None, dict[str, float]]:
        """Facemap's classic outputs of this frame: the pupil (a ``pupil`` field) and the motion
        SVD (None until its components are ready), each None where it is off, and the
        milliseconds each took."""
        pupil = motion = None
        ms = {}
        if self.pupil is not None:
            t0 = time.perf_counter_ns()
            pupil = self.pupil.find(frame.pixels, keypoints).as_message()
            ms["pupil_ms"] = (time.perf_counter_ns() - t0) / 1e6
        if self.motion is not None:
            t0 = time.perf_counter_ns()
            motion = self.motion.step(frame.pixels, frame.t_capture_ns)
            ms["motion_svd_ms"] = (time.perf_counter_ns() - t0) / 1e6
        return pupil, motion, ms

    def _forecast(self, t_capture_ns: int, keypoints: np.ndarray, neural: np.ndarray) -> dict:
        """Keypoints (likelihood kept) and activity extrapolated to capture + the horizon."""
        if self.forecasts is None:
            return {}
        points, activity = self.forecasts
        t = t_capture_ns + self.predict_ns
        points.update(keypoints[:, :2], t_capture_ns)
        activity.update(neural, t_capture_ns)
        ahead = keypoints.copy()
        ahead[:, :2] = points.predict(t, (len(keypoints), 2))
        return {"keypoints_predicted": ahead, "neural_predicted": activity.predict(t), "t_predicted_ns": t}

    def observe(self) -> None:
        """Look at what the camera has delivered (the ring's write count) and what the pipeline
        has processed; cheap, called whenever the loop reports."""
        if self.ring is None or self.reader is None or self._closing:
            return
        now = time.monotonic()
        written = self.ring.written
        if written != self._written:
            self._written, self.last_written_at = written, now
        if not self._rates or now - self._rates[-1][0] >= _RATE_SAMPLE_S:
            self._rates.append((now, written, self.frames))
            while len(self._rates) > 2 and now - self._rates[1][0] >= _RATE_WINDOW_S:
                self._rates.popleft()

    def rates(self) -> tuple[float, float] | None:
        """(camera, pipeline) frames per second over the last couple of seconds; None until
        enough has been seen."""
        self.observe()
        if len(self._rates) < 2 or self._rates[-1][0] - self._rates[0][0] < _RATE_MIN_S:
            return None
        (t0, w0, f0), (t1, w1, f1) = self._rates[0], self._rates[-1]
        return (w1 - w0) / (t1 - t0), (f1 - f0) / (t1 - t0)

    def stall(self, stall_s: float) -> str | None:
        """Why this camera delivers no frames now, or None: what capture reported (a camera
        being reopened), else no new frame in the ring for more than ``stall_s`` seconds. A
        pipeline that is slow to take the frames is not a stall (``behind``)."""
        if self.stalled or self.reader is None or self.ended:
            return self.stalled
        self.observe()
        quiet = time.monotonic() - self.last_written_at
        return f"no frame for {quiet:.1f} s" if quiet > stall_s else None

    def behind(self, stall_s: float) -> str | None:
        """Why the pipeline does not keep up with this camera, or None: it processed fewer than
        ``_BEHIND`` of the frames the camera delivered lately (the rest skipped, overrun or still
        waiting in the ring)."""
        if self.reader is None or self.ended or self.stall(stall_s):
            return None
        rates = self.rates()
        if rates is None:
            return None
        camera, pipeline = rates
        if camera <= 0 or pipeline >= _BEHIND * camera:
            return None
        return f"pipeline {pipeline:.0f} frames/s < camera {camera:.0f}"

    def report(self, stall_s: float) -> dict:
        """This camera for ``meta`` and the run's summary: what it is, whether it delivers, its counts."""
        return {
            **self.description,
            "stalled": self.stall(stall_s),
            "behind": self.behind(stall_s),
            "rates_fps": None if (r := self.rates()) is None else {"camera": round(r[0], 1), "pipeline": round(r[1], 1)},
            "frames": self.frames,
            "dropped": self.drops.as_dict(),
            "latency_ms": {k: v for k, v in self.latency.summary().items() if k in ("p50", "p99", "max")},
            "video": None if self.video is None else self.video.describe(),
            "motion_svd": None if self.motion is None else self.motion.describe(),
        }
