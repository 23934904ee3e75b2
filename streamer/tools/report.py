"""``facestream report``: a recording's summary as plots, in an image or a web page.

Reads a file written by ``facestream run --record`` (``/Facemap/<bodypart>/{x, y,
likelihood}`` plus facestream's columns and JSON attributes in ``/facestream``, see
``recorder.py``) and draws keypoint traces, likelihoods, latency over time, frames/s, drops,
the pupil's area, the first motion SVD components and the first components of the predicted
activity. A file from ``facestream track`` (keypoints
and video times only) gets the panels its columns allow. The output's suffix picks the kind:
``.png``, ``.svg`` or ``.pdf`` (matplotlib) or ``.html`` (one self-contained page: the plots as
an embedded PNG and a table of the run).
"""
from __future__ import annotations

import base64
import html
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from facestream.engines.bodyparts import BODYPARTS  # noqa: E402

IMAGE_SUFFIXES = (".png", ".svg", ".pdf")
MAX_BINS = 2000  # long recordings are summarised per time bin, so any length plots alike
NEURAL_SHOWN = 4
_COLORS = {
    "eye": "#2a9fd6", "lowerlip": "#e8871e", "mouth": "#d9480f", "nose": "#d6336c", "nosebridge": "#9c36b5",
    "paw": "#e0a800", "whisker": "#2f9e44",
}


class ReportError(ValueError):
    """The recording cannot be read or the output cannot be written; the message is one line."""


@dataclass
class Recording:
    path: Path
    bodyparts: list[str]
    keypoints: np.ndarray  # (n, bodyparts, 3): x, y, likelihood
    t_s: np.ndarray  # seconds from the first frame
    time_source: str
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return len(self.keypoints)

    @property
    def latency_ms(self) -> np.ndarray | None:
        c = self.columns
        if "t_publish_ns" in c and "t_capture_ns" in c:
            return (c["t_publish_ns"] - c["t_capture_ns"]) / 1e6
        return None


