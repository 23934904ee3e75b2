"""`facestream track-batch` (issue 22): many videos on a real Dask LocalCluster of 2 worker
processes over loopback (the command's own), no mocks; the command runs in this process, and in a
process of its own for the test that kills one of its workers.

Each output equals `track_video`'s on its video; a corrupt and a truncated video fail on their own
lines of the summary while the others go on (exit 1 with the count); a rerun skips what is finished
(the outputs are not touched) and redoes the rest; a worker killed mid-video leaves no partial file
and the batch still ends with every output. Short 160x120 videos and the tiny model, so nothing
depends on the speed of the CPU.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest
from click.testing import CliRunner

from facestream.engines.bodyparts import BODYPARTS
from facestream.engines.model_files import load_model
from facestream.streamer.cli import main
from facestream.streamer.tools.track import track_video
from facestream.streamer.tools.track_batch import (
    SUMMARY_NAME, BatchError, TrackOptions, finished, local_cluster_size, read_summary, temporaries,
)
from helpers import tiny_model, video_frame, write_video

pytest.importorskip("distributed")

CLI = [sys.executable, "-m", "facestream.streamer.cli", "track-batch"]
GOOD = ["a", "b", "c", "d"]
SHORT = 10  # frames of the good videos
CUT = 40  # frames of the video cut in half
LONG = 150  # frames of the video a worker is killed on


def _frames(n: int) -> list[np.ndarray]:
    return [video_frame(k % 14) for k in range(n)]  # the square stays in the picture


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """4 short videos, one of random bytes, one cut in half."""
    folder = tmp_path_factory.mktemp("archive")
    for name in GOOD:
        write_video(folder / f"{name}.avi", _frames(SHORT))
    (folder / "corrupt.avi").write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    whole = folder / "whole.tmp.avi"
    write_video(whole, _frames(CUT))
    (folder / "truncated.avi").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    return folder


def keypoints(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as f:
        xyl = np.stack([np.stack([f["Facemap"][bp][c][:] for c in ("x", "y", "likelihood")], -1) for bp in BODYPARTS], 1)
        return xyl, f["facestream"]["frame_id"][:]


def reference(video: Path, model: Path, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """`track_video` on ``video`` in this process, with the workers' single inference thread."""
    folder.mkdir(exist_ok=True)
    out = folder / f"{video.stem}.h5"
    track_video(video, out=out, model=model, engine="onnx", threads=1, progress=False)
    return keypoints(out)


class Run:
    def __init__(self, returncode: int, stderr: str) -> None:
        self.returncode, self.stderr = returncode, stderr


