"""Settings as frozen typed objects, one per section of ``configs/default.toml``.

The default file documents every setting and holds its default; the dataclasses below give each
setting its type and its check. ``load_config`` lays the user's file and then the command-line
flags over the defaults, checking each value once, where it is read, so an unknown key, a wrong
type or a value out of range is refused with one line naming it and where it came from. The
result is passed down as objects; code that needs other values makes a new object
(``dataclasses.replace``), it never edits one.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Callable

from facestream.camera_adapters.base import CameraError
from facestream.camera_adapters.pylon import PylonSettings
from facestream.camera_adapters.registry import SPEC_FORMS, CameraOptions, parse_spec
from facestream.engines import registry as engine_registry
from facestream.engines.preprocess import BboxError, check_bbox
from facestream.streamer.endpoints import FORMS as ENDPOINT_FORMS
from facestream.streamer.endpoints import endpoint_problem

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


class ConfigError(ValueError):
    """A setting is unknown or has a bad value; the message is one line."""


def setting(check: Callable[[Any], bool | str] | None = None, expect: str = "", **extra) -> Any:
    """A field with its check: ``check(value)`` is True when the value is good; False, or a reason
    as a string, when it is not (``expect`` says what is accepted)."""
    return field(metadata={"check": check, "expect": expect, **extra})


def _specs_ok(specs: tuple) -> bool:
    try:
        for spec in specs:
            parse_spec(spec)
    except CameraError:
        return False
    return bool(specs)


def _bbox_ok(value: tuple) -> bool | str:
    try:
        check_bbox(value or None)
    except BboxError as e:
        return str(e)
    return True


def _endpoint_ok(value: str) -> bool | str:
    problem = endpoint_problem(value)
    return True if problem is None else f"{problem}; expected {ENDPOINT_FORMS}"


@dataclass(frozen=True)
class CameraSettings:
    spec: tuple[str, ...] = setting(_specs_ok, " or ".join(SPEC_FORMS) + ", or a list of them", one_or_list=True)
    names: tuple[str, ...] = setting(lambda v: all(n and "/" not in n for n in v), "a list of non-empty names without '/'")
    sync_ms: float = setting(lambda v: 0 <= v <= 1000, "0..1000 milliseconds")
    stall_after: float = setting(lambda v: 0.05 <= v <= 3600, "0.05..3600 seconds")
    priority: int = setting(lambda v: -20 <= v <= 19, "-20..19 (a nice value)")
    width: int = setting(lambda v: 16 <= v <= 8192, "16..8192")
    height: int = setting(lambda v: 16 <= v <= 8192, "16..8192")
    fps: float = setting(lambda v: 0 <= v <= 10000, "0..10000")
    seed: int = setting()
    frames: int = setting(lambda v: v >= 0, ">= 0")
    loop: int = setting(lambda v: 0 <= v <= 10000, "0..10000 frames")
    realtime: bool = setting()

    @property
    def camera_names(self) -> tuple[str, ...]:
        """The names given, else cam0, cam1, ..."""
        return self.names or tuple(f"cam{i}" for i in range(len(self.spec)))

    def options(self, index: int, pylon: PylonSettings) -> CameraOptions:
        """What the ``index``-th camera's adapter is built with (each synthetic camera its own seed)."""
        return CameraOptions(self.width, self.height, self.fps, self.seed + index, self.frames, self.loop,
                             self.realtime, pylon)


@dataclass(frozen=True)
class BufferSettings:
    slots: int = setting(lambda v: 2 <= v <= 100000, "2..100000")


@dataclass(frozen=True)
class TrackerSettings:
    engine: str = setting(lambda v: v in engine_registry.NAMES, " or ".join(f'"{e}"' for e in engine_registry.NAMES))
    model: str = setting()
    bbox: tuple[int, ...] = setting(_bbox_ok)
    threads: int = setting(lambda v: 0 <= v <= 256, "0..256")
    calibration: str = setting()

    @property
    def crop(self) -> tuple[int, int, int, int] | None:
        """The bbox, or None for the whole frame."""
        return self.bbox or None  # type: ignore[return-value]


@dataclass(frozen=True)
class EncoderSettings:
    model: str = setting()


@dataclass(frozen=True)
class StreamSettings:
    policy: str = setting(lambda v: v in ("latest", "every"), '"latest" or "every"')
    publish: str = setting(_endpoint_ok)
    meta_interval: float = setting(lambda v: 0.01 <= v <= 60, "0.01..60 seconds")
    send_hwm: int = setting(lambda v: v >= 1, ">= 1")
    wait_subscribers: int = setting(lambda v: v >= 0, ">= 0")
    encoding: str = setting(lambda v: v in ("msgpack", "json"), '"msgpack" or "json"')
    predict_ms: float = setting(lambda v: 0 <= v <= 1000, "0..1000 milliseconds")
    curve_secret: str = setting()
    curve_clients: str = setting()


@dataclass(frozen=True)
class HookSettings:
    target: str = setting(lambda v: not v or (":" in v and all(v.rpartition(":")[::2])),
                          "module:function or path/to/file.py:function")
    budget_ms: float = setting(lambda v: 0 < v <= 10000, "more than 0, at most 10000 milliseconds")
    disable_after: int = setting(lambda v: v >= 0, ">= 0")


@dataclass(frozen=True)
class RecordSettings:
    path: str = setting()
    flush_interval: float = setting(lambda v: 0.05 <= v <= 10, "0.05..10 seconds")
    video: str = setting()
    video_codec: str = setting(lambda v: v in ("ffv1", "mjpg"), '"ffv1" or "mjpg"')


