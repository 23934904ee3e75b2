"""Export a keypoints file (Facemap's h5 layout) to NWB, with the ndx-pose extension.

Labs archive and share sessions on DANDI in NWB; DeepLabCut and SLEAP write pose there with
ndx-pose. This reads a file that ``facestream run --record`` or ``facestream track`` wrote (or a
Facemap keypoints file: ``/Facemap/<bodypart>/{x, y, likelihood}`` alone) and writes:

- ``/processing/behavior/Skeletons/mouse_face``: the bodyparts (nodes) and a face graph (edges);
- ``/processing/behavior/FacemapPose``: a ``PoseEstimation`` linking the camera (a ``Device``)
  and the skeleton, with one ``PoseEstimationSeries`` per bodypart (x, y in frame pixels as
  ``data``, Facemap's likelihood as ``confidence``), its description naming the tracker's model
  and sha256 and the frames dropped;
- ``/processing/behavior/frame_id`` (and for a live recording ``dropped_frames`` and
  ``latency``): per-frame columns as ``TimeSeries``;
- ``/processing/behavior/predicted_neural_activity``: the encoder's output, where recorded;
- ``/processing/behavior/PupilTracking``: the pupil's ``area``, ``centre``, ``axes`` and
  ``valid`` as ``TimeSeries``, where recorded (NaN where no pupil was fitted);
- ``/processing/behavior/motion_svd``: the motion SVD, where recorded (NaN rows before its
  components were ready);
- ``/processing/behavior/frame_accounting``: a small table of frames recorded and dropped.

Times are session time: seconds from the first frame. A live recording's ``t_capture_ns`` is
``time.monotonic_ns()``; ``meta.clock`` (else ``run.clock``) pairs that clock with the wall clock,
which gives ``session_start_time``, the wall-clock time of the first frame. A tracked video has
only the video's own timestamps: its start is asked for (``session_start``).

Every dataset is read from the h5 file and written a buffer at a time (hdmf's
``GenericDataChunkIterator`` wrapped in ``H5DataIO``: chunked, gzip), so memory does not grow
with the recording. The file is written under a temporary name and moved into place: a failed
export leaves no partial file. Every refusal is an ``ExportError`` with a one-line message.
"""
from __future__ import annotations

import json
import math
import os
import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np

from facestream.engines.bodyparts import BODYPARTS

CHUNK_BYTES = 1 << 20  # about 1 MB per chunk of each dataset
BUFFER_CHUNKS = 8  # chunks read from the h5 file at a time
POSE_NAME = "FacemapPose"
SKELETON_NAME = "mouse_face"

# A face graph over Facemap's bodyparts: the eye's outline, the nose from the bridge to the mouth,
# the whiskers in a row. The paw stands alone.
FACE_EDGES = (
    ("eye(back)", "eye(top)"), ("eye(top)", "eye(front)"), ("eye(front)", "eye(bottom)"), ("eye(bottom)", "eye(back)"),
    ("eye(front)", "nosebridge"), ("nosebridge", "nose(top)"), ("nose(top)", "nose(tip)"), ("nose(tip)", "nose(r)"),
    ("nose(tip)", "nose(bottom)"), ("nose(bottom)", "mouth"), ("mouth", "lowerlip"),
    ("whisker(I)", "whisker(II)"), ("whisker(II)", "whisker(III)"),
)


class ExportError(Exception):
    """The export cannot be done; the message is one line."""


