"""Write a synthetic session to disk: a video, its true keypoints and the behaviour behind them.

Training a tracker, checking one, and fitting a keypoints-to-neural encoder all need a
recording whose truth is known. This renders the synthetic camera's frames as fast as it can
(no pacing) and stamps them at the nominal frame rate, as a camera running at that rate would.

Files written into the output folder:

- ``synthetic.avi``: MJPG, grayscale, the nominal frame rate.
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
    ``facestream.camera_adapters.face_behaviour`` for units).
  - attributes on the root: ``fps``, ``seed``, ``width``, ``height``, ``frames``, ``bodyparts``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import h5py
import numpy as np
from tqdm import tqdm

from facestream.camera_adapters.synthetic import LATENT_NAMES, SyntheticCamera
from facestream.engines.bodyparts import BODYPARTS, N_KEYPOINTS
from facestream.streamer.config import ConfigError

VIDEO_NAME = "synthetic.avi"
POSE_NAME = "synthetic_FacemapPose.h5"
_JPEG_QUALITY = 95


@dataclass(frozen=True)
class Session:
    """What was written: the two files and the number of frames."""

    video: Path
    pose: Path
    frames: int


def write_session(
    out_dir: str | Path, frames: int, *, seed: int = 0, fps: float = 50.0, width: int = 640,
    height: int = 480, progress: bool = True,
) -> Session:
    """Render ``frames`` synthetic frames into ``out_dir`` (created if missing).

    Raises ConfigError for frames < 1 or fps <= 0, OSError when the folder or a file cannot be
    written, CameraError for a frame size the camera refuses.
    """
    if frames < 1:
        raise ConfigError(f"frames must be at least 1, not {frames}")
    if fps <= 0:
        raise ConfigError(f"fps must be positive, not {fps}")
    camera = SyntheticCamera(width, height, fps=fps, seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    video_path, pose_path = out / VIDEO_NAME, out / POSE_NAME

    writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height), False)
    if not writer.isOpened():
        raise OSError(f"cannot write a video to {video_path}")
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, _JPEG_QUALITY)
    truth = np.zeros((frames, N_KEYPOINTS, 3), np.float32)
    latents = np.zeros((frames, len(LATENT_NAMES)), np.float64)
    try:
        for k in tqdm(range(frames), desc="simulate", unit="frame", disable=not progress):
            pixels, truth[k] = camera.render(k)
            writer.write(pixels)
            lat = camera.latents(k)
            latents[k] = [lat[name] for name in LATENT_NAMES]
    finally:
        writer.release()

    frame_id = np.arange(frames, dtype=np.int64)
    with h5py.File(pose_path, "w") as f:
        f.attrs.update(fps=fps, seed=seed, width=width, height=height, frames=frames, bodyparts=list(BODYPARTS))
        for i, name in enumerate(BODYPARTS):
            g = f.create_group(f"Facemap/{name}")
            g["x"], g["y"], g["likelihood"] = truth[:, i, 0], truth[:, i, 1], truth[:, i, 2]
        g = f.create_group("facestream")
        g["frame_id"] = frame_id
        g["t_ns"] = np.round(frame_id * (1e9 / fps)).astype(np.int64)
        g["visible"] = truth[:, :, 2].astype(np.uint8)
        g = f.create_group("latents")
        for i, name in enumerate(LATENT_NAMES):
            g[name] = latents[:, i]
    return Session(video_path, pose_path, frames)
