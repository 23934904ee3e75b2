"""facestream export-nwb: real recordings and tracked videos exported to NWB, checked with
nwbinspector (as DANDI does) and read back with pynwb against the h5 they came from."""
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import h5py
import numpy as np
import pytest

from helpers import free_port, tiny_model, video_frame, write_video

pynwb = pytest.importorskip("pynwb")
pytest.importorskip("ndx_pose")
nwbinspector = pytest.importorskip("nwbinspector")

from facestream.engines.bodyparts import BODYPARTS  # noqa: E402

CLI = [sys.executable, "-m", "facestream.streamer.cli"]
SUBJECT = ["--subject-id", "m1", "--sex", "F", "--age", "P90D"]
BAD = {"ERROR", "PYNWB_VALIDATION", "CRITICAL"}


def _rows(path) -> dict:
    with h5py.File(path, "r") as f:
        kp = np.stack([np.stack([f[f"Facemap/{bp}/{k}"][:] for k in ("x", "y", "likelihood")], -1) for bp in BODYPARTS], 1)
        out = {k: f[f"facestream/{k}"][:] for k in f["facestream"]}
        out["keypoints"] = kp
        out["attrs"] = {k: json.loads(v) for k, v in f["facestream"].attrs.items()}
    return out


def _export(*args, timeout=180):
    return subprocess.run([*CLI, "export-nwb", *map(str, args)], capture_output=True, text=True, timeout=timeout)


def _serious(path):
    """nwbinspector's messages of importance CRITICAL or above (errors, PyNWB validation)."""
    messages = list(nwbinspector.inspect_nwbfile(nwbfile_path=str(path)))
    assert messages, "nwbinspector reported nothing at all: it did not inspect the file"  # suggestions are always there
    return [m for m in messages if m.importance.name in BAD]


def _one_line_error(r, *words):
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facestream: error: "), r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def recording(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("run") / "run.h5"
    config = path.with_suffix(".toml")
    config.write_text("[motion_svd]\ncomponents = 4\nlearn_seconds = 0.0\n")  # ready after 5 frames
    r = subprocess.run([*CLI, "run", "--config", str(config), "--frames", "40", "--policy", "every", "--record", str(path),
                        "--publish", f"tcp://127.0.0.1:{free_port()}", "--model", str(model), "--quiet"],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    return path


@pytest.fixture(scope="module")
def exported(recording, tmp_path_factory):
    folder = tmp_path_factory.mktemp("nwb")
    meta = folder / "meta.toml"
    meta.write_text('[session]\ndescription = "head-fixed mouse, spontaneous behaviour"\nexperimenter = ["Doe, Jane"]\n'
                    'lab = "Face lab"\ninstitution = "Somewhere"\nkeywords = ["facemap"]\n'
                    '[subject]\nid = "from-file"\nspecies = "Mus musculus"\nsex = "M"\nage = "P60D"\nstrain = "C57BL/6J"\n')
    out = folder / "session.nwb"
    # the command line overrides the file: subject id, sex and age
    r = _export(recording, "--out", out, "--metadata", meta, *SUBJECT)
    assert r.returncode == 0, r.stderr
    assert "40 frames x 15 bodyparts" in r.stderr
    return out


def test_live_recording_passes_nwbinspector(exported):
    serious = _serious(exported)
    with pynwb.NWBHDF5IO(str(exported), "r") as io:
        neural_shape = io.read().processing["behavior"]["predicted_neural_activity"].data.shape
    # The one exception: nwbinspector guesses time is the longest axis, and 40 frames are fewer
    # than the 128 columns of activity. test_long_recording_has_no_critical_message shows it
    # goes away with more frames than columns.
    for m in serious:
        assert m.check_function_name == "check_data_orientation", (m.importance.name, m.check_function_name, m.message)
        assert m.location == "/processing/behavior/predicted_neural_activity" and neural_shape[0] < neural_shape[1]


def test_live_recording_round_trips(recording, exported):
    rec = _rows(recording)
    attrs = rec["attrs"]
    t = rec["t_capture_ns"]
    with pynwb.NWBHDF5IO(str(exported), "r") as io:
        nwb = io.read()
        clock = attrs["meta"]["clock"]
        wall_us = (int(t[0]) + clock["time_ns"] - clock["monotonic_ns"]) // 1000
        assert nwb.session_start_time == datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=wall_us)
        assert nwb.session_description == "head-fixed mouse, spontaneous behaviour"
        assert tuple(nwb.experimenter) == ("Doe, Jane",) and nwb.lab == "Face lab"
        s = nwb.subject
        assert (s.subject_id, s.sex, s.age, s.species, s.strain) == ("m1", "F", "P90D", "Mus musculus", "C57BL/6J")
        behavior = nwb.processing["behavior"]
        pose = behavior["FacemapPose"]
        sha = attrs["run"]["tracker"]["sha256"]
        assert sha and sha in pose.description and attrs["run"]["tracker"]["model"] == pose.scorer == "tiny"
        assert pose.device.name == "cam0" and "640" in pose.device.description
        assert list(pose.skeleton.nodes[:]) == list(BODYPARTS) and pose.skeleton.edges[:].shape[1] == 2
        assert behavior["Skeletons"]["mouse_face"] is pose.skeleton
        assert sorted(pose.pose_estimation_series) == sorted(BODYPARTS)
        expected_t = (t - t[0]) / 1e9
        for b, bp in enumerate(BODYPARTS):
            series = pose.pose_estimation_series[bp]
            assert series.unit == "pixels"
            np.testing.assert_array_equal(series.data[:], rec["keypoints"][:, b, :2])
            np.testing.assert_array_equal(series.confidence[:], rec["keypoints"][:, b, 2])
            np.testing.assert_allclose(series.timestamps[:], expected_t, rtol=0, atol=1e-9)
        assert expected_t[-1] > 0 and series.timestamps[0] == 0.0
        neural = behavior["predicted_neural_activity"]
        np.testing.assert_array_equal(neural.data[:], rec["neural"])
        np.testing.assert_allclose(neural.timestamps[:], expected_t, rtol=0, atol=1e-9)
        assert "principal components" in neural.description and "look-ahead 0 frames" in neural.description
        assert f"{attrs['meta']['neural']['test_variance_explained']:.4f}" in neural.description
        np.testing.assert_array_equal(behavior["frame_id"].data[:], rec["frame_id"])
        pupil = behavior["PupilTracking"]
        for what in ("area", "centre", "axes", "valid"):
            np.testing.assert_array_equal(pupil[what].data[:], rec[f"pupil_{what}"])
            np.testing.assert_allclose(pupil[what].timestamps[:], expected_t, rtol=0, atol=1e-9)
        motion = behavior["motion_svd"]
        assert motion.data.shape == (40, 4) and np.isnan(motion.data[0]).all() and np.isfinite(motion.data[-1]).all()
        np.testing.assert_array_equal(motion.data[:], rec["motion_svd"])
        assert "region [0, 480, 0, 640]" in motion.description and "binned 4x4" in motion.description
        np.testing.assert_array_equal(behavior["dropped_frames"].data[:], rec["dropped"])
        np.testing.assert_allclose(behavior["latency"].data[:], (rec["t_publish_ns"] - t) / 1e9, rtol=0, atol=1e-9)
        table = behavior["frame_accounting"].to_dataframe().set_index("what")["frames"]
        assert table["frames_exported"] == 40
        assert table["dropped_total"] == attrs["meta"]["camera"]["dropped"]["total"]
        assert f"dropped_total {table['dropped_total']}" in pose.description


