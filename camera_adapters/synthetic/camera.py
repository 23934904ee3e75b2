"""A synthetic rig camera: an infrared mouse face in profile whose 15 Facemap keypoints and
behaviour are known.

It lets the whole pipeline run, be timed and be checked for accuracy without a camera or a
video, and it makes labelled training frames: every frame carries the true keypoints, and
:meth:`SyntheticCamera.latents` gives the behaviour behind them (whisking, sniffing, pupil,
blinks, licking, grooming, head motion, illumination). Three parts can each be deepened on
their own: face_behaviour (what the mouse does), face_model (where everything is) and
face_renderer (how it looks). Everything is deterministic for a seed: frame ``k`` depends only
on the seed, the frame size, ``k`` and the frame rate.
"""
from __future__ import annotations

import time

import numpy as np

from ..base import Camera, CameraError, Frame
from .face_behaviour import LATENT_NAMES
from .face_model import FaceModel
from .face_renderer import FaceRenderer

__all__ = ["LATENT_NAMES", "SyntheticCamera", "UNPACED_TIME_BASE_FPS"]

#: the frame rate that sets the face's time axis when the camera is unpaced (fps=0)
UNPACED_TIME_BASE_FPS = 50.0


class SyntheticCamera(Camera):
    """A drawn mouse face with its true keypoints, paced like a free-running camera.

    Frame ``k`` is due at ``open + k / fps``. A read that comes one or more whole frame periods
    late gets the newest frame whose time has come; the ones skipped are counted in
    ``dropped_before`` and their ids are never delivered. ``fps=0`` delivers frames as fast as
    they are read and never drops; the face then moves at ``UNPACED_TIME_BASE_FPS``.
    ``frames > 0`` ends the stream after frame id ``frames - 1``: delivered plus dropped
    frames add up to ``frames``. ``frames=0`` never ends.

    ``loop > 0`` draws frames ``0 .. loop - 1`` once, at ``open()``, and then shows frame
    ``k % loop`` as frame ``k`` (ids and timestamps still count every frame). Drawing costs
    about 3 ms of CPU per 640x480 frame; a loop costs almost nothing per frame, as a real
    camera's DMA does, so that a benchmark measures the pipeline and not the drawing.
    """

    name = "synthetic"

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        fps: float = 50.0,
        seed: int = 0,
        frames: int = 0,
        loop: int = 0,
    ) -> None:
        if width < 64 or height < 48:
            raise CameraError(f"synthetic camera: {width}x{height} is too small (at least 64x48)")
        if fps < 0 or frames < 0 or seed < 0 or loop < 0:
            raise CameraError("synthetic camera: fps, seed, frames and loop must not be negative")
        self._width, self._height, self._fps = int(width), int(height), float(fps)
        self._frames = int(frames)
        self._loop = int(loop)
        self._looped: list[tuple[np.ndarray, np.ndarray]] = []
        self.model = FaceModel(self._width, self._height, int(seed))
        self._renderer: FaceRenderer | None = None
        self._t_open_ns: int | None = None
        self._next = 0

    @property
    def shape(self) -> tuple[int, int]:
        return self._height, self._width

    @property
    def fps(self) -> float:
        return self._fps

    def open(self) -> None:
        if self._renderer is None:
            self._renderer = FaceRenderer(self.model)
        if self._loop and not self._looped:
            self._looped = [self.render(k) for k in range(self._loop)]
        self._next = 0
        self._t_open_ns = time.monotonic_ns()

    def close(self) -> None:
        self._t_open_ns = None

    def time_of(self, frame_id: int) -> float:
        """The face's time in seconds at frame ``frame_id``."""
        return frame_id / (self._fps or UNPACED_TIME_BASE_FPS)

    def render(self, frame_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Pixels and true keypoints (15, 3) [x, y, visible] of frame ``frame_id``, with no
        pacing (needs no open())."""
        if self._looped:
            return self._looped[frame_id % self._loop]
        if self._renderer is None:
            self._renderer = FaceRenderer(self.model)
        pose = self.model.pose(self.time_of(frame_id))
        return self._renderer.render(pose, frame_id), pose.keypoints

    def pupil(self, frame_id: int) -> tuple[float, float, float]:
        """The true pupil of frame ``frame_id``: its centre x (column), y (row) and radius, in
        frame pixels (the lids may cover part of it)."""
        pose = self.model.pose(self.time_of(frame_id))
        x, y = np.array(pose.eye.pupil_at) - self.model.margin + np.array(pose.shift)
        return float(x), float(y), float(pose.eye.pupil_r)

    def latents(self, frame_id: int) -> dict[str, float]:
        """The behaviour behind frame ``frame_id``, keyed by ``LATENT_NAMES`` (see face_behaviour)."""
        return self.model.latents(self.time_of(frame_id))

    def read(self) -> Frame | None:
        if self._t_open_ns is None:
            raise CameraError("synthetic camera: read() before open()")
        k = self._next
        if self._frames and k >= self._frames:
            return None
        if self._fps > 0:
            period_ns = 1e9 / self._fps
            elapsed = time.monotonic_ns() - self._t_open_ns
            k = max(k, int(elapsed // period_ns))
            if self._frames:
                k = min(k, self._frames - 1)
            t_camera_ns = round(k * period_ns)
            pixels, truth = self.render(k)
            wait_ns = self._t_open_ns + t_camera_ns - time.monotonic_ns()
            if wait_ns > 0:
                time.sleep(wait_ns / 1e9)
        else:
            pixels, truth = self.render(k)
            t_camera_ns = time.monotonic_ns() - self._t_open_ns
        dropped, self._next = k - self._next, k + 1
        return Frame(pixels, k, time.monotonic_ns(), t_camera_ns, dropped, truth)