def read_recording(path: str | Path) -> Recording:
    """The recording at ``path``; ReportError (one line) for anything that is not one."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ReportError(f"recording {p} does not exist")
    try:
        f = h5py.File(p, "r")
    except OSError:
        raise ReportError(f"{p} is not an HDF5 file") from None
    try:
        with f:
            names, keypoints = _read_keypoints(f, p)
            columns, attrs = _read_columns(f, p)
    except (OSError, RuntimeError) as e:  # HDF5 could not read what the file says it holds
        raise ReportError(f"{p}: unreadable HDF5 ({_one_line(e)})") from None
    if len(keypoints) == 0:
        raise ReportError(f"{p} holds no frames: nothing to plot")
    uneven = {k: len(v) for k, v in columns.items() if len(v) != len(keypoints)}
    if uneven:
        name, rows = next(iter(uneven.items()))
        raise ReportError(f"{p}: /facestream/{name} holds {rows} rows and the keypoints {len(keypoints)}: "
                          "its columns do not line up (a damaged or edited file)")
    if "t_capture_ns" in columns:
        t, source = (columns["t_capture_ns"] - columns["t_capture_ns"][0]) / 1e9, "capture time"
    elif "t_video_s" in columns:
        t, source = columns["t_video_s"] - columns["t_video_s"][0], "video time"
    else:
        t, source = np.arange(len(keypoints), dtype=np.float64), "frame"
    return Recording(p, names, keypoints, np.asarray(t, np.float64), source, columns, attrs)


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _read_keypoints(f: h5py.File, p: Path) -> tuple[list[str], np.ndarray]:
    """/Facemap/<bodypart>/{x, y, likelihood}: the names and (frames, bodyparts, 3)."""
    group = f.get("Facemap")
    if group is None:
        raise ReportError(f"{p} holds no keypoints (/Facemap): not a facestream or Facemap recording")
    if not isinstance(group, h5py.Group):
        raise ReportError(f"{p}: /Facemap is not a group of bodyparts: not a facestream or Facemap recording")
    names = [bp for bp in BODYPARTS if bp in group] + sorted(set(group) - set(BODYPARTS))
    try:
        parts = []
        for bp in names:
            if not isinstance(group[bp], h5py.Group):
                raise ValueError(f"/Facemap/{bp} is not a group of x, y and likelihood")
            columns = []
            for k in ("x", "y", "likelihood"):
                column = group[bp].get(k)
                if not isinstance(column, h5py.Dataset):
                    raise ValueError(f"no dataset /Facemap/{bp}/{k}")
                if column.ndim != 1 or column.dtype.kind not in "biuf":
                    raise ValueError(f"/Facemap/{bp}/{k} is not a column of numbers "
                                     f"(shape {column.shape}, dtype {column.dtype})")
                columns.append(column[()])
            parts.append(np.stack(columns, -1))
        keypoints = np.stack(parts, 1).astype(np.float64)
    except (KeyError, ValueError, TypeError) as e:
        raise ReportError(f"{p}: unreadable keypoints under /Facemap ({_one_line(e)})") from None
    return names, keypoints


_TIME_COLUMNS = ("t_capture_ns", "t_publish_ns", "t_video_s")


def _read_columns(f: h5py.File, p: Path) -> tuple[dict[str, np.ndarray], dict]:
    """/facestream's columns (a row per frame) and its attributes (JSON where they are)."""
    group = f.get("facestream")
    if group is None:
        return {}, {}
    if not isinstance(group, h5py.Group):
        raise ReportError(f"{p}: /facestream is not a group of columns (a damaged or edited file)")
    columns = {}
    for name, item in group.items():
        if not isinstance(item, h5py.Dataset) or item.ndim == 0:
            raise ReportError(f"{p}: /facestream/{name} is not a column (a damaged or edited file)")
        if name in _TIME_COLUMNS and (item.ndim != 1 or item.dtype.kind not in "iuf"):
            raise ReportError(f"{p}: /facestream/{name} is not a column of times "
                              f"(shape {item.shape}, dtype {item.dtype})")
        columns[name] = item[()]
    attrs = {}
    for key, value in group.attrs.items():
        try:
            attrs[key] = json.loads(value)
        except (TypeError, ValueError):
            attrs[key] = value
    return columns, attrs


def _bins(t: np.ndarray) -> np.ndarray:
    """Bin index per frame: each frame its own bin up to MAX_BINS frames, else equal time bins."""
    if len(t) <= MAX_BINS or t[-1] <= t[0]:
        return np.arange(len(t))
    return np.minimum(((t - t[0]) / (t[-1] - t[0]) * MAX_BINS).astype(int), MAX_BINS - 1)


def _per_bin(bins: np.ndarray, values: np.ndarray, fn) -> np.ndarray:
    """``fn`` over the values of each bin, along the first axis."""
    edges = np.flatnonzero(np.diff(bins)) + 1
    return np.stack([fn(chunk, axis=0) for chunk in np.split(values, edges)])


def _color(bodypart: str) -> str:
    return next((c for prefix, c in _COLORS.items() if bodypart.startswith(prefix)), "#495057")