def test_long_recording_has_no_critical_message(recording, tmp_path):
    """A live-layout file of 3000 frames, written here with h5py from the real recording's
    metadata, exported in-process with tiny chunks so many buffers are read and written: no
    message of importance CRITICAL or above, values equal, datasets chunked and gzip."""
    from facestream.streamer.tools import export_nwb as ex

    rec = _rows(recording)
    n = 3000
    rng = np.random.default_rng(0)
    path = tmp_path / "long.h5"
    t_capture = rec["t_capture_ns"][0] + np.cumsum(rng.integers(15_000_000, 25_000_000, n))
    with h5py.File(path, "w") as f:
        kp = rng.uniform(0, 600, (n, len(BODYPARTS), 3)).astype(np.float32)
        for b, bp in enumerate(BODYPARTS):
            for j, k in enumerate(("x", "y", "likelihood")):
                f[f"Facemap/{bp}/{k}"] = kp[:, b, j]
        columns = {"seq": np.arange(n), "frame_id": np.arange(n) * 2, "t_capture_ns": t_capture,
                   "t_camera_ns": np.full(n, -1), "t_publish_ns": t_capture + 3_000_000, "dropped": np.arange(n),
                   "neural": rng.standard_normal((n, 128)).astype(np.float32)}
        for k, v in columns.items():
            f[f"facestream/{k}"] = v
        for k, v in rec["attrs"].items():
            f["facestream"].attrs[k] = json.dumps(v)
    out = tmp_path / "long.nwb"
    old = ex.CHUNK_BYTES
    ex.CHUNK_BYTES = 4096
    try:
        info = ex.SessionInfo(session_description="long", subject_id="m1", species="Mus musculus", sex="F", age="P90D")
        result = ex.export_nwb(path, out, info)
    finally:
        ex.CHUNK_BYTES = old
    assert result.frames == n and result.neural == 128
    serious = _serious(out)
    assert not serious, [(m.importance.name, m.check_function_name, m.location) for m in serious]
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        behavior = io.read().processing["behavior"]
        pose = behavior["FacemapPose"]
        for b, bp in enumerate(BODYPARTS):
            np.testing.assert_array_equal(pose.pose_estimation_series[bp].data[:], kp[:, b, :2])
            np.testing.assert_array_equal(pose.pose_estimation_series[bp].confidence[:], kp[:, b, 2])
        np.testing.assert_allclose(pose.pose_estimation_series["paw"].timestamps[:], (t_capture - t_capture[0]) / 1e9,
                                   rtol=0, atol=1e-9)
        np.testing.assert_array_equal(behavior["predicted_neural_activity"].data[:], columns["neural"])
    with h5py.File(out, "r") as f:
        for name in ("FacemapPose/paw/data", "FacemapPose/paw/confidence", "FacemapPose/eye(back)/timestamps",
                     "predicted_neural_activity/data"):
            ds = f[f"processing/behavior/{name}"]
            assert ds.compression == "gzip" and ds.chunks is not None and ds.chunks[0] < n, (name, ds.chunks)
        # one timestamps dataset, linked from every other series
        assert isinstance(f["processing/behavior/FacemapPose/paw"].get("timestamps", getlink=True), h5py.SoftLink)


