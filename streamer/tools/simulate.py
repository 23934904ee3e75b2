"""Write a synthetic session to disk: a video, its true keypoints and the behaviour behind them.

Training a tracker, checking one, and fitting a keypoints-to-neural encoder all need a
recording whose truth is known. This renders the synthetic camera's frames as fast as it can
(no pacing) and stamps them at the nominal frame rate, as a camera running at that rate would.

Files written into the output folder:

- ``synthetic.avi``: MJPG, grayscale, the nominal frame rate; not with ``video=False``
  (rendering is most of the time a session takes; the keypoints are the same).
- ``synthetic_FacemapPose.h5``, in the layout of Facemap's pose output so that its readers work:

  - ``/Facemap/<bodypart>/x``, ``y``, ``likelihood``: float32 (nframes,) for each of the 15
    bodyparts; x is the column and y the row in pixels; ``likelihood`` holds the true
    visibility, 1 or 0 (0: outside the frame or covered by the paw; the paw: 0 unless raised
    into view).
  - ``/facestream/frame_id``: int64 (nframes,); ``/facestream/t_ns``: int64 (nframes,), frame
    times in ns from the first frame, ``round(frame_id * 1e9 / fps)``;
    ``/facestream/visible``: uint8 (nframes, 15), the visibility in Facemap's bodypart order.
  - ``/latents/<name>``: float64 (nframes,) for each latent behaviour (whisking phase and
    amplitude, sniffing, pupil, blink, lick, grooming, head motion, illumination, ...; see
    ``facestream.camera_adapters.synthetic.face_behaviour`` for units).
  - ``/pupil/x``, ``y``, ``radius``: float64 (nframes,), the true pupil in frame pixels (the lids
    may cover part of it).
  - ``/facestream/motion_svd``: float32 (nframes, components), Facemap's motion SVD of the whole
    frame as ``facestream run`` computes it (binned ``MOTION_BIN``), its components learned from
    the first ``MOTION_LEARN_S`` seconds (at least components + 1 frames) and every frame then
    projected on them, the first frame given the second's values as Facemap does; with video
    only, and only when the session has more than components + 1 frames.
  - attributes on the root: ``fps``, ``seed``, ``width``, ``height``, ``frames``, ``bodyparts``.

- ``neural.npy``: float32 (neurons, samples), spike counts of a synthetic population driven by
  the face's latent behaviours, in bins ending at the sample times, at its own rate
  (``neural_rate``, 30 Hz by default), as an electrophysiology rig beside the camera would
  record them. ``population``: ``default``
  (``facestream.engines.training.synthetic_neurons``) or ``heldout``, the differently built
  population encoders are evaluated on (``facestream.engines.training.heldout_population``);
  either's seed is the face's.
- ``neural_t_ns.npy``: int64 (samples,), the neural sample times in ns on the frames' clock
  (the same zero as ``/facestream/t_ns``): sample ``k`` at ``(0.25 + k) / neural_rate`` s, a
  quarter period after the first frame, up to the last frame's time.

  Neither neural file is written with ``neurons=0``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import h5py
import numpy as np
from tqdm import tqdm

from facestream.camera_adapters.synthetic.camera import LATENT_NAMES, SyntheticCamera
from facestream.engines.bodyparts import BODYPARTS, N_KEYPOINTS
from facestream.engines.training.heldout_population import HeldOutPopulation
from facestream.engines.training.synthetic_neurons import NeuralPopulation, neural_times
from facestream.streamer.config import ConfigError
from facestream.streamer.motion_svd import MAX_LEARN_FRAMES, learn_components, spatial_bin

VIDEO_NAME = "synthetic.avi"
POSE_NAME = "synthetic_FacemapPose.h5"
NEURAL_NAME = "neural.npy"
NEURAL_TIMES_NAME = "neural_t_ns.npy"
_JPEG_QUALITY = 95
POPULATIONS = {"default": NeuralPopulation, "heldout": HeldOutPopulation}
MOTION_BIN = 4  # as [motion_svd] bin
MOTION_LEARN_S = 10.0  # as [motion_svd] learn_seconds


class _MotionSVD:
    """The whole session's motion SVD, fed one frame at a time: the first frames' motion energy
    is kept until the components are learned from it, then projected too."""

    def __init__(self, shape: tuple[int, int], frames: int, components: int, learn_frames: int):
        self.region = (0, shape[0], 0, shape[1])
        self.n, self.learn_frames = components, min(max(learn_frames, components + 1), MAX_LEARN_FRAMES, frames - 1)
        self.values = np.full((frames, components), np.nan, np.float32)
        self._previous: np.ndarray | None = None
        self._early: list[np.ndarray] = []
        self._fit: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, k: int, pixels: np.ndarray) -> None:
        binned = spatial_bin(pixels, self.region, MOTION_BIN)
        previous, self._previous = self._previous, binned
        if previous is None:
            return
        motion = np.abs(binned - previous)
        if self._fit is not None:
            mean, u = self._fit
            self.values[k] = (motion - mean) @ u
            return
        self._early.append(motion)
        if len(self._early) == self.learn_frames:
            early = np.stack(self._early)
            self._fit = mean, u = learn_components(early, self.n)
            self.values[1:1 + len(early)] = (early - mean) @ u
            self._early = []

    def result(self) -> np.ndarray:
        self.values[0] = self.values[1]
        return self.values


@dataclass(frozen=True)
class Session:
    """What was written: the files, the number of frames and of neurons (0: no neural files)."""

    video: Path | None
    pose: Path
    frames: int
    neural: Path | None = None
    neural_times: Path | None = None
    neurons: int = 0
    motion_svd: int = 0  # components of the motion SVD written (0: none)


def write_session(
    out_dir: str | Path, frames: int, *, seed: int = 0, fps: float = 50.0, width: int = 640,
    height: int = 480, neurons: int = 1000, neural_rate: float = 30.0, population: str = "default",
    video: bool = True, progress: bool = True, motion_components: int = 50,
) -> Session:
    """Render ``frames`` synthetic frames into ``out_dir`` (created if missing; with ``video``
    False only their keypoints and latents), with the activity of ``neurons`` neurons of
    ``population`` sampled at ``neural_rate`` Hz.

    Raises ConfigError for frames < 1, fps <= 0, neurons < 0, neural_rate <= 0 or an unknown
    population, ``motion_components`` components of the motion SVD with the video (0: none), OSError when
    the folder or a file cannot be written, CameraError for a frame size the camera refuses.
    """
    if frames < 1:
        raise ConfigError(f"frames must be at least 1, not {frames}")
    if fps <= 0:
        raise ConfigError(f"fps must be positive, not {fps}")
    if neurons < 0:
        raise ConfigError(f"neurons must not be negative, not {neurons}")
    if neural_rate <= 0:
        raise ConfigError(f"neural rate must be positive, not {neural_rate}")
    if motion_components < 0:
        raise ConfigError(f"motion SVD components must not be negative, not {motion_components}")
    if population not in POPULATIONS:
        raise ConfigError(f"population must be one of {', '.join(POPULATIONS)}, not {population!r}")
    camera = SyntheticCamera(width, height, fps=fps, seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    video_path, pose_path = (out / VIDEO_NAME if video else None), out / POSE_NAME

    writer = None
    if video_path is not None:
        writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height), False)
        if not writer.isOpened():
            raise OSError(f"cannot write a video to {video_path}")
        writer.set(cv2.VIDEOWRITER_PROP_QUALITY, _JPEG_QUALITY)
    truth = np.zeros((frames, N_KEYPOINTS, 3), np.float32)
    latents = np.zeros((frames, len(LATENT_NAMES)), np.float64)
    pupil = np.zeros((frames, 3), np.float64)
    motion = None
    if writer is not None and motion_components and frames > motion_components + 1:
        motion = _MotionSVD((height, width), frames, motion_components, round(MOTION_LEARN_S * fps))
    try:
        for k in tqdm(range(frames), desc="simulate", unit="frame", disable=not progress):
            if writer is None:
                truth[k] = camera.model.pose(camera.time_of(k)).keypoints
            else:
                pixels, truth[k] = camera.render(k)
                writer.write(pixels)
                if motion is not None:
                    motion.add(k, pixels)
            pupil[k] = camera.pupil(k)
            lat = camera.latents(k)
            latents[k] = [lat[name] for name in LATENT_NAMES]
    finally:
        if writer is not None:
            writer.release()

    frame_id = np.arange(frames, dtype=np.int64)
    with h5py.File(pose_path, "w") as f:
        f.attrs.update(fps=fps, seed=seed, width=width, height=height, frames=frames, bodyparts=list(BODYPARTS),
                       population=population)
        for i, name in enumerate(BODYPARTS):
            g = f.create_group(f"Facemap/{name}")
            g["x"], g["y"], g["likelihood"] = truth[:, i, 0], truth[:, i, 1], truth[:, i, 2]
        g = f.create_group("facestream")
        g["frame_id"] = frame_id
        g["t_ns"] = np.round(frame_id * (1e9 / fps)).astype(np.int64)
        g["visible"] = truth[:, :, 2].astype(np.uint8)
        if motion is not None:
            g["motion_svd"] = motion.result()
            g["motion_svd"].attrs.update(region=list(motion.region), bin=MOTION_BIN, learn_frames=motion.learn_frames)
        g = f.create_group("pupil")
        g["x"], g["y"], g["radius"] = pupil[:, 0], pupil[:, 1], pupil[:, 2]
        g = f.create_group("latents")
        for i, name in enumerate(LATENT_NAMES):
            g[name] = latents[:, i]
    n_motion = 0 if motion is None else motion_components
    if not neurons:
        return Session(video_path, pose_path, frames, motion_svd=n_motion)
    times_s = neural_times(camera.time_of(frames - 1), neural_rate, 0.25 / neural_rate)
    activity = np.zeros((neurons, 0), np.float32)
    if len(times_s) >= 2:  # counts need a bin: the spacing of two samples
        cells = POPULATIONS[population].create(neurons, seed)
        activity = cells.sample(camera.model.latents, times_s, np.random.default_rng([seed, 0x4E55, 1]))
    else:
        times_s = times_s[:0]
    neural_path, times_path = out / NEURAL_NAME, out / NEURAL_TIMES_NAME
    np.save(neural_path, activity)
    np.save(times_path, np.round(times_s * 1e9).astype(np.int64))
    return Session(video_path, pose_path, frames, neural_path, times_path, neurons, n_motion)