def summary(rec: Recording) -> dict:
    """The run in numbers, from the file's own columns and its last ``meta``."""
    meta = rec.attrs.get("meta") or {}
    run = rec.attrs.get("run") or {}
    duration = float(rec.t_s[-1]) if rec.frames > 1 else 0.0
    out = {
        "file": str(rec.path),
        "frames": rec.frames,
        "seconds": round(duration, 3),
        "fps": round((rec.frames - 1) / duration, 2) if duration > 0 else None,
        "complete": rec.attrs.get("complete"),
        "status": meta.get("status"),
        "camera": (meta.get("camera") or {}).get("name") or (run.get("config") or {}).get("camera", {}).get("spec"),
        "tracker": (run.get("tracker") or meta.get("tracker") or {}).get("model"),
        "encoder": (run.get("encoder") or meta.get("encoder") or {}).get("name"),
        "likelihood_mean": round(float(np.nanmean(rec.keypoints[:, :, 2])), 3),
    }
    lat = rec.latency_ms
    if lat is not None:
        out["latency_ms"] = {"p50": round(float(np.percentile(lat, 50)), 2),
                             "p99": round(float(np.percentile(lat, 99)), 2), "max": round(float(lat.max()), 2)}
    dropped = ((meta.get("stats") or {}).get("dropped"))
    if dropped is None and "dropped" in rec.columns:
        dropped = {"total": int(rec.columns["dropped"][-1] - rec.columns["dropped"][0])}
    out["dropped"] = dropped
    if meta.get("recording"):
        out["recorder_dropped"] = meta["recording"].get("dropped")
    return out


def _title(s: dict) -> str:
    parts = [Path(s["file"]).name, f"{s['frames']} frames in {s['seconds']:.1f} s"]
    if s["fps"]:
        parts.append(f"{s['fps']:.1f} frames/s")
    if "latency_ms" in s:
        parts.append(f"latency p50 {s['latency_ms']['p50']:.1f} ms, p99 {s['latency_ms']['p99']:.1f} ms")
    d = s.get("dropped")
    if d:
        parts.append("dropped " + ", ".join(f"{v} {k}" for k, v in d.items()))
    if s["complete"] is False:
        parts.append("INCOMPLETE (the run was killed)")
    return "  ·  ".join(parts)


