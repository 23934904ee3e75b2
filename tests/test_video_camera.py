"""Video files: every frame in order, in grayscale, at the file's rate or as fast as it decodes."""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from facestream.camera_adapters.base import CameraError
from facestream.camera_adapters.video import VideoFileCamera
from helpers import VIDEO_FPS, VIDEO_FRAMES, VIDEO_SIZE, write_video


def test_video_delivers_every_written_frame_in_grayscale(video_file):
    path, written = video_file
    with VideoFileCamera(path, realtime=False) as cam:
        assert cam.shape == (VIDEO_SIZE[1], VIDEO_SIZE[0])
        assert cam.fps == pytest.approx(VIDEO_FPS)
        frames = list(iter(cam.read, None))
    assert [f.frame_id for f in frames] == list(range(VIDEO_FRAMES))
    expected_ns = [k * 1e9 / VIDEO_FPS for k in range(VIDEO_FRAMES)]
    assert [f.t_camera_ns for f in frames] == pytest.approx(expected_ns, abs=1e6)
    gray = [cv2.cvtColor(w, cv2.COLOR_BGR2GRAY).astype(np.float32) for w in written]
    for f in frames:
        errors = [np.abs(f.pixels.astype(np.float32) - g).mean() for g in gray]
        assert errors[f.frame_id] < 6, "codec loss only"
        assert int(np.argmin(errors)) == f.frame_id
    # grayscale as Facemap converts it, not another channel mix
    blue_only = np.abs(frames[0].pixels.astype(np.float32) - written[0][:, :, 0]).mean()
    assert blue_only > 3 * np.abs(frames[0].pixels.astype(np.float32) - gray[0]).mean()


def test_video_realtime_paces_at_the_file_rate(video_file):
    with VideoFileCamera(video_file[0], realtime=True) as cam:
        t0 = time.monotonic()
        n = len(list(iter(cam.read, None)))
        elapsed = time.monotonic() - t0
    assert n == VIDEO_FRAMES
    expected = (VIDEO_FRAMES - 1) / VIDEO_FPS
    assert expected - 0.02 < elapsed < expected + 0.5


def test_video_loop_keeps_counting(video_file):
    with VideoFileCamera(video_file[0], realtime=False, loop=True) as cam:
        frames = [cam.read() for _ in range(2 * VIDEO_FRAMES + 3)]
    ids = [f.frame_id for f in frames]
    assert ids == list(range(len(frames)))
    times = [f.t_camera_ns for f in frames]
    assert all(b > a for a, b in zip(times, times[1:]))
    assert np.array_equal(frames[0].pixels, frames[VIDEO_FRAMES].pixels)


def _one_line_naming(err: CameraError, path: Path) -> None:
    message = str(err)
    assert "\n" not in message and str(path) in message


def test_video_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.avi"
    with pytest.raises(CameraError) as err:
        VideoFileCamera(missing).open()
    _one_line_naming(err.value, missing)

    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video\n" * 200)
    with pytest.raises(CameraError) as err:
        VideoFileCamera(garbage).open()
    _one_line_naming(err.value, garbage)

    empty = tmp_path / "empty.avi"
    write_video(empty, [])
    if not empty.exists():
        empty.write_bytes(b"")
    with pytest.raises(CameraError) as err:
        VideoFileCamera(empty).open()
    _one_line_naming(err.value, empty)
