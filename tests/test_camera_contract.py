"""The contract every camera meets, run over each kind the registry knows: the synthetic face, a
video file, pylon on the pylon SDK's camera emulator (see test_pylon.py), and a webcam where
this machine has one."""
from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

os.environ["PYLON_CAMEMU"] = "2"  # before pypylon's transport layer factory is first used

from facestream.camera_adapters import registry  # noqa: E402
from facestream.camera_adapters.base import Camera, CameraError  # noqa: E402
from facestream.camera_adapters.pylon import PylonSettings  # noqa: E402
from facestream.camera_adapters.registry import CameraOptions, make_camera  # noqa: E402
from facestream.camera_adapters.webcam import list_webcams  # noqa: E402
from helpers import VIDEO_FRAMES  # noqa: E402

EMULATED = "0815-0000"
LIVE = {"webcam"}  # reopened, a live picture does not show the same frame again


@cache
def _webcam_spec() -> str | None:
    found = list_webcams(range(4))
    return found[0]["spec"] if found else None


def _webcam(_: Path) -> Camera:
    spec = _webcam_spec()
    if spec is None:
        pytest.skip("no webcam on this machine")
    return make_camera(spec)


SOURCES: dict[str, Callable[[Path], Camera]] = {
    "synthetic": lambda _: make_camera("synthetic", CameraOptions(width=160, height=120, fps=0, seed=1, frames=9)),
    "video": lambda video: make_camera(f"video:{video}", CameraOptions(realtime=False)),
    "pylon": lambda _: make_camera(f"pylon:{EMULATED}", CameraOptions(pylon=PylonSettings(roi=(0, 0, 160, 120)))),
    "webcam": _webcam,
}
FINITE = {"synthetic": 9, "video": VIDEO_FRAMES}  # the kinds whose source ends, and its frames


def _make(kind: str, video: Path) -> Camera:
    if kind not in SOURCES:
        pytest.fail(f"camera kind {kind!r} is registered but has no source in the contract")
    return SOURCES[kind](video)


def _ids_add_up(frames: list) -> bool:
    """Each id is the previous one plus one plus what was dropped between them."""
    return all(b.frame_id == a.frame_id + 1 + b.dropped_before for a, b in zip(frames, frames[1:]))


@pytest.fixture(params=sorted(registry._KINDS))
def camera(request, video_file) -> Camera:
    """A camera of each registered kind, not yet opened."""
    return _make(request.param, video_file[0])


@pytest.fixture(params=sorted(FINITE))
def finite_camera(request, video_file) -> tuple[Camera, int]:
    return _make(request.param, video_file[0]), FINITE[request.param]


def test_contract_open_makes_shape_and_fps_known_and_frames_follow(camera):
    with camera as cam:
        h, w = cam.shape
        assert h > 0 and w > 0 and cam.fps >= 0
        assert cam.describe().items() >= {"name": cam.name, "height": h, "width": w, "fps": float(cam.fps)}.items()
        frames = [cam.read() for _ in range(5)]
    for f in frames:
        assert f.pixels.dtype == np.uint8 and f.pixels.shape == (h, w)
    assert _ids_add_up(frames)
    captures = [f.t_capture_ns for f in frames]
    assert all(b >= a for a, b in zip(captures, captures[1:]))


def test_contract_reads_a_finite_source_to_its_end(finite_camera):
    cam, n = finite_camera
    with cam:
        h, w = cam.shape
        assert cam.fps >= 0
        assert cam.describe() == {"name": cam.name, "height": h, "width": w, "fps": float(cam.fps)}
        frames = []
        while (f := cam.read()) is not None:
            frames.append(f)
            assert len(frames) <= n
        assert cam.read() is None
    assert len(frames) == n
    for f in frames:
        assert f.pixels.dtype == np.uint8 and f.pixels.shape == (h, w)
        assert f.dropped_before == 0
    ids = [f.frame_id for f in frames]
    assert ids[0] == 0 and all(b > a for a, b in zip(ids, ids[1:]))
    captures = [f.t_capture_ns for f in frames]
    assert all(b >= a for a, b in zip(captures, captures[1:]))


def test_contract_close_is_safe_twice_and_read_needs_open(camera):
    cam = camera
    cam.close()
    with pytest.raises(CameraError, match="before open"):
        cam.read()
    cam.open()
    assert cam.read() is not None
    cam.close()
    cam.close()
    with pytest.raises(CameraError, match="before open"):
        cam.read()


def test_contract_reopen_starts_again(camera):
    cam = camera
    with cam:
        shape = cam.shape
        first = cam.read()
        cam.read()
    with cam:
        assert cam.shape == shape
        again = [cam.read() for _ in range(3)]
    assert again[0].frame_id == 0 and _ids_add_up(again)
    if cam.name not in LIVE:
        assert np.array_equal(first.pixels, again[0].pixels)