def test_tracked_video_exports_with_session_start(model, tmp_path):
    video = tmp_path / "face.avi"
    write_video(video, [video_frame(k) for k in range(12)])
    tracked = tmp_path / "face.h5"
    r = subprocess.run([*CLI, "track", str(video), "--model", str(model), "--engine", "onnx", "--out", str(tracked),
                        "--quiet"], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "face.nwb"
    common = [tracked, "--out", out, "--session-description", "tracked video", *SUBJECT]
    _one_line_error(_export(*common), "--session-start", "tracked video")
    _one_line_error(_export(*common, "--session-start", "2026-01-05T09:30:00"), "time zone")
    assert not out.exists()
    r = _export(*common, "--session-start", "2026-01-05T09:30:00+01:00")
    assert r.returncode == 0, r.stderr
    assert not _serious(out)
    rec = _rows(tracked)
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        assert nwb.session_start_time == datetime(2026, 1, 5, 9, 30, tzinfo=timezone(timedelta(hours=1)))
        pose = nwb.processing["behavior"]["FacemapPose"]
        assert rec["attrs"]["model"]["sha256"] in pose.description
        for b, bp in enumerate(BODYPARTS):
            series = pose.pose_estimation_series[bp]
            np.testing.assert_array_equal(series.data[:], rec["keypoints"][:, b, :2])
            np.testing.assert_array_equal(series.confidence[:], rec["keypoints"][:, b, 2])
            # the video's frame times are regular (25 frames/s): stored as a rate, as NWB prefers
            np.testing.assert_allclose(series.get_timestamps(), rec["t_video_s"] - rec["t_video_s"][0], rtol=0, atol=1e-9)
        np.testing.assert_array_equal(nwb.processing["behavior"]["frame_id"].data[:], rec["frame_id"])
        assert "predicted_neural_activity" not in nwb.processing["behavior"].data_interfaces


def test_bad_inputs_are_one_line(exported, recording, tmp_path):
    ok = ["--session-description", "s", *SUBJECT]
    text = tmp_path / "notes.h5"
    text.write_text("not an hdf5 file\n")
    _one_line_error(_export(text, "--out", tmp_path / "a.nwb", *ok), "not an HDF5 file")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["data"] = np.arange(10)
    _one_line_error(_export(other, "--out", tmp_path / "a.nwb", *ok), "not a facestream recording or a Facemap")
    _one_line_error(_export(tmp_path / "missing.h5", "--out", tmp_path / "a.nwb", *ok), "does not exist")
    _one_line_error(_export(recording, "--out", tmp_path / "no" / "such" / "a.nwb", *ok), "folder", "does not exist")
    before = exported.read_bytes()
    _one_line_error(_export(recording, "--out", exported, *ok), "already exists", "--overwrite")
    assert exported.read_bytes() == before
    _one_line_error(_export(recording, "--out", tmp_path / "a.nwb"), "--session-description", "--subject-id", "--sex")
    _one_line_error(_export(recording, "--out", tmp_path / "a.nwb", "--session-description", "s", "--subject-id", "m1"),
                    "--sex", "--age or --date-of-birth")
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[subject]\nname = 'x'\n")
    _one_line_error(_export(recording, "--out", tmp_path / "a.nwb", "--metadata", bad_toml), "unknown key 'name'")
    assert not list(tmp_path.glob("*.nwb")) and not list(tmp_path.glob(".*.tmp.nwb"))
    # --overwrite replaces the file
    again = tmp_path / "again.nwb"
    assert _export(recording, "--out", again, *ok).returncode == 0
    r = _export(recording, "--out", again, *ok, "--session-description", "second", "--overwrite")
    assert r.returncode == 0, r.stderr
    with pynwb.NWBHDF5IO(str(again), "r") as io:
        assert io.read().session_description == "second"