def batch(*args: str) -> Run:
    """The command in this process (torch is imported here already: seconds saved per run); its
    LocalCluster's workers are processes of their own all the same."""
    result = CliRunner().invoke(main, ["track-batch", *args, "--quiet"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Run(result.exit_code, result.stderr)


def summary(out_dir: Path) -> dict[str, dict[str, str]]:
    return {Path(row["video"]).name: row for row in read_summary(out_dir / SUMMARY_NAME)}


def test_outputs_equal_track_and_failures_are_reported(videos, model, cache_home, tmp_path_factory):
    out_dir = tmp_path_factory.getbasetemp() / "batch-out"
    run = batch(str(videos), "--out-dir", str(out_dir), "--model", str(model), "--engine", "onnx", "--workers", "2")
    assert run.returncode == 1, run.stderr
    lines = run.stderr.strip().splitlines()
    assert lines[-1] == f"facestream: error: 2 of 6 videos failed (see {out_dir / SUMMARY_NAME})"
    assert "6 videos: 4 tracked, 0 skipped, 2 failed" in lines[-2] and "videos/hour" in lines[-2] and "frames/s" in lines[-2]
    assert "Traceback" not in run.stderr

    rows = summary(out_dir)
    assert set(rows) == {f"{n}.avi" for n in GOOD} | {"corrupt.avi", "truncated.avi"}
    for name in GOOD:
        row = rows[f"{name}.avi"]
        assert (row["status"], row["frames"], row["error"]) == ("done", str(SHORT), "")
        assert float(row["seconds"]) > 0 and row["output"] == str(out_dir / f"{name}_FacemapPose.h5")
        got, ids = keypoints(out_dir / f"{name}_FacemapPose.h5")
        want, want_ids = reference(videos / f"{name}.avi", model, tmp_path_factory.getbasetemp() / "reference")
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(got, want)
    corrupt = rows["corrupt.avi"]
    assert corrupt["status"] == "failed" and "corrupt.avi" in corrupt["error"] and "cannot open" in corrupt["error"]
    assert not (out_dir / "corrupt_FacemapPose.h5").exists()
    cut = rows["truncated.avi"]
    assert cut["status"] == "failed" and 0 < int(cut["frames"]) < CUT and "\n" not in cut["error"]
    assert f"the {cut['frames']} frames read are tracked in" in cut["error"]
    assert (out_dir / "truncated_FacemapPose.h5").exists()  # kept, as `track` keeps it, but not taken for finished
    assert not list(out_dir.glob(".*.tmp"))


def test_rerun_skips_finished_videos_and_redoes_the_rest(videos, model, cache_home, tmp_path_factory):
    out_dir = tmp_path_factory.getbasetemp() / "batch-out"
    assert (out_dir / SUMMARY_NAME).exists(), "needs the first test's outputs"
    outputs = [out_dir / f"{name}_FacemapPose.h5" for name in GOOD]
    before = [p.stat().st_mtime_ns for p in outputs]
    cut_before = (out_dir / "truncated_FacemapPose.h5").stat().st_mtime_ns
    time.sleep(0.05)
    run = batch(str(videos), "--out-dir", str(out_dir), "--model", str(model), "--engine", "onnx", "--workers", "2")
    assert run.returncode == 1, run.stderr
    assert "6 videos: 0 tracked, 4 skipped, 2 failed" in run.stderr
    rows = summary(out_dir)
    for name in GOOD:
        assert (rows[f"{name}.avi"]["status"], rows[f"{name}.avi"]["frames"]) == ("skipped", str(SHORT))
    assert [p.stat().st_mtime_ns for p in outputs] == before
    assert rows["corrupt.avi"]["status"] == rows["truncated.avi"]["status"] == "failed"
    assert (out_dir / "truncated_FacemapPose.h5").stat().st_mtime_ns != cut_before  # a partial output is redone

    # only finished videos: no cluster is started, nothing is written but the summary, exit 0
    run = batch(*(str(videos / f"{n}.avi") for n in GOOD), "--out-dir", str(out_dir), "--model", str(model))
    assert run.returncode == 0, run.stderr
    assert "4 videos: 0 tracked, 4 skipped, 0 failed" in run.stderr
    assert [p.stat().st_mtime_ns for p in outputs] == before


def test_finished_needs_the_same_model_engine_and_crop(videos, model, tmp_path_factory):
    out = tmp_path_factory.getbasetemp() / "batch-out" / "a_FacemapPose.h5"
    assert out.exists(), "needs the first test's outputs"
    sha = load_model(model).sha256
    assert finished(out, sha, TrackOptions(model=str(model))) == SHORT
    assert finished(out, "0" * 64, TrackOptions(model=str(model))) is None  # a new model: tracked again
    assert finished(out, sha, TrackOptions(model=str(model), engine="onnx-int8")) is None
    assert finished(out, sha, TrackOptions(model=str(model), bbox=(0, 100, 0, 100))) is None
    assert finished(out.with_name("missing.h5"), sha, TrackOptions()) is None


def test_a_worker_killed_mid_video_leaves_no_partial_file(model, cache_home, tmp_path_factory):
    folder = tmp_path_factory.mktemp("kill")
    write_video(folder / "long.avi", _frames(LONG))
    for name in ("x", "y"):
        write_video(folder / f"{name}.avi", _frames(SHORT))
    out_dir = folder / "out"
    final = out_dir / "long_FacemapPose.h5"
    cli = subprocess.Popen([*CLI, str(folder), "--out-dir", str(out_dir), "--model", str(model), "--workers", "2", "--quiet"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        partial = None
        while partial is None and time.monotonic() < deadline and cli.poll() is None:
            # track_video's temporary (.<name>.<pid>.tmp) once it holds the h5 file (not the empty probe)
            partial = next((t for t in temporaries(final) if t.exists() and t.stat().st_size > 0), None)
            time.sleep(0.02)
        assert partial is not None, "the long video's temporary file never appeared"
        pid = int(partial.name.split(".")[-2])
        worker = psutil.Process(pid)
        assert pid in {p.pid for p in psutil.Process(cli.pid).children(recursive=True)}, "not a worker of this batch"
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        assert partial.exists() and not final.exists()  # killed mid-video
        stdout, stderr = cli.communicate(timeout=240)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 0, stderr
    assert "3 videos: 3 tracked, 0 skipped, 0 failed" in stderr
    assert not partial.exists() and not list(out_dir.glob(".*.tmp"))
    rows = summary(out_dir)
    assert {name: row["status"] for name, row in rows.items()} == {"long.avi": "done", "x.avi": "done", "y.avi": "done"}
    got, ids = keypoints(final)
    assert ids.tolist() == list(range(LONG))
    want, _ = reference(folder / "long.avi", model, folder / "reference")
    np.testing.assert_array_equal(got, want)


def test_bad_inputs_are_one_line_errors(videos, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["track-batch", str(tmp_path / "none" / "*.avi")])
    assert result.exit_code == 1 and result.output.startswith("facestream: error: no videos matched")
    assert len(result.output.strip().splitlines()) == 1
    result = runner.invoke(main, ["track-batch", str(tmp_path / "missing.avi")])
    assert result.exit_code == 1 and "missing.avi: no such file or folder" in result.output
    blocker = tmp_path / "a file"
    blocker.write_text("")
    result = runner.invoke(main, ["track-batch", str(videos), "--out-dir", str(blocker / "out")])
    assert result.exit_code == 1 and result.output.strip() == f"facestream: error: cannot write to folder {blocker / 'out'}: not a directory"
    result = runner.invoke(main, ["track-batch", str(videos), "--scheduler", "tcp://127.0.0.1:1", "--workers", "2"])
    assert result.exit_code == 1 and "--workers sizes a local cluster" in result.output
    cores = len(os.sched_getaffinity(0))
    result = runner.invoke(main, ["track-batch", str(videos), "--workers", str(cores + 1)])
    assert result.exit_code == 1 and f"more than this machine's {cores} cores" in result.output


def test_local_cluster_fits_the_cores():
    assert local_cluster_size(None, 0, cores=8) == (8, 1)
    assert local_cluster_size(None, 2, cores=8) == (4, 2)
    assert local_cluster_size(2, 0, cores=8) == (2, 4)
    assert local_cluster_size(None, 3, cores=8) == (2, 3)
    with pytest.raises(BatchError, match="--threads 4 is more than this machine's 2 cores"):
        local_cluster_size(None, 4, cores=2)
    with pytest.raises(BatchError, match="x --threads"):
        local_cluster_size(3, 3, cores=8)
