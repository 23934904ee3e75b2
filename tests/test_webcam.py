"""Webcams through OpenCV. The machines that run these tests have no webcam, so what is tested
here is the spec, the registry and how a missing device is reported: once, in one line."""
from __future__ import annotations

import subprocess
import sys

import pytest

from facestream.camera_adapters.base import CameraError
from facestream.camera_adapters.registry import make_camera
from facestream.camera_adapters.webcam import WebcamCamera, list_webcams

CLI = [sys.executable, "-m", "facestream.streamer.cli"]
ABSENT = 63  # no machine has this many video devices


def test_spec_names_the_index():
    cam = make_camera("webcam:2")
    assert isinstance(cam, WebcamCamera) and cam.index == 2 and cam.name == "webcam"


@pytest.mark.parametrize("spec", ["webcam", "webcam:", "webcam:first", "webcam:-1", "webcam:1.5"])
def test_bad_specs_are_refused_in_one_line(spec):
    with pytest.raises(CameraError) as err:
        make_camera(spec)
    assert "\n" not in str(err.value) and "webcam:INDEX" in str(err.value)


def test_a_missing_device_is_one_line_and_opencv_stays_quiet(capfd):
    cam = WebcamCamera(ABSENT)
    with pytest.raises(CameraError) as err:
        cam.open()
    assert str(err.value) == f"webcam:{ABSENT}: no camera at index {ABSENT} (`facestream cameras` lists those found)"
    with pytest.raises(CameraError, match="before open"):
        cam.read()
    cam.close()
    assert list_webcams(range(ABSENT, ABSENT + 2)) == []
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def test_run_with_a_missing_webcam_fails_in_one_line():
    r = subprocess.run([*CLI, "run", "--camera", f"webcam:{ABSENT}", "--frames", "1", "--quiet"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if "error" in line.lower() or "warn" in line.lower()]
    assert errors == [f"facestream: error: webcam:{ABSENT}: no camera at index {ABSENT} (`facestream cameras` lists those found)"]