@dataclass(frozen=True)
class MonitorSettings:
    enabled: bool = setting()
    host: str = setting(lambda v: bool(v.strip()) and not any(c.isspace() for c in v), "an address such as 127.0.0.1")
    port: int = setting(lambda v: 0 <= v <= 65535, "0..65535")
    preview_fps: float = setting(lambda v: 0 <= v <= 30, "0..30")
    preview_width: int = setting(lambda v: 32 <= v <= 4096, "32..4096")


@dataclass(frozen=True)
class PupilSettings:
    enabled: bool = setting()
    region_scale: float = setting(lambda v: 0.3 <= v <= 2.0, "0.3..2.0")
    min_likelihood: float = setting(lambda v: 0 <= v <= 1, "0..1")
    smooth_px: float = setting(lambda v: 0 <= v <= 10, "0..10 pixels")


@dataclass(frozen=True)
class MotionSVDSettings:
    enabled: bool = setting()
    region: tuple[int, ...] = setting(_bbox_ok)
    bin: int = setting(lambda v: 1 <= v <= 64, "1..64")
    components: int = setting(lambda v: 1 <= v <= 1000, "1..1000")
    learn_seconds: float = setting(lambda v: 0 <= v <= 600, "0..600 seconds")
    load: str = setting()
    save: str = setting()

    @property
    def crop(self) -> tuple[int, int, int, int] | None:
        """The region, or None for the tracker's bbox (else the whole frame)."""
        return self.region or None  # type: ignore[return-value]


@dataclass(frozen=True)
class RunSettings:
    frames: int = setting(lambda v: v >= 0, ">= 0")
    duration: float = setting(lambda v: v >= 0, ">= 0")
    status_interval: float = setting(lambda v: v >= 0, ">= 0")


@dataclass(frozen=True)
class Settings:
    """Every setting of a run, section by section (the sections of ``configs/default.toml``)."""

    camera: CameraSettings
    pylon: PylonSettings
    buffer: BufferSettings
    tracker: TrackerSettings
    encoder: EncoderSettings
    stream: StreamSettings
    hook: HookSettings
    record: RecordSettings
    monitor: MonitorSettings
    pupil: PupilSettings
    motion_svd: MotionSVDSettings
    run: RunSettings

    def as_dict(self) -> dict:
        """Plain types, for a recording's metadata."""
        return dataclasses.asdict(self)


_SECTIONS: dict[str, type] = typing.get_type_hints(Settings)
_TYPE_NAMES = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}


def default_config_path() -> Path:
    return Path(str(files("facestream.configs").joinpath("default.toml")))


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: not UTF-8 text (byte {e.start})") from None


def _coerce(cls: type, key: str, value: Any, name: str, source: str) -> Any:
    """``value`` as the type of ``cls``'s field ``key``, checked; ConfigError naming it otherwise."""
    kind = typing.get_type_hints(cls)[key]
    spec = next(f for f in dataclasses.fields(cls) if f.name == key).metadata
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        if spec.get("one_or_list") and isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, item) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"{source}: {name} must be a list of {_TYPE_NAMES[item].split(' ', 1)[-1]}s, got {value!r}")
        value = tuple(value)
    elif kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigError(f"{source}: {name} must be {_TYPE_NAMES[kind]}, got {value!r}")
    check = spec.get("check")
    verdict = True if check is None else check(value)
    if verdict is not True:
        why = verdict if isinstance(verdict, str) else f"expected {spec['expect']}"
        raise ConfigError(f"{source}: {name} = {list(value) if isinstance(value, tuple) else value!r} is not valid ({why})")
    return value


def _lay_over(values: dict[str, dict], overrides: Any, source: str) -> None:
    """Check ``overrides`` ({section: {key: value}}) and lay them over ``values``."""
    if not isinstance(overrides, dict):
        raise ConfigError(f"{source}: expected sections of settings")
    for section, given in overrides.items():
        if section not in _SECTIONS:
            raise ConfigError(f"{source}: unknown section [{section}] (known: {', '.join(_SECTIONS)})")
        if not isinstance(given, dict):
            raise ConfigError(f"{source}: [{section}] must be a table of settings")
        cls = _SECTIONS[section]
        known = [f.name for f in dataclasses.fields(cls)]
        for key, value in given.items():
            if key not in known:
                raise ConfigError(f"{source}: unknown key [{section}] {key} (known: {', '.join(known)})")
            values[section][key] = _coerce(cls, key, value, f"[{section}] {key}", source)


def _check_together(cfg: Settings, source: str) -> None:
    """Checks across keys, on the merged settings."""
    s = cfg.stream
    if bool(s.curve_secret) != bool(s.curve_clients):
        given, missing = ("curve_secret", "curve_clients") if s.curve_secret else ("curve_clients", "curve_secret")
        raise ConfigError(f"{source}: [stream] {given} needs [stream] {missing} too "
                          "(CURVE encrypts and authenticates together: the server's secret key file and the clients folder)")
    names = cfg.camera.camera_names
    if len(names) != len(cfg.camera.spec) or len(set(names)) != len(names):
        raise ConfigError(f"{source}: [camera] names = {list(cfg.camera.names)} must name each of the "
                          f"{len(cfg.camera.spec)} cameras once")


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> Settings:
    """Defaults, then the file at ``path`` (if any), then ``overrides`` ({section: {key: value}})
    from the command line."""
    values: dict[str, dict] = {section: {} for section in _SECTIONS}
    _lay_over(values, _read_toml(default_config_path()), "default settings")
    if path is not None:
        _lay_over(values, _read_toml(Path(path)), str(path))
    if overrides:
        _lay_over(values, overrides, "command line")
    cfg = Settings(**{section: _SECTIONS[section](**given) for section, given in values.items()})
    _check_together(cfg, "command line" if path is None else str(path))
    return cfg


def defaults() -> Settings:
    """The settings of ``configs/default.toml`` alone."""
    return load_config()