def figure(rec: Recording) -> plt.Figure:
    """All panels of the report in one figure."""
    bins = _bins(rec.t_s)
    t = _per_bin(bins, rec.t_s, np.mean)
    lat = rec.latency_ms
    neural = rec.columns.get("neural")
    pupil = rec.columns.get("pupil_area")
    motion = rec.columns.get("motion_svd")
    has_drops = "dropped" in rec.columns
    panels = [("traces", 5.0), ("likelihood", 2.6)]
    if lat is not None:
        panels.append(("latency", 1.9))
    if rec.time_source != "frame":
        panels.append(("rate", 1.6))
    if pupil is not None and pupil.ndim == 1 and pupil.dtype.kind in "biuf":
        panels.append(("pupil", 1.6))
    if motion is not None and motion.ndim == 2 and motion.size and motion.dtype.kind in "biuf":
        panels.append(("motion", 1.9))
    if neural is not None and neural.size:
        panels.append(("neural", 1.9))
    fig, axes = plt.subplots(len(panels), 1, figsize=(13, sum(h for _, h in panels) + 0.9), sharex=True,
                             gridspec_kw={"height_ratios": [h for _, h in panels]}, layout="constrained")
    axes = dict(zip((name for name, _ in panels), np.atleast_1d(axes)))
    fig.suptitle(_title(summary(rec)), fontsize=10.5, x=0.01, ha="left")
    xlabel = {"capture time": "seconds since the first frame (capture time)",
              "video time": "seconds into the video", "frame": "frame"}[rec.time_source]

    # keypoints: one row each, centred on its median and scaled to its own range (printed)
    ax = axes["traces"]
    kp = _per_bin(bins, rec.keypoints, np.nanmean)
    centred = kp[:, :, :2] - np.nanmedian(kp[:, :, :2], axis=0)
    n = len(rec.bodyparts)
    for i, bp in enumerate(rec.bodyparts):
        row = centred[:, i]
        scale = max(float(np.nanmax(np.abs(row))), 0.5) if np.isfinite(row).any() else 1.0
        offset = n - 1 - i
        ax.plot(t, row[:, 0] / scale * 0.45 + offset, lw=0.8, color=_color(bp))
        ax.plot(t, row[:, 1] / scale * 0.45 + offset, lw=0.8, color=_color(bp), alpha=0.4)
        ax.text(1.002, offset, f"±{scale:.0f} px" if scale >= 10 else f"±{scale:.1f} px", transform=ax.get_yaxis_transform(),
                fontsize=7, va="center", color="#868e96")
    ax.set_yticks(np.arange(n)[::-1], rec.bodyparts, fontsize=8)
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_title("keypoints: x solid, y faint; each row centred on its median and scaled to its own range (right)",
                 fontsize=9, loc="left")

    ax = axes["likelihood"]
    lk = _per_bin(bins, rec.keypoints[:, :, 2], np.nanmean)
    edges = np.concatenate([t[:1], (t[1:] + t[:-1]) / 2, t[-1:]]) if len(t) > 1 else np.array([t[0] - 0.5, t[0] + 0.5])
    mesh = ax.pcolormesh(edges, np.arange(len(rec.bodyparts) + 1), lk.T, cmap="viridis", vmin=0.5, vmax=1.0,
                         shading="flat")
    ax.set_yticks(np.arange(len(rec.bodyparts)) + 0.5, rec.bodyparts, fontsize=7)
    ax.invert_yaxis()
    ax.set_title("likelihood (Facemap's: 0.5 = no peak, 1 = certain)" + ("" if len(t) == rec.frames else ", mean per bin"),
                 fontsize=9, loc="left")
    fig.colorbar(mesh, ax=ax, pad=0.005, fraction=0.02)

    if lat is not None:
        ax = axes["latency"]
        if len(t) == rec.frames:
            ax.plot(t, lat, lw=0.7, color="#1c7ed6", label="per frame")
        else:
            ax.fill_between(t, _per_bin(bins, lat, np.min), _per_bin(bins, lat, np.max), color="#a5d8ff", label="min-max per bin")
            ax.plot(t, _per_bin(bins, lat, np.median), lw=0.8, color="#1c7ed6", label="median per bin")
        for q, style in ((50, "--"), (99, ":")):
            ax.axhline(np.percentile(lat, q), color="#495057", lw=0.8, ls=style, label=f"p{q} {np.percentile(lat, q):.1f} ms")
        ax.set_ylabel("ms", fontsize=8)
        ax.set_title("latency, capture to publish", fontsize=9, loc="left")
        ax.legend(fontsize=7, loc="upper right", ncols=4, frameon=False)

    if "rate" in axes:
        ax = axes["rate"]
        counts = np.bincount(np.floor(rec.t_s).astype(int))
        if len(counts) > 1:
            counts = counts[:-1]  # the last second is cut short by the end of the run
        ax.stairs(counts, np.arange(len(counts) + 1), baseline=None, color="#2b8a3e", lw=1.2)
        ax.set_ylim(0, max(counts.max() * 1.25, 1))
        ax.set_ylabel("frames/s", fontsize=8)
        title = "frames processed per second"
        if has_drops:
            twin = ax.twinx()
            dropped = rec.columns["dropped"] - rec.columns["dropped"][0]
            twin.plot(rec.t_s, dropped, color="#e03131", lw=1.0, label="dropped so far")
            twin.set_ylabel("dropped", fontsize=8, color="#e03131")
            twin.set_ylim(0, max(dropped.max() * 1.1, 1))
            title += " (green) and frames dropped so far (red)"
        ax.set_title(title, fontsize=9, loc="left")

    if "pupil" in axes:
        ax = axes["pupil"]
        valid = rec.columns.get("pupil_valid")
        area = pupil.astype(np.float64)
        if valid is not None and valid.shape == area.shape and valid.dtype.kind in "biuf":
            area = np.where(valid > 0, area, np.nan)
        with warnings.catch_warnings():  # bins with no valid frame are gaps
            warnings.simplefilter("ignore", RuntimeWarning)
            shown = _per_bin(bins, area, np.nanmean)
        ax.plot(t, shown, lw=0.8, color="#495057")
        ax.set_ylabel("px²", fontsize=8)
        seen = np.isfinite(area)
        ax.set_title(f"pupil area, where valid ({seen.mean():.0%} of frames)", fontsize=9, loc="left")

    if "motion" in axes:
        ax = axes["motion"]
        with warnings.catch_warnings():  # frames before the components were ready are gaps
            warnings.simplefilter("ignore", RuntimeWarning)
            shown = _per_bin(bins, motion[:, :NEURAL_SHOWN].astype(np.float64), np.nanmean)
        for j in range(shown.shape[1]):
            ax.plot(t, shown[:, j], lw=0.8, label=f"{j + 1}")
        ax.set_title(f"motion SVD, first {shown.shape[1]} components (blank until they were learned)",
                     fontsize=9, loc="left")
        ax.legend(fontsize=7, loc="upper right", ncols=NEURAL_SHOWN, framealpha=0.85)

    if "neural" in axes:
        ax = axes["neural"]
        shown = _per_bin(bins, neural[:, :NEURAL_SHOWN].astype(np.float64), np.mean)
        for j in range(shown.shape[1]):
            ax.plot(t, shown[:, j], lw=0.8, label=f"{j + 1}")
        trained = ((rec.attrs.get("run") or {}).get("encoder") or {}).get("trained")
        ax.set_title(f"predicted neural activity, first {shown.shape[1]} components"
                     + (" (encoder untrained: not yet meaningful)" if trained is False else ""), fontsize=9, loc="left")
        ax.legend(fontsize=7, loc="upper right", ncols=NEURAL_SHOWN, framealpha=0.85)

    for name, ax in axes.items():
        ax.tick_params(labelsize=8)
        if name != "likelihood":
            ax.grid(axis="x", color="#e9ecef", lw=0.6)
        ax.spines[["top", "right"]].set_visible(False)
    axes[panels[-1][0]].set_xlabel(xlabel, fontsize=8)
    return fig


