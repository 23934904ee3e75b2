"""Settings: ``configs/default.toml`` is both the documentation and the schema.

Every key of the default file is a setting; its default value fixes the setting's type. A
user's file and command-line flags are merged over the defaults and then checked, so an
unknown key, a wrong type or a value out of range is refused with one line naming it.
"""
from __future__ import annotations

import copy
import re
from importlib.resources import files
from pathlib import Path
from typing import Any, Callable

from facestream.camera_adapters.base import CameraError
from facestream.camera_adapters.pylon import TRIGGER_PATTERN
from facestream.camera_adapters.registry import SPEC_FORMS, parse_spec
from facestream.engines.engine_names import ENGINES

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

Config = dict[str, dict[str, Any]]


class ConfigError(ValueError):
    """A setting is unknown or has a bad value; the message is one line."""


_ENDPOINT = re.compile(r"^(tcp://[^:/\s]+:\d{1,5}|ipc://\S+)$")


def _camera_ok(specs: list) -> bool:
    try:
        for spec in specs:
            parse_spec(spec)
    except (CameraError, AttributeError):
        return False
    return bool(specs)


def _bbox_ok(v: list) -> bool:
    if not v:
        return True
    if len(v) != 4 or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        return False
    r1, r2, c1, c2 = v
    return 0 <= r1 < r2 and 0 <= c1 < c2


def _roi_ok(v: list) -> bool:
    if not v:
        return True
    if len(v) != 4 or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        return False
    return v[0] >= 0 and v[1] >= 0 and v[2] >= 1 and v[3] >= 1


# Range and choice checks beyond the type; each returns True when the value is acceptable.
_CHECKS: dict[tuple[str, str], tuple[Callable[[Any], bool], str]] = {
    ("camera", "spec"): (_camera_ok, " or ".join(SPEC_FORMS) + ", or a list of them"),
    ("camera", "names"): (lambda v: all(isinstance(n, str) and n and "/" not in n for n in v), "a list of non-empty names without '/'"),
    ("camera", "sync_ms"): (lambda v: 0 <= v <= 1000, "0..1000 milliseconds"),
    ("camera", "stall_after"): (lambda v: 0.05 <= v <= 3600, "0.05..3600 seconds"),
    ("camera", "width"): (lambda v: 16 <= v <= 8192, "16..8192"),
    ("camera", "height"): (lambda v: 16 <= v <= 8192, "16..8192"),
    ("camera", "fps"): (lambda v: 0 <= v <= 10000, "0..10000"),
    ("camera", "frames"): (lambda v: v >= 0, ">= 0"),
    ("camera", "loop"): (lambda v: 0 <= v <= 10000, "0..10000 frames"),
    ("buffer", "slots"): (lambda v: 2 <= v <= 100000, "2..100000"),
    ("tracker", "engine"): (lambda v: v in ENGINES, " or ".join(f'"{e}"' for e in ENGINES)),
    ("tracker", "bbox"): (_bbox_ok, "[] or [row1, row2, col1, col2] with row1 < row2, col1 < col2, all >= 0"),
    ("tracker", "threads"): (lambda v: 0 <= v <= 256, "0..256"),
    ("stream", "policy"): (lambda v: v in ("latest", "every"), '"latest" or "every"'),
    ("stream", "publish"): (lambda v: bool(_ENDPOINT.match(v)), "tcp://HOST:PORT or ipc://PATH"),
    ("stream", "meta_interval"): (lambda v: 0.01 <= v <= 60, "0.01..60 seconds"),
    ("stream", "send_hwm"): (lambda v: v >= 1, ">= 1"),
    ("stream", "wait_subscribers"): (lambda v: v >= 0, ">= 0"),
    ("stream", "encoding"): (lambda v: v in ("msgpack", "json"), '"msgpack" or "json"'),
    ("stream", "predict_ms"): (lambda v: 0 <= v <= 1000, "0..1000 milliseconds"),
    ("hook", "target"): (lambda v: not v or (":" in v and all(v.rpartition(":")[::2])), "module:function or path/to/file.py:function"),
    ("hook", "budget_ms"): (lambda v: 0 < v <= 10000, "more than 0, at most 10000 milliseconds"),
    ("hook", "disable_after"): (lambda v: v >= 0, ">= 0"),
    ("record", "flush_interval"): (lambda v: 0.05 <= v <= 10, "0.05..10 seconds"),
    ("record", "video_codec"): (lambda v: v in ("ffv1", "mjpg"), '"ffv1" or "mjpg"'),
    ("pylon", "exposure_us"): (lambda v: 0 <= v <= 1e8, "0..1e8 microseconds"),
    ("pylon", "gain_db"): (lambda v: v == -1 or 0 <= v <= 100, "-1 or 0..100 dB"),
    ("pylon", "roi"): (_roi_ok, "[] or [offset_x, offset_y, width, height], offsets >= 0, sizes >= 1"),
    ("pylon", "pixel_format"): (lambda v: not v or v.isalnum(), 'a pixel format name such as "Mono8"'),
    ("pylon", "fps"): (lambda v: 0 <= v <= 100000, "0..100000"),
    ("pylon", "trigger"): (lambda v: bool(TRIGGER_PATTERN.match(v)), '"", "off" or "line1".."line4" with ":rising", ":falling" or ":any"'),
    ("pylon", "buffers"): (lambda v: 2 <= v <= 1000, "2..1000"),
    ("monitor", "host"): (lambda v: bool(v.strip()) and not any(c.isspace() for c in v), "an address such as 127.0.0.1"),
    ("monitor", "port"): (lambda v: 0 <= v <= 65535, "0..65535"),
    ("monitor", "preview_fps"): (lambda v: 0 <= v <= 30, "0..30"),
    ("monitor", "preview_width"): (lambda v: 32 <= v <= 4096, "32..4096"),
    ("run", "frames"): (lambda v: v >= 0, ">= 0"),
    ("run", "duration"): (lambda v: v >= 0, ">= 0"),
    ("run", "status_interval"): (lambda v: v >= 0, ">= 0"),
}


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