@dataclass
class SessionInfo:
    """What the NWB file needs and the recording does not hold."""

    session_description: str | None = None
    subject_id: str | None = None
    species: str | None = None
    sex: str | None = None
    age: str | None = None
    date_of_birth: str | None = None
    strain: str | None = None
    genotype: str | None = None
    subject_description: str | None = None
    experimenter: list[str] = field(default_factory=list)
    lab: str | None = None
    institution: str | None = None
    session_id: str | None = None
    identifier: str | None = None
    session_start: str | None = None
    keywords: list[str] = field(default_factory=list)

    def merged(self, **given: Any) -> "SessionInfo":
        """This information with the ``given`` values (None or empty: not given) in its place."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, value in given.items():
            if key not in values:
                raise ExportError(f"unknown metadata {key!r}")
            if value not in (None, "", (), []):
                values[key] = list(value) if isinstance(value, (list, tuple)) else value
        return SessionInfo(**values)


_TOML_KEYS = {
    "session": {"description": "session_description", "id": "session_id", "experimenter": "experimenter", "lab": "lab",
                "institution": "institution", "identifier": "identifier", "start": "session_start", "keywords": "keywords"},
    "subject": {"id": "subject_id", "species": "species", "sex": "sex", "age": "age", "date_of_birth": "date_of_birth",
                "strain": "strain", "genotype": "genotype", "description": "subject_description"},
}


def load_metadata(path: str | Path) -> SessionInfo:
    """The [session] and [subject] tables of a TOML file (docs/nwb.md)."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    path = Path(path).expanduser()
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise ExportError(f"cannot read metadata file {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ExportError(f"metadata file {path} is not valid TOML: {e}") from None
    values: dict[str, Any] = {}
    for table, value in doc.items():
        if table not in _TOML_KEYS or not isinstance(value, dict):
            raise ExportError(f"metadata file {path}: unknown table [{table}] (expected [session] and [subject])")
        for key, item in value.items():
            if key not in _TOML_KEYS[table]:
                raise ExportError(f"metadata file {path}: unknown key {key!r} in [{table}] "
                                  f"(known: {', '.join(_TOML_KEYS[table])})")
            name = _TOML_KEYS[table][key]
            if name in ("experimenter", "keywords"):
                item = [item] if isinstance(item, str) else item
                if not isinstance(item, list) or not all(isinstance(v, str) for v in item):
                    raise ExportError(f"metadata file {path}: [{table}] {key} must be a string or a list of strings")
            elif isinstance(item, (datetime,)) or type(item).__name__ in ("date", "datetime"):
                item = item.isoformat()
            elif not isinstance(item, str):
                raise ExportError(f"metadata file {path}: [{table}] {key} must be a string")
            values[name] = item
    return SessionInfo(**values)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    frames: int
    bodyparts: int
    neural: int  # columns of predicted activity written (0: none)
    session_start: datetime
    duration_s: float
    kind: str  # "live", "tracked" or "facemap"


def parse_start(text: str) -> datetime:
    """An ISO 8601 time with its time zone (``Z`` or an offset)."""
    t = text.strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    try:
        start = datetime.fromisoformat(t)
    except ValueError:
        raise ExportError(f"session start {text!r} is not an ISO 8601 time (e.g. 2026-12-05T09:30:00+01:00)") from None
    if start.tzinfo is None:
        raise ExportError(f"session start {text!r} has no time zone: add one (e.g. {text}+01:00, or Z for UTC)")
    return start


# -- reading the keypoints file ------------------------------------------------------------------
@dataclass
class _Source:
    """A keypoints file, open, as far as the export needs it."""

    f: h5py.File
    path: Path
    bodyparts: list[str]
    n: int
    kind: str
    attrs: dict
    own: h5py.Group | None  # /facestream

    def column(self, name: str) -> h5py.Dataset | None:
        return None if self.own is None or name not in self.own else self.own[name]


def _open_source(path: Path) -> _Source:
    if not path.exists():
        raise ExportError(f"recording {path} does not exist")
    if not path.is_file():
        raise ExportError(f"recording {path} is not a file")
    try:
        is_h5 = h5py.is_hdf5(path)
    except OSError as e:
        raise ExportError(f"cannot read recording {path}: {e.strerror or e}") from None
    if not is_h5:
        raise ExportError(f"recording {path} is not an HDF5 file (expected a facestream recording or a Facemap keypoints h5)")
    try:
        # no chunk cache: every chunk is read once, in order, in blocks of many chunks (with
        # HDF5's default of 1 MB per dataset, reading a 600,000-frame file grew the process by 170 MB)
        f = h5py.File(path, "r", rdcc_nbytes=0)
    except OSError as e:
        raise ExportError(f"cannot open recording {path}: {' '.join(str(e).split())[:200]}") from None
    try:
        return _read_layout(f, path)
    except BaseException:
        f.close()
        raise


def _read_layout(f: h5py.File, path: Path) -> _Source:
    not_layout = f"recording {path} is not a facestream recording or a Facemap keypoints file"
    group = f.get("Facemap")
    if not isinstance(group, h5py.Group) or not len(group):
        raise ExportError(f"{not_layout}: it has no /Facemap/<bodypart> groups")
    names = list(group.keys())
    bodyparts = [bp for bp in BODYPARTS if bp in names] + sorted(bp for bp in names if bp not in BODYPARTS)
    lengths = []
    for bp in bodyparts:
        for k in ("x", "y", "likelihood"):
            ds = group[bp].get(k) if isinstance(group[bp], h5py.Group) else None
            if not isinstance(ds, h5py.Dataset) or ds.ndim != 1 or ds.dtype.kind not in "fiu":
                raise ExportError(f"{not_layout}: /Facemap/{bp}/{k} is missing or not a 1-D numeric dataset")
            lengths.append(ds.shape[0])
    own = f.get("facestream")
    own = own if isinstance(own, h5py.Group) else None
    attrs: dict = {}
    kind = "facemap"
    if own is not None:
        for key, value in own.attrs.items():
            try:
                attrs[key] = json.loads(value)
            except (TypeError, ValueError):
                raise ExportError(f"{not_layout}: its /facestream attribute {key!r} is not JSON") from None
        for name, ds in own.items():
            if isinstance(ds, h5py.Dataset) and ds.ndim >= 1:
                lengths.append(ds.shape[0])
        kind = "live" if "t_capture_ns" in own else "tracked" if "t_video_s" in own else "facemap"
    n = min(lengths)
    if n == 0:
        raise ExportError(f"recording {path} holds no frames: nothing to export")
    return _Source(f, path, bodyparts, n, kind, attrs, own)


# -- chunked reading ----------------------------------------------------------------------------
def _iterator(read: Callable[[int, int], np.ndarray], n: int, width: int | None, dtype) -> Any:
    """``read(start, stop)`` rows as an hdmf chunk iterator: a buffer of chunks at a time."""
    from hdmf.data_utils import GenericDataChunkIterator

    dtype = np.dtype(dtype)
    row_bytes = dtype.itemsize * (width or 1)
    rows = max(1, min(n, CHUNK_BYTES // row_bytes))
    tail = () if width is None else (width,)

    class Rows(GenericDataChunkIterator):
        def __init__(self):
            super().__init__(chunk_shape=(rows, *tail), buffer_shape=(min(n, rows * BUFFER_CHUNKS), *tail))

        def _get_data(self, selection):
            block = np.asarray(read(selection[0].start, selection[0].stop), dtype=dtype)
            return block[(slice(None), *selection[1:])]

        def _get_maxshape(self):
            return (n, *tail)

        def _get_dtype(self):
            return dtype

    return Rows()


def _dataset(read: Callable[[int, int], np.ndarray], n: int, width: int | None, dtype) -> Any:
    from hdmf.backends.hdf5.h5_utils import H5DataIO

    return H5DataIO(data=_iterator(read, n, width, dtype), compression="gzip", compression_opts=4)


def _scan(read: Callable[[int, int], np.ndarray], n: int, step: int = 1 << 18):
    """Yield the column's blocks, ``step`` rows at a time."""
    for start in range(0, n, step):
        yield read(start, min(n, start + step))


# -- timing -------------------------------------------------------------------------------------
@dataclass
class _Timing:
    start: datetime
    read: Callable[[int, int], np.ndarray] | None  # session times (s) of rows; None: regular at ``rate``
    rate: float | None
    duration_s: float
    origin: str  # how the times and the start were found, for the descriptions


def _clock(attrs: dict) -> dict | None:
    for key in ("meta", "run"):
        clock = (attrs.get(key) or {}).get("clock") if isinstance(attrs.get(key), dict) else None
        if isinstance(clock, dict) and isinstance(clock.get("monotonic_ns"), int) and isinstance(clock.get("time_ns"), int):
            return clock
    return None


def _check_times(read, n: int, path: Path, what: str) -> None:
    last = -math.inf
    for block in _scan(read, n):
        if not np.all(np.isfinite(block)):
            raise ExportError(f"recording {path}: {what} has frames without a time; give --rate to time frames by frame id")
        if block[0] < last or np.any(np.diff(block) < 0):
            raise ExportError(f"recording {path}: {what} goes backwards; NWB timestamps must not decrease")
        last = block[-1]


def _timing(src: _Source, start_text: str | None, rate: float | None) -> _Timing:
    path, n = src.path, src.n
    given = parse_start(start_text) if start_text else None
    need_start = ("give --session-start (ISO 8601 with a time zone, e.g. 2026-12-05T09:30:00+01:00): the wall-clock "
                  "time of its first frame")
    if src.kind == "live":
        if rate is not None:
            raise ExportError(f"--rate is for files without timestamps; recording {path} has the capture time of every frame")
        t_capture = src.column("t_capture_ns")
        t0 = int(t_capture[0])

        def read(a, b):
            return (t_capture[a:b].astype(np.int64) - t0) / 1e9

        _check_times(read, n, path, "t_capture_ns")
        clock = _clock(src.attrs)
        if given is not None:
            start, origin = given, "session start as given (--session-start)"
        elif clock is not None:
            wall_ns = t0 + clock["time_ns"] - clock["monotonic_ns"]
            start = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=wall_ns // 1000)
            origin = ("session start = wall clock of the first frame's capture (t_capture_ns + meta.clock.time_ns - "
                      "meta.clock.monotonic_ns, to the microsecond)")
        else:
            raise ExportError(f"recording {path} has no clock in its metadata (meta.clock): {need_start}")
        times = "timestamps = (t_capture_ns - t_capture_ns of the first frame) / 1e9: seconds from the first frame's capture"
        return _Timing(start, read, None, float(read(n - 1, n)[0]), f"{times}; {origin}")
    if given is None:
        what = "a tracked video" if src.kind == "tracked" else "a keypoints file"
        raise ExportError(f"recording {path} is {what} with no wall clock: {need_start}")
    if rate is not None:
        if rate <= 0 or not math.isfinite(rate):
            raise ExportError(f"--rate must be a positive frame rate, got {rate}")
        frame_id = src.column("frame_id")
        if frame_id is None:
            return _Timing(given, None, rate, (n - 1) / rate,
                           f"frames at a regular {rate:g} frames/s (--rate), the first at 0 s; session start as given")
        f0 = int(frame_id[0])

        def read(a, b):
            return (frame_id[a:b].astype(np.int64) - f0) / rate

        _check_times(read, n, path, "frame_id")
        return _regular(_Timing(given, read, None, float(read(n - 1, n)[0]),
                                f"timestamps = (frame_id - first frame_id) / {rate:g} (--rate); session start as given"), n)
    if src.kind != "tracked":
        raise ExportError(f"recording {path} has no timestamps (no /facestream/t_capture_ns or t_video_s): give --rate, "
                          "its frame rate")
    t_video = src.column("t_video_s")
    v0 = float(t_video[0])
    if not math.isfinite(v0):
        raise ExportError(f"recording {path}: t_video_s has frames without a time; give --rate to time frames by frame id")

    def read(a, b):
        return t_video[a:b].astype(np.float64) - v0

    _check_times(read, n, path, "t_video_s")
    return _regular(_Timing(given, read, None, float(read(n - 1, n)[0]),
                            "timestamps = the video's own frame times (t_video_s) minus the first frame's; session start as given"), n)


def _regular(timing: _Timing, n: int, tolerance_s: float = 1e-6) -> _Timing:
    """Times that are a regular rate (within ``tolerance_s``) as that rate: NWB's best practice
    (nwbinspector's check_regular_timestamps) for a video's frames."""
    if n < 3 or timing.duration_s <= 0:
        return timing
    step = timing.duration_s / (n - 1)
    for start in range(0, n, 1 << 18):
        block = timing.read(start, min(n, start + (1 << 18)))
        if np.max(np.abs(block - step * np.arange(start, start + len(block)))) > tolerance_s:
            return timing
    return _Timing(timing.start, None, 1.0 / step, timing.duration_s,
                   f"{timing.origin}; these are regular, stored as starting_time 0 and rate {1.0 / step:.9g} frames/s")


# -- metadata -----------------------------------------------------------------------------------
def _missing(info: SessionInfo) -> list[str]:
    """The options NWB (and DANDI: nwbinspector's CRITICAL checks) needs that are not given."""
    needed = (("--session-description", info.session_description), ("--subject-id", info.subject_id),
              ("--sex", info.sex), ("--age or --date-of-birth", info.age or info.date_of_birth))
    return [flag for flag, value in needed if not value]


def _check_out(out: Path, recording: Path, overwrite: bool) -> None:
    if not out.parent.is_dir():
        raise ExportError(f"cannot write {out}: folder {out.parent} does not exist")
    if out.exists():
        if out.resolve() == recording.resolve():
            raise ExportError(f"--out {out} is the recording itself")
        if not overwrite:
            raise ExportError(f"{out} already exists: give --overwrite to replace it, or choose a new name")
        if not out.is_file():
            raise ExportError(f"{out} exists and is not a file")
    if not os.access(out.parent, os.W_OK):
        raise ExportError(f"cannot write {out}: folder {out.parent} is not writable")


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def _sha(model: dict) -> str:
    return str(model.get("sha256") or "unknown")


def _tracker(src: _Source) -> dict:
    """The tracker's identity: ``run.tracker`` (a live run) or ``model`` (a tracked video)."""
    a = src.attrs
    tracker = (a.get("run") or {}).get("tracker") or (a.get("meta") or {}).get("tracker")
    if isinstance(tracker, dict):
        return {"name": tracker.get("model"), "sha256": tracker.get("sha256"), "engine": tracker.get("engine"),
                "runtime": tracker.get("runtime"), "bbox": tracker.get("bbox"), "trained": tracker.get("trained"),
                "path": tracker.get("model_path")}
    model = a.get("model")
    if isinstance(model, dict):
        return {"name": model.get("name"), "sha256": model.get("sha256"), "engine": a.get("engine"),
                "runtime": a.get("runtime"), "bbox": a.get("bbox"), "trained": model.get("trained"), "path": model.get("path")}
    return {}


def _camera(src: _Source) -> dict:
    """This file's camera in ``meta``: the one recorded to this path, else the first."""
    meta = src.attrs.get("meta") or {}
    cameras = meta.get("cameras") or []
    paths = ((meta.get("recording") or {}).get("paths")) or []
    for i, p in enumerate(paths):
        try:
            if i < len(cameras) and Path(p).resolve() == src.path.resolve():
                return cameras[i]
        except OSError:
            pass
    if isinstance(meta.get("camera"), dict) and meta["camera"]:
        return meta["camera"]
    return cameras[0] if cameras else {}


def _facestream_version(src: _Source) -> str:
    a = src.attrs
    return str(((a.get("run") or {}).get("versions") or {}).get("facestream") or a.get("facestream_version") or "unknown")


def _accounting(src: _Source, camera: dict) -> list[tuple[str, int, str]]:
    """(what, frames, meaning) rows of the frame accounting."""
    a = src.attrs
    rows = [("frames_exported", src.n, "frames in this file (rows of every series)")]
    meta = a.get("meta") or {}
    if src.kind == "live":
        dropped = camera.get("dropped") or (meta.get("stats") or {}).get("dropped") or {}
        if isinstance(dropped, dict):
            meaning = {"camera": "frames the camera dropped before they reached the host (gaps in frame_id)",
                       "overrun": "frames captured but overwritten in the ring buffer before tracking",
                       "skipped": "frames skipped by the 'latest' policy to stay live",
                       "total": "all frames not tracked (camera + overrun + skipped)"}
            for key in ("camera", "overrun", "skipped", "total"):
                if isinstance(dropped.get(key), int):
                    rows.append((f"dropped_{key}", dropped[key], meaning[key]))
        rec = meta.get("recording") or {}
        if isinstance(rec.get("dropped"), int):
            rows.append(("not_recorded_queue", rec["dropped"],
                         "tracked and published frames the recorder could not keep up with (not in the file)"))
        unrecorded = rec.get("unrecorded")
        if isinstance(unrecorded, list) and unrecorded and all(isinstance(u, int) for u in unrecorded):
            rows.append(("not_recorded_disk_full", sum(unrecorded), "frames published after the disk filled (not in the file)"))
        if a.get("complete") is False:
            rows.append(("recording_incomplete", 1, "the recording did not end cleanly: " + str(a.get("stopped") or
                                                                                          "the run was killed")))
    elif src.kind == "tracked":
        if isinstance(a.get("video_frames"), int):
            rows.append(("video_frames", a["video_frames"], "frames in the video container"))
        if isinstance(a.get("unreadable_frames"), int):
            rows.append(("unreadable_frames", a["unreadable_frames"], "frames of the video that could not be decoded"))
    return rows


def _accounting_text(rows: list[tuple[str, int, str]]) -> str:
    return "; ".join(f"{what} {count}" for what, count, _ in rows)


def _neural_description(src: _Source, width: int) -> str:
    a = src.attrs
    meta = a.get("meta") or {}
    neural = meta.get("neural") or {}
    encoder = meta.get("encoder") or (a.get("run") or {}).get("encoder") or {}
    parts = []
    kind = neural.get("kind") or encoder.get("kind")
    values = neural.get("values")
    if values:
        parts.append(f"{values} ({width} columns)")
    elif kind == "pcs":
        parts.append(f"predicted principal components of neural activity ({width} columns)")
    elif kind:
        parts.append(f"predicted activity of {width} {kind}")
    else:
        parts.append(f"predicted neural activity, {width} columns (whether principal components or neurons is not recorded)")
    if encoder:
        parts.append(f"encoder {encoder.get('name', 'unknown')} (model {encoder.get('model', 'unknown')}, "
                     f"sha256 {encoder.get('sha256', 'unknown')}), trained: {encoder.get('trained')}")
    look = neural.get("lookahead_frames", encoder.get("lookahead_frames"))
    if look is not None:
        ms = neural.get("lookahead_ms")
        parts.append(f"look-ahead {look} frames" + (f" ({ms:g} ms)" if isinstance(ms, (int, float)) else "")
                     + f": row t is the estimate for frame t - {look}, published with frame t and timed here as frame t")
    ve = neural.get("test_variance_explained", encoder.get("test_variance_explained"))
    if isinstance(ve, (int, float)):
        parts.append(f"test variance explained {ve:.4f}")
    return "; ".join(parts)


# -- writing ------------------------------------------------------------------------------------
def export_nwb(recording: str | Path, out: str | Path, info: SessionInfo, overwrite: bool = False,
               rate: float | None = None) -> ExportResult:
    """Write ``recording`` (Facemap's h5 layout) as the NWB file ``out``. Raises ExportError."""
    recording = Path(recording).expanduser()
    out = Path(out).expanduser()
    src = _open_source(recording)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.nwb")
    try:
        _check_out(out, recording, overwrite)
        missing = _missing(info)
        if missing:
            raise ExportError(f"NWB needs {', '.join(missing)}, which the recording does not hold (or --metadata FILE: "
                              "[session] description, [subject] id, sex, age or date_of_birth)")
        timing = _timing(src, info.session_start, rate)
        result = _write(src, tmp, info, timing)
        os.replace(tmp, out)
        return ExportResult(out, src.n, len(src.bodyparts), result, timing.start, timing.duration_s, src.kind)
    except ExportError:
        raise
    except OSError as e:
        raise ExportError(f"cannot write {out}: {e.strerror or ' '.join(str(e).split())[:200]}") from None
    except (ValueError, TypeError) as e:  # pynwb refusing a value (e.g. a malformed date): one line
        raise ExportError(f"cannot export {recording}: {' '.join(str(e).split())[:300]}") from None
    finally:
        src.f.close()
        tmp.unlink(missing_ok=True)


def _write(src: _Source, tmp: Path, info: SessionInfo, timing: _Timing) -> int:
    """Write the NWB file; the columns of predicted activity written."""
    import warnings

    from hdmf.common import DynamicTable, VectorData
    from ndx_pose import PoseEstimation, PoseEstimationSeries, Skeleton, Skeletons
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.behavior import PupilTracking
    from pynwb.file import Subject

    n = src.n
    tracker = _tracker(src)
    camera = _camera(src)
    fs_version = _facestream_version(src)
    accounting = _accounting(src, camera)
    model_text = (f"tracker model {tracker.get('name') or 'unknown'} (sha256 {_sha(tracker)})" if tracker
                  else "tracker model not recorded in the file")
    subject = Subject(
        subject_id=info.subject_id, species=info.species, sex=info.sex, age=info.age, strain=info.strain,
        genotype=info.genotype, description=info.subject_description,
        date_of_birth=_date(info.date_of_birth) if info.date_of_birth else None,
    )
    nwb = NWBFile(
        session_description=info.session_description, identifier=info.identifier or str(uuid.uuid4()),
        session_start_time=timing.start, experimenter=info.experimenter or None, lab=info.lab,
        institution=info.institution, session_id=info.session_id, keywords=info.keywords or None, subject=subject,
        source_script=f"facestream {_version('facestream')} export-nwb", source_script_file_name=src.path.name,
        notes=(f"Exported by facestream export-nwb from {src.path.name} ({_kind_text(src.kind)}); {model_text}; "
               f"facestream {fs_version} recorded it. {timing.origin}."),
    )
    name = str(camera.get("name") or "camera")
    cam_parts = [f"camera {name}"]
    for key in ("kind", "width", "height", "fps"):
        if camera.get(key) is not None:
            cam_parts.append(f"{key} {camera[key]}")
    if src.kind == "tracked" and src.attrs.get("source_video"):
        cam_parts.append(f"source video {src.attrs['source_video']}")
    device = nwb.create_device(name=name, description=", ".join(cam_parts) if len(cam_parts) > 1 else
                               "the camera whose frames were tracked (no details recorded)")

    behavior = nwb.create_processing_module(
        name="behavior", description=f"Facemap keypoints of the mouse's face tracked by facestream; {model_text}")
    index = {bp: i for i, bp in enumerate(src.bodyparts)}
    edges = np.array([(index[a], index[b]) for a, b in FACE_EDGES if a in index and b in index], dtype=np.uint8)
    skeleton = Skeleton(name=SKELETON_NAME, nodes=list(src.bodyparts), edges=edges.reshape(-1, 2), subject=subject)
    behavior.add(Skeletons(skeletons=[skeleton]))

    facemap = src.f["Facemap"]
    series = []
    first = None
    for bp in src.bodyparts:
        x, y, lk = facemap[bp]["x"], facemap[bp]["y"], facemap[bp]["likelihood"]

        def xy(a, b, x=x, y=y):
            return np.stack([x[a:b], y[a:b]], axis=1)

        def confidence(a, b, lk=lk):
            return lk[a:b]

        if first is None:
            timing_args = ({"timestamps": _dataset(timing.read, n, None, np.float64)} if timing.read is not None
                           else {"rate": timing.rate, "starting_time": 0.0})
        else:
            timing_args = {"timestamps": first} if timing.read is not None else {"rate": timing.rate, "starting_time": 0.0}
        s = PoseEstimationSeries(
            name=bp, description=f"{bp}: x (column) and y (row) in the camera frame's pixels, Facemap's likelihood as confidence",
            data=_dataset(xy, n, 2, np.float32), unit="pixels",
            reference_frame="(0, 0) is the top-left corner of the camera's full frame; x = column, y = row, in pixels",
            confidence=_dataset(confidence, n, None, np.float32),
            confidence_definition="Facemap's likelihood: the largest sigmoid of the keypoint's heatmap, in [0.5, 1)",
            **timing_args,
        )
        first = first or s
        series.append(s)
    tracker_text = model_text + "".join(f", {k} {tracker[k]}" for k in ("engine", "runtime", "bbox", "trained")
                                        if tracker.get(k) is not None)
    pose = PoseEstimation(
        name=POSE_NAME, pose_estimation_series=series,
        description=(f"Facemap's {len(src.bodyparts)} face keypoints, tracked by facestream ({_kind_text(src.kind)}); "
                     f"{tracker_text}. Frames: {_accounting_text(accounting)}. {timing.origin}."),
        scorer=str(tracker.get("name") or "unknown"), source_software="facestream", source_software_version=fs_version,
        device=device, skeleton=skeleton,
    )
    behavior.add(pose)

    def linked_times() -> dict:
        return {"timestamps": first} if timing.read is not None else {"rate": timing.rate, "starting_time": 0.0}

    frame_id = src.column("frame_id")
    if frame_id is not None:
        behavior.add(TimeSeries(
            name="frame_id", data=_dataset(lambda a, b: frame_id[a:b], n, None, np.int64), unit="frames",
            description=("the camera's frame number of each row (" + ("gaps are frames the camera or the pipeline dropped"
                         if src.kind == "live" else "the frame's index in the video") + f"). {_accounting_text(accounting)}"),
            **linked_times()))
    dropped = src.column("dropped")
    if dropped is not None:
        behavior.add(TimeSeries(
            name="dropped_frames", data=_dataset(lambda a, b: dropped[a:b], n, None, np.int64), unit="frames",
            description="frames of this camera not tracked so far (camera, overrun and skipped), cumulative, as of each row",
            **linked_times()))
    t_capture, t_publish = src.column("t_capture_ns"), src.column("t_publish_ns")
    if t_capture is not None and t_publish is not None:
        behavior.add(TimeSeries(
            name="latency", data=_dataset(lambda a, b: (t_publish[a:b].astype(np.int64) - t_capture[a:b]) / 1e9, n, None,
                                          np.float64),
            unit="seconds", description="capture to publication of each frame's keypoints (t_publish_ns - t_capture_ns)",
            **linked_times()))
    neural = src.column("neural")
    width = 0
    if neural is not None and neural.ndim == 2 and neural.shape[1] > 0:
        width = int(neural.shape[1])
        kind = ((src.attrs.get("meta") or {}).get("neural") or {}).get("kind")
        behavior.add(TimeSeries(
            name="predicted_neural_activity", data=_dataset(lambda a, b: neural[a:b], n, width, np.float32),
            unit="a.u." if kind != "neurons" else "a.u. (each neuron z-scored)",
            description=_neural_description(src, width), **linked_times()))
    area = src.column("pupil_area")
    if area is not None:
        pupil = [TimeSeries(name="area", data=_dataset(lambda a, b: area[a:b], n, None, np.float32), unit="pixels^2",
                            description="pupil area, pi times the product of the fitted ellipse's semi-axes (Facemap's "
                                        "Gaussian fit in the ellipse of the eye keypoints); NaN where none was fitted",
                            **linked_times())]
        for what, unit, text in (
                ("centre", "pixels", "the pupil's centre, x (column) and y (row) in the frame's pixels"),
                ("axes", "pixels", "the fitted ellipse's semi-axes, long then short"),
                ("valid", "n.a.", "1 where the pupil was fitted and the four eye keypoints were likely enough, else 0")):
            column = src.column(f"pupil_{what}")
            if column is not None:
                pupil.append(TimeSeries(
                    name=what, unit=unit, description=text, **linked_times(),
                    data=_dataset(lambda a, b, c=column: c[a:b], n, None if column.ndim == 1 else column.shape[1],
                                  column.dtype)))
        behavior.add(PupilTracking(name="PupilTracking", time_series=pupil))
    motion = src.column("motion_svd")
    if motion is not None and motion.ndim == 2 and motion.shape[1] > 0:
        about = ((src.attrs.get("meta") or {}).get("cameras") or [{}])[0].get("motion_svd") or {}
        where = (f"region {about['region']} (row1, row2, col1, col2), binned {about['bin']}x{about['bin']}, "
                 f"components {about.get('source', 'learned')}") if about.get("region") else "region not recorded"
        behavior.add(TimeSeries(
            name="motion_svd", data=_dataset(lambda a, b: motion[a:b], n, int(motion.shape[1]), np.float32), unit="a.u.",
            description=(f"Facemap's motion SVD: the absolute difference of consecutive frames, binned, minus its mean, "
                         f"projected on {motion.shape[1]} spatial components; {where}; NaN before the components were ready"),
            **linked_times()))
    table = DynamicTable(
        name="frame_accounting", description="frames in this file and frames dropped before it, by cause",
        columns=[VectorData(name="what", description="the count's name", data=[r[0] for r in accounting]),
                 VectorData(name="frames", description="the number of frames", data=[int(r[1]) for r in accounting]),
                 VectorData(name="meaning", description="what the count counts", data=[r[2] for r in accounting])])
    behavior.add(table)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwb)
    return width


def _kind_text(kind: str) -> str:
    return {"live": "a live run's recording", "tracked": "a recorded video tracked offline",
            "facemap": "a Facemap keypoints file"}[kind]


def _date(text: str) -> datetime:
    try:
        d = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ExportError(f"date of birth {text!r} is not an ISO 8601 date (e.g. 2026-09-06)") from None
    return d if d.tzinfo is not None else d.replace(tzinfo=timezone.utc)
