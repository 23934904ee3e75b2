"""Build a camera from a ``--camera`` spec string such as ``synthetic`` or ``video:rec.mp4``.

A spec is ``KIND`` or ``KIND:ARG``; it is split on the first colon only, so the argument (a
path, a serial number) may contain colons. Each kind is one entry in ``_KINDS``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from .base import Camera, CameraError
from .synthetic import SyntheticCamera
from .video import VideoFileCamera


@dataclass(frozen=True)
class CameraOptions:
    """The settings a spec's kind may use; each kind ignores those that do not apply to it."""

    width: int = 640
    height: int = 480
    fps: float = 50.0
    seed: int = 0
    frames: int = 0
    realtime: bool = True


@dataclass(frozen=True)
class _Kind:
    form: str  # how the spec is written, for help and error messages
    arg: Literal["none", "required", "optional"]
    build: Callable[[str, CameraOptions], Camera]


_KINDS: dict[str, _Kind] = {
    "synthetic": _Kind(
        "synthetic", "none",
        lambda _, o: SyntheticCamera(o.width, o.height, o.fps, o.seed, o.frames),
    ),
    "video": _Kind(
        "video:PATH", "required",
        lambda path, o: VideoFileCamera(path, realtime=o.realtime),
    ),
}

#: the accepted spec forms, for help text
SPEC_FORMS: tuple[str, ...] = tuple(k.form for k in _KINDS.values())


def make_camera(
    spec: str,
    *,
    width: int = 640,
    height: int = 480,
    fps: float = 50.0,
    seed: int = 0,
    frames: int = 0,
    realtime: bool = True,
) -> Camera:
    """The camera a spec names, not yet opened. Raises CameraError for a spec it cannot parse."""
    kind, arg = parse_spec(spec)
    return kind.build(arg, CameraOptions(width, height, fps, seed, frames, realtime))


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
    return kind, arg