def defaults() -> Config:
    cfg = _read_toml(default_config_path())
    cfg["camera"]["spec"] = [cfg["camera"]["spec"]]  # one camera or several: always a list inside
    return cfg


def _type_name(v: Any) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list"}[type(v)]


def _coerce(section: str, key: str, value: Any, default: Any, source: str) -> Any:
    name = f"[{section}] {key}"
    if (section, key) == ("camera", "spec") and isinstance(value, str):
        value = [value]
    ok = isinstance(value, type(default)) and not (isinstance(value, bool) and not isinstance(default, bool))
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(f"{source}: {name} must be {_type_name(default)}, got {value!r}")
    check = _CHECKS.get((section, key))
    if check and not check[0](value):
        raise ConfigError(f"{source}: {name} = {value!r} is not valid (expected {check[1]})")
    return value


def merge(base: Config, overrides: dict, source: str) -> Config:
    """A new config: ``overrides`` ({section: {key: value}}) checked and laid over ``base``."""
    merged = copy.deepcopy(base)
    reference = defaults()
    if not isinstance(overrides, dict):
        raise ConfigError(f"{source}: expected sections of settings")
    for section, values in overrides.items():
        if section not in reference:
            raise ConfigError(f"{source}: unknown section [{section}] (known: {', '.join(reference)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{section}] must be a table of settings")
        for key, value in values.items():
            if key not in reference[section]:
                known = ", ".join(reference[section])
                raise ConfigError(f"{source}: unknown key [{section}] {key} (known: {known})")
            merged[section][key] = _coerce(section, key, value, reference[section][key], source)
    return merged


def _check_together(cfg: Config, source: str) -> None:
    """Checks across keys, on the merged settings."""
    s = cfg["stream"]
    if bool(s["curve_secret"]) != bool(s["curve_clients"]):
        given, missing = ("curve_secret", "curve_clients") if s["curve_secret"] else ("curve_clients", "curve_secret")
        raise ConfigError(f"{source}: [stream] {given} needs [stream] {missing} too "
                          "(CURVE encrypts and authenticates together: the server's secret key file and the clients folder)")


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> Config:
    """Defaults, then the file at ``path`` (if any), then ``overrides`` from the command line."""
    cfg = defaults()
    if path is not None:
        cfg = merge(cfg, _read_toml(Path(path)), str(path))
    if overrides:
        cfg = merge(cfg, overrides, "command line")
    _check_together(cfg, "command line" if path is None else str(path))
    return cfg
