"""Offline tracking of a recorded video into Facemap's keypoints file.

Sessions recorded without live tracking (or re-analysed with a fine-tuned model) need the same
result Facemap's offline pipeline gives, in the file Facemap's GUI and its neural-prediction
code read. Frames are decoded with OpenCV and converted with ``cv2.COLOR_BGR2GRAY`` as Facemap's
``utils.get_batch_frames`` does (through ``VideoFileCamera``), tracked by the same ``Tracker``
the live pipeline uses, and written as ``/Facemap/<bodypart>/{x, y, likelihood}`` with
facestream's own columns and metadata in ``/facestream`` (``pose_h5.PoseFile``). The file is
written under a temporary name and moved into place, so a failed run leaves no partial file.

A damaged video (cut short, or with corrupted bytes) is tracked as far as it can be read: the
file is written with every frame that decoded (``frame_id`` is the frame's index in the video,
with a gap where frames were passed over and the video's timestamps say how many), then
``IncompleteVideoError`` says in one line how many of the container's frames could not be read
(``facestream track`` exits 1 with that line: a batch script must not take the file for a full
one). An output folder that cannot be written is a one-line error naming the folder, before the
model is loaded.
"""
from __future__ import annotations

import errno
import math
import os
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facestream.camera_adapters.base import CameraError
from facestream.camera_adapters.video import VideoFileCamera
from facestream.engines.quantize import VideoCalibration
from facestream.engines.tracker import Tracker, TrackerError, load_tracker
from facestream.streamer.pose_h5 import PoseFile

_COLUMNS = {"frame_id": ((), "int64"), "t_video_s": ((), "float64")}


@dataclass(frozen=True)
class TrackResult:
    path: Path
    frames: int
    seconds: float  # decoding, tracking and writing, without loading the model

    unreadable: int = 0  # frames of the video that could not be decoded (not in the file)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class IncompleteVideoError(CameraError):
    """The keypoints file was written, but frames of the video could not be read; ``result`` is
    what was written. The message is one line."""

    def __init__(self, message: str, result: TrackResult) -> None:
        super().__init__(message)
        self.result = result


def default_output(video: str | Path) -> Path:
    """Facemap's name for a video's keypoints: ``<stem>_FacemapPose.h5`` beside the video."""
    video = Path(video)
    return video.with_name(f"{video.stem}_FacemapPose.h5")


def track_video(
    video: str | Path,
    out: str | Path | None = None,
    model: str | Path | None = None,
    bbox: tuple[int, int, int, int] | None = None,
    engine: str = "onnx",
    batch: int = 1,
    threads: int = 0,
    progress: bool = True,
) -> TrackResult:
    """Track every frame of ``video`` and write the keypoints file (default ``default_output``).

    model, bbox, engine, threads: as ``engines.tracker.load_tracker``. batch: frames per network
    call (each frame is still normalized with its own percentiles, so results do not depend on
    it). Raises CameraError, TrackerError, ModelFileError or OSError with a one-line message, and
    IncompleteVideoError after writing the file when frames of the video could not be read.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise TrackerError(f"batch must be an integer >= 1, got {batch!r}")
    video = Path(video).expanduser()
    out = Path(out).expanduser() if out is not None else default_output(video)
    if not out.parent.is_dir():
        raise OSError(f"{out}: folder {out.parent} does not exist")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    _check_writable(tmp, out)
    # an int8 engine is calibrated on the video it tracks
    tracker = load_tracker(engine, model=model, bbox=bbox, threads=threads, calibration=VideoCalibration(video))
    camera = VideoFileCamera(video, realtime=False)
    camera.open()
    try:
        t0 = time.perf_counter()
        try:
            pose = PoseFile(tmp, _COLUMNS)
            try:
                frames = _track_frames(camera, tracker, pose, batch, camera.frame_count, progress)
                pose.set_attrs(**_metadata(video, tracker, camera))
            finally:
                pose.close()
            os.replace(tmp, out)
        except OSError as e:
            raise _write_error(e, out) from None
        seconds = time.perf_counter() - t0
    finally:
        camera.close()
        tmp.unlink(missing_ok=True)
    result = TrackResult(out, frames, seconds, camera.unreadable)
    if camera.unreadable_report:
        raise IncompleteVideoError(f"{camera.unreadable_report}; the {frames} frames read are tracked in {out}", result)
    return result


def _write_error(e: OSError, out: Path) -> OSError:
    """A one-line error naming the output's folder (or file), not the temporary file's name."""
    why = (e.strerror or str(e)).lower()
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        error = OSError(f"cannot write to folder {out.parent}: {why}")
    else:
        error = OSError(f"cannot write {out}: {why}")
    error.errno = e.errno
    return error


def _check_writable(tmp: Path, out: Path) -> None:
    """Create and remove the temporary file, so a folder that cannot be written is reported
    before the model is loaded and the video decoded."""
    try:
        tmp.unlink(missing_ok=True)  # PoseFile refuses to overwrite
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        tmp.unlink()
    except OSError as e:
        raise _write_error(e, out) from None


def _track_frames(
    camera: VideoFileCamera, tracker: Tracker, pose: PoseFile, batch: int, total: int | None, progress: bool
) -> int:
    pixels: list[np.ndarray] = []
    ids: list[int] = []
    times: list[float] = []
    done = 0
    with tqdm(total=total, unit="frame", desc="tracking", disable=not progress) as bar:
        while True:
            frame = camera.read()
            if frame is not None:
                pixels.append(frame.pixels)
                ids.append(frame.frame_id)
                times.append(frame.t_camera_ns / 1e9 if frame.t_camera_ns >= 0 else math.nan)
            if pixels and (len(pixels) == batch or frame is None):
                keypoints = tracker.infer(np.stack(pixels))
                pose.append(keypoints, {"frame_id": np.array(ids, np.int64), "t_video_s": np.array(times)})
                done += len(pixels)
                bar.update(len(pixels))
                pixels, ids, times = [], [], []
            if frame is None:
                return done


def _metadata(video: Path, tracker: Tracker, camera: VideoFileCamera) -> dict:
    described = tracker.describe()
    return {
        "model": {**tracker.model.identity(), "sha256": tracker.model.sha256},
        "engine": described["engine"],
        "runtime": described["runtime"],
        "bbox": described["bbox"],
        "facestream_version": version("facestream"),
        "source_video": str(video.resolve()),
        # the container's frame count, and the frames of it that could not be read (not in the file)
        "video_frames": camera.frame_count,
        "unreadable_frames": camera.unreadable,
    }
