"""An int8 tracker is calibrated on the frames of the source it will run on: a video file's own
frames, a live camera's first frames (here the pylon SDK's emulator), the synthetic face's for the
synthetic camera; the key names the source without opening it."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

os.environ["PYLON_CAMEMU"] = "2"  # before pypylon's transport layer factory is first used

from facestream.camera_adapters.base import CameraError  # noqa: E402
from facestream.camera_adapters.calibration import CameraCalibration, source_calibration  # noqa: E402
from facestream.camera_adapters.pylon import PylonSettings  # noqa: E402
from facestream.camera_adapters.registry import CameraOptions  # noqa: E402
from facestream.engines.quantize import VideoCalibration  # noqa: E402

EMULATED = "0815-0000"


def test_a_video_calibrates_on_its_own_frames(tmp_path):
    path = tmp_path / "rig.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (160, 120), isColor=False)
    for level in range(0, 250, 10):
        writer.write(np.full((120, 160), level, np.uint8))
    writer.release()
    source = source_calibration(f"video:{path}")
    assert source == VideoCalibration(path)
    frames = source.frames(5)
    # spread over the whole file: the first and the last frame's levels are both there
    levels = [int(np.median(f)) for f in frames]
    assert len(frames) == 5 and levels[0] < 15 and levels[-1] > 230


def test_a_live_camera_calibrates_on_its_first_frames():
    options = CameraOptions(pylon=PylonSettings(roi=(0, 0, 160, 120)))
    source = source_calibration(f"pylon:{EMULATED}", options)
    assert isinstance(source, CameraCalibration)
    assert source.key().startswith(f"camera-pylon:{EMULATED}-")
    assert source.key() == source_calibration(f"pylon:{EMULATED}", options).key()
    assert source.key() != source_calibration(f"pylon:{EMULATED}", CameraOptions()).key()  # another ROI
    frames = source.frames(4)
    assert len(frames) == 4 and all(f.dtype == np.uint8 and f.shape == (120, 160) for f in frames)
    # every second frame of the first eight: the emulator's test pattern moves between them
    assert len({f.tobytes() for f in frames}) == 4


def test_the_synthetic_camera_calibrates_on_the_synthetic_face():
    assert source_calibration("synthetic").key() == "synthetic"


def test_a_camera_that_gives_nothing_is_one_line(tmp_path):
    with pytest.raises(CameraError) as info:
        CameraCalibration("pylon:no-such-serial", CameraOptions()).frames(4)
    assert "\n" not in str(info.value)
