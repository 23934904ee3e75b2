"""The camera registry: a ``--camera`` spec to an unopened camera, or a one-line error."""
from __future__ import annotations

import pytest

from facestream.camera_adapters.base import CameraError
from facestream.camera_adapters.registry import SPEC_FORMS, CameraOptions, make_camera
from facestream.camera_adapters.synthetic.camera import SyntheticCamera
from facestream.camera_adapters.video import VideoFileCamera
from helpers import VIDEO_FRAMES, read_all


def test_registry_builds_each_kind(video_file):
    cam = make_camera("synthetic", CameraOptions(width=320, height=240, fps=30, seed=2, frames=3))
    assert isinstance(cam, SyntheticCamera) and cam.shape == (240, 320) and cam.fps == 30
    assert len(read_all(cam)) == 3

    path = video_file[0]
    assert ":" in path.name
    cam = make_camera(f"video:{path}", CameraOptions(realtime=False))
    assert isinstance(cam, VideoFileCamera) and cam.path == path and not cam.realtime
    assert len(read_all(cam)) == VIDEO_FRAMES
    assert SPEC_FORMS[:2] == ("synthetic", "video:PATH")


@pytest.mark.parametrize("spec", ["webcam0", "", "synthetic:3", "video:", "pylonx:12"])
def test_registry_rejects_bad_specs_in_one_line(spec):
    with pytest.raises(CameraError) as err:
        make_camera(spec)
    message = str(err.value)
    assert "\n" not in message
    if spec in ("webcam0", "", "pylonx:12"):
        assert all(form in message for form in SPEC_FORMS)


def test_registry_builds_rig_cameras_without_opening_them():
    from facestream.camera_adapters.pylon import PylonCamera, PylonSettings
    from facestream.camera_adapters.webcam import WebcamCamera

    first = make_camera("pylon")
    assert isinstance(first, PylonCamera) and first.serial == "" and first.settings == PylonSettings()
    chosen = make_camera("pylon:40012345", CameraOptions(pylon=PylonSettings(roi=(0, 0, 320, 240), trigger="line1", buffers=8)))
    assert chosen.serial == "40012345"
    assert chosen.settings == PylonSettings(roi=(0, 0, 320, 240), trigger="line1", buffers=8)
    webcam = make_camera("webcam:1")
    assert isinstance(webcam, WebcamCamera) and webcam.index == 1
    assert SPEC_FORMS[2:] == ("pylon[:SERIAL]", "webcam:INDEX")


def test_unpaced_flag_sets_video_files_to_decode_speed():
    from facestream.streamer.cli.common import overrides
    from facestream.streamer.config import load_config

    assert load_config(overrides=overrides(realtime=False)).camera.realtime is False
    assert load_config(overrides=overrides(realtime=None)).camera.realtime is True
