"""Basler cameras through pypylon, exercised on the pylon SDK's own camera emulator.

The pypylon wheel carries the pylon runtime and its emulator: with PYLON_CAMEMU=N set before
pylon's transport layer factory first runs, N emulated cameras appear (serials 0815-0000, ...).
An emulated camera plays a folder of images in name order, so synthetic faces whose true
keypoints are known can go through the real pylon grab path and the whole pipeline. The contract
every camera meets is tested in test_camera_contract.py; here is what is pylon's own.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

os.environ["PYLON_CAMEMU"] = "2"  # before pypylon's transport layer factory is first used

from facestream.camera_adapters.base import CameraError, CameraStalled  # noqa: E402
from facestream.camera_adapters.pylon import PylonCamera, PylonSettings, list_cameras  # noqa: E402
from facestream.camera_adapters.registry import make_camera  # noqa: E402
from facestream.camera_adapters.synthetic.camera import SyntheticCamera  # noqa: E402
from facestream.streamer.client import Subscriber  # noqa: E402
from facestream.streamer.config import load_config  # noqa: E402

CLI = [sys.executable, "-m", "facestream.streamer.cli"]
EMULATED = "0815-0000"
PLAYBACK_FRAMES = 8
GUID_LINE = "# {05D8C294-F295-4dfb-9D01-096BD04049F4}"  # the first line pylon wants in a features file


def _read(cam: PylonCamera, n: int) -> list:
    return [cam.read() for _ in range(n)]


def _frames_add_up(frames: list) -> None:
    """Each id is the previous one plus one plus what was dropped between them."""
    for a, b in zip(frames, frames[1:]):
        assert b.frame_id == a.frame_id + 1 + b.dropped_before


@pytest.fixture(scope="module")
def playback(tmp_path_factory):
    """A folder of synthetic 640x480 faces as PNGs, their true keypoints, and a features file
    that makes the emulator play them."""
    folder = tmp_path_factory.mktemp("playback")
    faces = SyntheticCamera(640, 480, fps=50, seed=3)
    images, truth = [], []
    for k in range(PLAYBACK_FRAMES):
        pixels, keypoints = faces.render(k)
        cv2.imwrite(str(folder / f"face_{k:03d}.png"), pixels)
        images.append(pixels)
        truth.append(keypoints)
    pfs = folder.parent / "playback.pfs"
    features = {"Width": 640, "Height": 480, "OffsetX": 0, "OffsetY": 0, "PixelFormat": "Mono8",
                "TestImageSelector": "Off", "ImageFileMode": "On", "ImageFilename": str(folder)}
    pfs.write_text(GUID_LINE + "\n" + "".join(f"{k}\t{v}\n" for k, v in features.items()))
    return pfs, images, np.array(truth)


def test_pylon_lists_the_emulated_cameras():
    cams = list_cameras()
    assert [c["serial"] for c in cams][:2] == [EMULATED, "0815-0001"]
    assert all(c["interface"] == "BaslerCamEmu" and c["spec"] == f"pylon:{c['serial']}" for c in cams)


def test_settings_are_applied_and_read_back():
    settings = {"roi": [16, 8, 320, 240], "exposure_us": 2500.0, "gain_db": 6.0, "pixel_format": "Mono12",
                "fps": 40.0, "trigger": "off", "buffers": 6}  # as the [pylon] section gives them
    cfg = load_config(overrides={"pylon": settings})
    with make_camera(f"pylon:{EMULATED}", cfg.camera.options(0, cfg.pylon)) as cam:
        assert isinstance(cam, PylonCamera)
        d = cam.describe()
        assert (d["height"], d["width"], d["fps"]) == (240, 320, 40.0)
        assert d["serial"] == EMULATED and d["pixel_format"] == "Mono12" and d["exposure_us"] == 2500.0
        assert d["gain_db"] == pytest.approx(6.0, abs=0.01) and d["trigger"] == "off"
        ic = cam.instant_camera
        assert (ic.OffsetX.GetValue(), ic.OffsetY.GetValue()) == (16, 8) and d["roi"] == [16, 8, 320, 240]
        assert ic.TriggerMode.GetValue() == "Off" and ic.ExposureAuto.GetValue() == "Off"
        assert (ic.MaxNumBuffer.GetValue(), ic.OutputQueueSize.GetValue()) == (6, 3)
        frame = cam.read()
    assert frame.pixels.dtype == np.uint8 and frame.pixels.shape == (240, 320)  # Mono12 converted
    assert frame.t_camera_ns == -1  # the emulator's TimeStamp is 0: no timestamp


def test_hardware_trigger_is_set_and_waiting_for_it_is_a_stall():
    with PylonCamera(EMULATED, PylonSettings(roi=(0, 0, 64, 48), trigger="line2:falling")) as cam:
        ic = cam.instant_camera
        assert (ic.TriggerSelector.GetValue(), ic.TriggerMode.GetValue()) == ("FrameStart", "On")
        assert (ic.TriggerSource.GetValue(), ic.TriggerActivation.GetValue()) == ("Line2", "FallingEdge")
        assert cam.fps == 0.0 and cam.describe()["trigger"] == "line2:falling"  # the trigger sets the rate
        with pytest.raises(CameraStalled, match="trigger"):
            cam.read()  # no edge ever comes on the emulator's line


def test_frame_ids_are_the_cameras_and_a_slow_consumer_counts_what_it_lost():
    with PylonCamera(EMULATED, PylonSettings(roi=(0, 0, 160, 120), fps=100.0, buffers=4)) as cam:
        frames = _read(cam, 10)
        time.sleep(0.3)  # about 30 frames at 100 frames/s; the output queue keeps 2
        frames += _read(cam, 10)
    _frames_add_up(frames)
    dropped = sum(f.dropped_before for f in frames[1:])
    assert dropped >= 10
    produced = frames[-1].frame_id - frames[0].frame_id + 1
    assert len(frames) + dropped == produced
    assert all(b.t_capture_ns >= a.t_capture_ns for a, b in zip(frames, frames[1:]))


def test_failed_transfers_show_as_dropped_frames():
    with PylonCamera(EMULATED, PylonSettings(roi=(0, 0, 160, 120), buffers=16)) as cam:
        before = _read(cam, 3)
        cam.instant_camera.ForceFailedBufferCount.SetValue(3)
        cam.instant_camera.ForceFailedBuffer.Execute()
        after = _read(cam, 12)
    frames = before + after
    _frames_add_up(frames)
    assert sum(f.dropped_before for f in after) >= 3


def test_an_unplugged_camera_is_reported_and_reopened_without_restarting():
    with PylonCamera("", PylonSettings(roi=(0, 0, 160, 120))) as cam:
        before = _read(cam, 5)
        cam.instant_camera.FirePnPCallback.Execute()  # the emulator's "device removed"
        stalls, after = [], []
        deadline = time.monotonic() + 10
        while len(after) < 5 and time.monotonic() < deadline:
            try:
                after.append(cam.read())
            except CameraStalled as e:
                stalls.append(str(e))
        assert cam.reconnects == 1 and cam.describe()["serial"] == EMULATED
    assert stalls and all("removed" in s and EMULATED in s for s in stalls)
    assert len(after) == 5
    ids = [f.frame_id for f in before + after]
    assert ids == sorted(set(ids))  # ids go on; none repeats after the camera came back


@pytest.mark.parametrize("settings, words", [
    (PylonSettings(pixel_format="Bogus"), ["pixel_format", "Bogus"]),
    (PylonSettings(roi=(0, 0, 9000, 100)), ["roi width"]),
    (PylonSettings(features_file="/nonexistent/cam.pfs"), ["features file", "/nonexistent/cam.pfs"]),
])
def test_bad_settings_are_one_line_errors(settings, words):
    with pytest.raises(CameraError) as err:
        PylonCamera(EMULATED, settings).open()
    message = str(err.value)
    assert "\n" not in message and "thrown" not in message and all(w in message for w in words)


def test_a_serial_not_found_names_those_found():
    with pytest.raises(CameraError) as err:
        PylonCamera("12345678").open()
    assert str(err.value) == f"pylon:12345678: no Basler camera with this serial number (found: {EMULATED}, 0815-0001)"


def test_emulator_plays_a_folder_of_faces_in_order(playback):
    pfs, images, _ = playback
    with PylonCamera("0815-0001", PylonSettings(features_file=str(pfs))) as cam:
        assert cam.shape == (480, 640)
        frames = _read(cam, PLAYBACK_FRAMES + 3)
    for f in frames:
        assert np.array_equal(f.pixels, images[f.frame_id % PLAYBACK_FRAMES])


def test_facestream_run_tracks_the_emulated_camera_and_records_its_video(playback, tmp_path, endpoint):
    """`facestream run --camera pylon`: the faces the emulator plays are tracked close to their
    true keypoints, and the video written beside has the frames, ids and drops that add up."""
    pfs, images, truth = playback
    config = tmp_path / "rig.toml"
    config.write_text(f'[pylon]\nfeatures_file = "{pfs}"\nfps = 20.0\n')
    video = tmp_path / "session.mkv"
    with Subscriber(endpoint) as sub:
        proc = subprocess.Popen(
            [*CLI, "run", "--camera", "pylon", "--config", str(config), "--publish", endpoint, "--frames", "12",
             "--policy", "every", "--wait-subscribers", "1", "--record-video", str(video), "--json", "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYLON_CAMEMU": "1"},
        )
        frames, metas = [], []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (metas and metas[-1]["status"] in ("stopped", "failed")):
            m = sub.recv(timeout=0.5)
            if m is not None:
                (frames if m.topic == "frame" else metas).append(m.data)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["frames"] == len(frames) == 12
    camera = metas[-1]["camera"]
    assert camera["kind"] == "pylon" and camera["serial"] == EMULATED and camera["stalled"] is None
    errors = []
    for f in frames:
        t = truth[f["frame_id"] % PLAYBACK_FRAMES]
        k = np.array(f["keypoints"])
        seen = t[:, 2] > 0
        errors += list(np.hypot(*(k[seen, :2] - t[seen, :2]).T))
    assert np.mean(errors) < 3.0, f"mean error {np.mean(errors):.2f} px"

    with open(f"{video}.frames.csv") as fh:
        rows = [{k: int(v) for k, v in r.items()} for r in csv.DictReader(fh)]
    cap = cv2.VideoCapture(str(video))
    written = []
    while (got := cap.read())[0]:
        written.append(cv2.cvtColor(got[1], cv2.COLOR_BGR2GRAY))
    assert len(written) == len(rows) >= 12
    for row, pixels in zip(rows, written):
        assert np.array_equal(pixels, images[row["frame_id"] % PLAYBACK_FRAMES]), "FFV1 is lossless"
    for a, b in zip(rows, rows[1:]):
        assert b["frame_id"] - a["frame_id"] - 1 == b["dropped_before"] >= b["recorder_dropped_before"] >= 0
    assert {f["frame_id"] for f in frames} <= {r["frame_id"] for r in rows} | _lost_ids(rows)
    assert f"video {video}: {len(rows)} frames" in err


def _lost_ids(rows: list[dict]) -> set[int]:
    return {i for a, b in zip(rows, rows[1:]) for i in range(a["frame_id"] + 1, b["frame_id"])}


def test_cameras_command_lists_the_emulated_cameras():
    r = subprocess.run([*CLI, "cameras", "--webcams", "2"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYLON_CAMEMU": "2"})
    assert r.returncode == 0, r.stderr
    assert f"pylon:{EMULATED}" in r.stdout and "pylon:0815-0001" in r.stdout and "emulated" in r.stdout
    assert "Webcams (OpenCV, indices 0-1):" in r.stdout and r.stderr == ""
    listed = json.loads(subprocess.run([*CLI, "cameras", "--json", "--webcams", "0"], capture_output=True,
                                       text=True, timeout=60, env={**os.environ, "PYLON_CAMEMU": "1"}).stdout)
    assert [c["serial"] for c in listed["pylon"]] == [EMULATED] and listed["webcams"] == []


def test_cameras_command_says_when_pypylon_is_missing(tmp_path):
    blocked = tmp_path / "pypylon"
    blocked.mkdir()
    (blocked / "__init__.py").write_text("raise ImportError('pypylon is not installed here')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run([*CLI, "cameras", "--webcams", "1"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert "Basler cameras need pypylon: pip install pypylon" in r.stdout
    r = subprocess.run([*CLI, "run", "--camera", "pylon", "--frames", "1", "--quiet"], capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == "facestream: error: Basler cameras need pypylon: pip install pypylon"
