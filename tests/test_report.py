"""`facestream report`: a real recording in, a real image or page out."""
import base64
import json
import re
import subprocess
import sys

import cv2
import h5py
import numpy as np
import pytest

from facestream.engines.bodyparts import BODYPARTS
from facestream.streamer.pose_h5 import PoseFile
from facestream.streamer.tools.report import figure, read_recording, summary

CLI = [sys.executable, "-m", "facestream.streamer.cli"]


def _report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "report", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> tuple:
    """A recording made as users make one, and the run's own summary."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    path = tmp_path_factory.mktemp("rec") / "session.h5"
    r = subprocess.run([*CLI, "run", "--publish", endpoint, "--fps", "25", "--frames", "60", "--record", str(path),
                        "--json", "--quiet"], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    return path, json.loads(r.stdout.strip().splitlines()[-1])


def test_png_by_default_beside_the_recording(recording):
    path, _ = recording
    r = _report(str(path))
    assert r.returncode == 0, r.stderr
    out = path.with_name("session_report.png")
    assert str(out) in r.stderr
    image = cv2.imread(str(out))
    assert image is not None and image.shape[0] > 1000 and image.shape[1] > 1000 and image.std() > 10


def test_html_is_one_self_contained_page_with_the_runs_numbers(recording, tmp_path):
    path, run = recording
    out = tmp_path / "report.html"
    r = _report(str(path), "--out", str(out))
    assert r.returncode == 0, r.stderr
    page = out.read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing fetched from elsewhere
    png = base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1))
    assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR) is not None
    assert "<th>frames</th><td>60</td>" in page
    total = run["dropped"]["total"]
    assert f"total {total}" in page


@pytest.mark.parametrize("suffix, magic", [(".svg", b"<svg"), (".pdf", b"%PDF")])
def test_other_image_kinds_by_suffix(recording, tmp_path, suffix, magic):
    out = tmp_path / f"report{suffix}"
    assert _report(str(recording[0]), "-o", str(out)).returncode == 0
    assert magic in out.read_bytes()[:400]


def test_summary_agrees_with_the_run(recording):
    path, run = recording
    rec = read_recording(path)
    s = summary(rec)
    assert rec.bodyparts == list(BODYPARTS) and rec.frames == run["frames"] == s["frames"]
    assert s["dropped"] == run["dropped"] and s["complete"] is True and s["status"] == "stopped"
    with h5py.File(path) as f:
        latency = (f["facestream/t_publish_ns"][()] - f["facestream/t_capture_ns"][()]) / 1e6
    assert s["latency_ms"]["p50"] == pytest.approx(np.percentile(latency, 50), abs=0.01)
    axes = [ax for ax in figure(rec).axes if ax.get_title(loc="left")]
    titles = [ax.get_title(loc="left") for ax in axes]
    assert [t.split(",")[0].split(" ")[0] for t in titles] == ["keypoints:", "likelihood", "latency", "frames", "pupil",
                                                               "motion", "predicted"]
    # the pupil's panel: the recorded area of each frame where it is valid, a gap elsewhere
    with h5py.File(path) as f:
        area = np.where(f["facestream/pupil_valid"][()] > 0, f["facestream/pupil_area"][()], np.nan)
    np.testing.assert_allclose(axes[4].lines[0].get_ydata(), area, rtol=1e-6)


def _pose_file(path, n, columns, attrs=None):
    rng = np.random.default_rng(0)
    pose = PoseFile(path, {k: ((), v.dtype.name) for k, v in columns.items()})
    keypoints = np.concatenate([rng.uniform(0, 640, (n, 15, 2)), rng.uniform(0.5, 1, (n, 15, 1))], -1)
    pose.append(keypoints.astype(np.float32), columns)
    if attrs:
        pose.set_attrs(**attrs)
    pose.close()


def test_a_long_killed_recording_is_summarised_per_bin_and_marked_incomplete(tmp_path):
    n = 12_000  # more frames than bins
    t = np.arange(n, dtype=np.int64) * 20_000_000
    columns = {"seq": np.arange(n), "frame_id": np.arange(n), "t_capture_ns": t, "t_camera_ns": t,
               "t_publish_ns": t + 30_000_000, "dropped": np.arange(n) // 100}
    path = tmp_path / "killed.h5"
    _pose_file(path, n, columns, {"complete": False})
    out = tmp_path / "killed.png"
    r = _report(str(path), "-o", str(out))
    assert r.returncode == 0, r.stderr
    fig = figure(read_recording(path))
    assert "INCOMPLETE" in fig.get_suptitle() and "latency p50 30.0 ms" in fig.get_suptitle()
    assert len(fig.axes[0].lines[0].get_xdata()) == 2000  # binned
    assert cv2.imread(str(out)) is not None


def test_a_tracked_video_file_gets_the_panels_its_columns_allow(tmp_path):
    n = 50
    path = tmp_path / "clip_FacemapPose.h5"
    _pose_file(path, n, {"frame_id": np.arange(n), "t_video_s": np.arange(n) / 30.0})
    rec = read_recording(path)
    assert rec.time_source == "video time" and rec.latency_ms is None
    titles = [ax.get_title(loc="left").split(" ")[0] for ax in figure(rec).axes if ax.get_title(loc="left")]
    assert titles == ["keypoints:", "likelihood", "frames"]


def test_bad_input_is_one_line_and_non_zero(tmp_path, recording):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    uneven = tmp_path / "uneven.h5"
    _pose_file(uneven, 10, {"t_capture_ns": np.arange(10) * 20_000_000, "t_publish_ns": np.arange(10) * 20_000_000})
    with h5py.File(uneven, "a") as f:
        f["facestream/t_publish_ns"].resize((7,))
    empty = tmp_path / "other.h5"
    with h5py.File(empty, "w") as f:
        f["x"] = [1, 2]
    cases = [
        ([str(tmp_path / "missing.h5")], "does not exist"),
        ([str(text)], "not an HDF5 file"),
        ([str(empty)], "no keypoints"),
        ([str(uneven)], f"{uneven}: /facestream/t_publish_ns holds 7 rows and the keypoints 10: its columns do not line up"),
        ([str(recording[0]), "-o", str(tmp_path / "report.txt")], ".png, .svg, .pdf or .html"),
        ([str(recording[0]), "-o", str(tmp_path / "nowhere" / "r.png")], "does not exist"),
    ]
    for args, words in cases:
        r = _report(*args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("facestream: error:"), r.stderr
        assert words in lines[0]
