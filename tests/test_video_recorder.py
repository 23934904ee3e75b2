"""The video recorder: its own process and reader of the ring buffer, a real video file (FFV1 is
lossless, so frames are compared pixel for pixel), its frames file, and drops that add up."""
from __future__ import annotations

import csv
import json
import multiprocessing as mp
import subprocess
import sys

import cv2
import numpy as np
import pytest

from facestream.camera_adapters.base import Frame
from facestream.camera_adapters.synthetic.camera import SyntheticCamera
from facestream.streamer.ringbuffer import RingBuffer
from facestream.streamer.video_recorder import CSV_COLUMNS, VideoRecording, VideoRecordingError, check_video_path

CLI = [sys.executable, "-m", "facestream.streamer.cli"]
SHAPE = (240, 320)


def _pixels(frame_id: int) -> np.ndarray:
    """Noise no codec can squeeze (so encoding is slow) that identifies its frame."""
    return np.random.default_rng(frame_id).integers(0, 256, SHAPE, dtype=np.uint8)


def _rows(video) -> list[dict]:
    with open(f"{video}.frames.csv") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        return [{k: int(v) for k, v in r.items()} for r in reader]


def _video_frames(video) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    frames = []
    while (got := cap.read())[0]:
        frames.append(cv2.cvtColor(got[1], cv2.COLOR_BGR2GRAY))
    cap.release()
    return frames


def test_a_reader_too_slow_for_the_camera_counts_what_it_lost(tmp_path):
    """A 4-slot ring written in a burst: the recorder is lapped over and over. Every frame written
    to the ring is in the video or counted as the recorder's loss; frame id gaps the camera
    caused are told apart from the recorder's own."""
    ring = RingBuffer.create(SHAPE, slots=4)
    video = tmp_path / "burst.mkv"
    recording = VideoRecording(mp.get_context("spawn"), str(video))
    camera_gaps = {50, 51, 120}  # frame ids the "camera" lost
    ids = [i for i in range(400) if i not in camera_gaps]
    try:
        recording.start(ring.name, 100.0)
        for previous, i in zip([-1, *ids], ids):
            ring.write(Frame(_pixels(i), i, 1000 + i, 7 * i, i - previous - 1))
        ring.mark_ended()
        recording.finish()
    finally:
        ring.close()
        ring.unlink()
    rows, frames = _rows(video), _video_frames(video)
    assert len(frames) == len(rows) == recording.frames
    assert recording.dropped > 0, "the recorder must have been lapped"
    assert len(rows) + recording.dropped == len(ids)  # written + lost = produced into the ring
    assert sum(r["recorder_dropped_before"] for r in rows) == recording.dropped
    assert rows[-1]["frame_id"] == ids[-1], "what was left in the ring at the end is written"
    for a, b in zip(rows, rows[1:]):
        assert b["frame_id"] - a["frame_id"] - 1 == b["dropped_before"]
    camera_lost = sum(r["dropped_before"] - r["recorder_dropped_before"] for r in rows[1:])
    assert camera_lost == len([g for g in camera_gaps if rows[0]["frame_id"] < g < rows[-1]["frame_id"]])
    for row, pixels in zip(rows, frames):
        i = row["frame_id"]
        assert (row["t_capture_ns"], row["t_camera_ns"]) == (1000 + i, 7 * i)
        assert np.array_equal(pixels, _pixels(i))


def test_mjpg_writes_every_frame_near_the_original(tmp_path):
    ring = RingBuffer.create(SHAPE, slots=64)
    video = tmp_path / "small.avi"
    recording = VideoRecording(mp.get_context("spawn"), str(video), codec="mjpg")
    camera = SyntheticCamera(SHAPE[1], SHAPE[0], fps=0, seed=4)
    try:
        recording.start(ring.name, 0.0)
        for k in range(20):
            ring.write(Frame(camera.render(k)[0], k, k))
        recording.finish()
    finally:
        ring.close()
        ring.unlink()
    rows, frames = _rows(video), _video_frames(video)
    assert [r["frame_id"] for r in rows] == list(range(20)) and recording.dropped == 0
    for k, pixels in enumerate(frames):
        assert np.abs(pixels.astype(int) - camera.render(k)[0]).mean() < 5  # JPEG on sensor noise


def test_existing_or_unwritable_paths_are_refused_in_one_line(tmp_path):
    taken = tmp_path / "taken.mkv"
    taken.write_bytes(b"")
    csv_taken = tmp_path / "other.mkv"
    (tmp_path / "other.mkv.frames.csv").write_text("")
    for path, words in [(taken, "already exists"), (csv_taken, "frames.csv already exists"),
                        (tmp_path / "clip.mp4", ".mkv or .avi"), (tmp_path / "no" / "v.mkv", "does not exist")]:
        with pytest.raises(VideoRecordingError) as err:
            check_video_path(str(path))
        assert "\n" not in str(err.value) and words in str(err.value)
    assert taken.read_bytes() == b""
    r = subprocess.run([*CLI, "run", "--record-video", str(taken), "--frames", "1", "--quiet"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip() == f"facestream: error: {taken} already exists: choose a new file name (nothing was overwritten)"


def test_run_records_the_synthetic_cameras_frames_exactly(tmp_path, endpoint):
    video = tmp_path / "run.mkv"
    r = subprocess.run([*CLI, "run", "--fps", "25", "--frames", "25", "--policy", "every", "--publish", endpoint,
                        "--record-video", str(video), "--json", "--quiet"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    rows, frames = _rows(video), _video_frames(video)
    assert len(frames) == len(rows) >= summary["frames"] == 25
    camera = SyntheticCamera(640, 480, fps=25, seed=0)
    for row in rows[:: max(1, len(rows) // 6)]:
        assert np.array_equal(frames[rows.index(row)], camera.render(row["frame_id"])[0])
    dropped = sum(r["recorder_dropped_before"] for r in rows)
    assert f"video {video}: {len(rows)} frames, {dropped} dropped by the video recorder" in r.stderr
