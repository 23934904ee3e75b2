"""Build a camera from a ``--camera`` spec string such as ``synthetic``, ``video:rec.mp4`` or
``pylon:40012345``.

A spec is ``KIND`` or ``KIND:ARG``; it is split on the first colon only, so the argument (a
path, a serial number) may contain colons. Each kind is one entry in ``_KINDS``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

from .base import Camera, CameraError
from .pylon import PylonCamera, PylonSettings
from .video import VideoFileCamera
from .webcam import WebcamCamera


@dataclass(frozen=True)
class CameraOptions:
    """The settings a spec's kind may use; each kind ignores those that do not apply to it."""

    width: int = 640
    height: int = 480
    fps: float = 50.0
    seed: int = 0
    frames: int = 0
    loop: int = 0
    realtime: bool = True
    pylon: PylonSettings = field(default_factory=PylonSettings)


@dataclass(frozen=True)
class _Kind:
    form: str  # how the spec is written, for help and error messages
    arg: Literal["none", "required", "optional"]
    build: Callable[[str, CameraOptions], Camera]
    arg_ok: Callable[[str], bool] = lambda _: True


def _synthetic(_: str, o: CameraOptions) -> Camera:
    # the simulator is imported only when a run asks for it: the live path stands without it
    from .synthetic.camera import SyntheticCamera

    return SyntheticCamera(o.width, o.height, o.fps, o.seed, o.frames, o.loop)


_KINDS: dict[str, _Kind] = {
    "synthetic": _Kind("synthetic", "none", _synthetic),
    "video": _Kind(
        "video:PATH", "required",
        lambda path, o: VideoFileCamera(path, realtime=o.realtime),
    ),
    "pylon": _Kind(
        "pylon[:SERIAL]", "optional",
        lambda serial, o: PylonCamera(serial, o.pylon),
    ),
    "webcam": _Kind(
        "webcam:INDEX", "required",
        lambda index, o: WebcamCamera(int(index)),
        arg_ok=lambda index: index.strip().isdigit(),
    ),
}

#: the accepted spec forms, for help text
SPEC_FORMS: tuple[str, ...] = tuple(k.form for k in _KINDS.values())


def make_camera(spec: str, options: CameraOptions = CameraOptions()) -> Camera:
    """The camera a spec names, not yet opened. Raises CameraError for a spec it cannot parse."""
    kind, arg = parse_spec(spec)
    return kind.build(arg, options)


def default_calibration():
    """The frames that calibrate an int8 tracker when the user names no video of the rig: the
    synthetic face's (a ``quantize.CalibrationSource``; the simulator is imported only here)."""
    from .synthetic.sampling import SyntheticCalibration

    return SyntheticCalibration()


def parse_spec(spec: str) -> tuple[_Kind, str]:
    """The kind and argument of a spec; CameraError with a one-line reason if it is malformed."""
    name, colon, arg = spec.partition(":")
    kind = _KINDS.get(name.strip().lower())
    accepted = ", ".join(SPEC_FORMS)
    if kind is None:
        raise CameraError(f"unknown camera {spec!r}: use one of {accepted}")
    if kind.arg == "none" and colon:
        raise CameraError(f"camera {spec!r} takes no argument: write {kind.form}")
    if kind.arg == "required" and not arg:
        raise CameraError(f"camera {spec!r} needs an argument: write {kind.form}")
    if arg and not kind.arg_ok(arg):
        raise CameraError(f"camera {spec!r}: {arg!r} is not valid here: write {kind.form}")
    return kind, arg