def _html(rec: Recording, png: bytes) -> str:
    s = summary(rec)
    rows = []
    for key, value in s.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        rows.append(f"<tr><th>{html.escape(key.replace('_', ' '))}</th><td>{html.escape(str(value))}</td></tr>")
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>facestream report: {html.escape(rec.path.name)}</title>"
        "<style>body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#212529}"
        "table{border-collapse:collapse;margin:12px 0 20px}th,td{padding:3px 14px 3px 0;text-align:left;"
        "vertical-align:top}th{color:#868e96;font-weight:500}img{max-width:100%}</style></head><body>"
        f"<h1 style=\"font-size:20px\">{html.escape(rec.path.name)}</h1><table>{''.join(rows)}</table>"
        f"<img alt=\"keypoints, likelihood, latency, frames/s and drops over time\" "
        f"src=\"data:image/png;base64,{base64.b64encode(png).decode()}\"></body></html>\n"
    )


def default_output(recording: str | Path) -> Path:
    p = Path(recording).expanduser()
    return p.with_name(f"{p.stem}_report.png")


def write_report(recording: str | Path, out: str | Path | None = None) -> Path:
    """Render ``recording`` to ``out`` (default: ``<recording>_report.png`` beside it)."""
    target = Path(out).expanduser() if out else default_output(recording)
    suffix = target.suffix.lower()
    if suffix not in (*IMAGE_SUFFIXES, ".html"):
        raise ReportError(f"cannot tell what to write from {target.name!r}: name it .png, .svg, .pdf or .html")
    if not target.parent.is_dir():
        raise ReportError(f"cannot write {target}: folder {target.parent} does not exist")
    rec = read_recording(recording)
    fig = figure(rec)
    try:
        if suffix == ".html":
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=110)
            target.write_text(_html(rec, buffer.getvalue()), encoding="utf-8")
        else:
            fig.savefig(target, dpi=110)
    except OSError as e:
        raise ReportError(f"cannot write {target}: {e.strerror or e}") from None
    finally:
        plt.close(fig)
    return target
