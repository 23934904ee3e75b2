"""Students: the file format, loading on every CPU engine, and `facestream distill` end to end.

Everything is real (torch, ONNX Runtime, video files, the bundled teacher) and tiny: students of
widths 4-4-8-8, 160x120 videos of a few dozen frames, a few steps of batch 2.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from facestream.engines.model_files import BUNDLED_STUDENT, ModelFileError, load_model
from facestream.engines.quantize import VideoCalibration
from facestream.engines.student import StudentArch, StudentNet, conv_flops, save_student
from facestream.engines.tracker import load_tracker
from facestream.engines.decode import decode
from facestream.engines.preprocess import make_geometry
from facestream.engines.training.distill import (
    CHECKPOINT_NAME,
    POSITION_WEIGHT,
    STUDENT_NAME,
    Distiller,
    _decoded,
    distill_loss,
)
from facestream.streamer.cli import main
from facestream.streamer.tools.simulate import write_session

TINY = ["--widths", "4,4,8,8", "--batch", "2", "--max-frames", "24", "--threads", "1", "--quiet"]
REAL_FRAME = Path("/work/shared/reference/real_faces_unlabelled/rig_frame_side.png")


@pytest.fixture(scope="module", autouse=True)
def isolated_cache(tmp_path_factory):
    """ONNX exports and int8 engines in a cache folder of this module's own."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """A 30-frame 160x120 video of the simulator's face."""
    session = write_session(tmp_path_factory.mktemp("sim"), 30, seed=3, width=160, height=120, neurons=0, progress=False)
    return session.video


@pytest.fixture(scope="module")
def student_file(tmp_path_factory) -> Path:
    """A student of random weights (BatchNorm statistics moved off their defaults), as a file."""
    torch.manual_seed(0)
    net = StudentNet(StudentArch((4, 4, 8, 8)))
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("student") / "tiny.npz"
    save_student(path, net.eval(), {"name": "tiny", "teacher": {"name": "t", "sha256": "ab" * 32}, "training": {}})
    return path


def write_video(path: Path, frames: list[np.ndarray]) -> Path:
    height, width = frames[0].shape
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (width, height), False)
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def test_student_output_contract_and_flops():
    net = StudentNet(StudentArch((16, 32, 64, 128))).eval()
    heatmap, row, col = net(torch.zeros(2, 1, 256, 256))
    assert heatmap.shape == row.shape == col.shape == (2, 15, 64, 64)
    assert (heatmap >= 0).all()
    teacher = load_model().build()
    assert conv_flops(teacher) / 1e9 == pytest.approx(4.29, abs=0.01)  # Facemap's network, as documented
    assert conv_flops(teacher) / conv_flops(net) >= 4


def test_the_distillation_loss_weighs_the_position_decoding_reads():
    rng = np.random.default_rng(0)
    heat = rng.uniform(0, 0.2, (1, 2, 64, 64)).astype(np.float32)
    heat[0, 0, 20, 30] = 3.0  # keypoint 0 in view (likelihood 0.95)
    heat[0, 1, 40, 10] = 0.3  # keypoint 1 out of view (0.57 < 0.6)
    rows, cols = (rng.uniform(-0.1, 0.1, (1, 2, 64, 64)).astype(np.float32) for _ in range(2))
    teacher = tuple(torch.from_numpy(a) for a in (heat, rows, cols))
    # positions in cells, as the tracker decodes them (4 px of the 256-px input per cell)
    xy = decode(heat, rows, cols, make_geometry((256, 256)))[..., :2]
    assert np.allclose(_decoded(*teacher)[0].numpy() * 4, xy, atol=1e-4)

    def gradient(shift_keypoint: int, row: int, col: int, student_peak: tuple[int, int] | None = None) -> float:
        student = [t.clone() for t in teacher]
        if student_peak is not None:
            student[0][0, shift_keypoint, student_peak[0], student_peak[1]] = 5.0
        student[1] = (student[1] + 0.01).requires_grad_(True)  # off the teacher, where |.| has a slope
        distill_loss(tuple(student), teacher).backward()
        return float(student[1].grad[0, shift_keypoint, row, col])

    assert float(distill_loss(teacher, teacher)) == 0.0
    # the in-view keypoint's offset at its peak carries the position term on top of the neighbours'
    at_peak, beside = gradient(0, 20, 30), gradient(0, 20, 31)
    assert at_peak == pytest.approx(beside + POSITION_WEIGHT * 6, rel=1e-3)  # d|6 * offset| = 6
    # an out-of-view keypoint's position is not trained; neither is one whose student peak is far off
    assert gradient(1, 40, 10) == pytest.approx(gradient(1, 40, 11))
    assert gradient(0, 50, 50, student_peak=(50, 50)) == 0.0


def test_student_file_loads_as_a_tracker_model_that_names_its_teacher(student_file):
    model = load_model(student_file)
    assert model.student == StudentArch((4, 4, 8, 8))
    identity = model.identity()
    assert identity["kind"] == "student" and identity["teacher"]["sha256"] == "ab" * 32
    assert load_model().identity()["kind"] == "facemap"


@pytest.mark.parametrize("engine", ["onnx", "onnx-int8"])
def test_student_runs_on_the_cpu_engines_as_in_pytorch(student_file, video, engine):
    frames = np.stack([f for f in _read(video)[:4]])
    reference = load_tracker("torch", student_file, threads=1).infer(frames)
    tracker = load_tracker(engine, student_file, threads=1, calibration=VideoCalibration(video))
    keypoints = tracker.infer(frames)
    assert tracker.describe()["kind"] == "student"
    assert tracker.describe()["teacher"]["sha256"] == "ab" * 32
    assert keypoints.shape == (4, 15, 3)
    if engine == "onnx":  # same arithmetic up to float rounding: same cells, same likelihoods
        np.testing.assert_allclose(keypoints, reference, atol=1e-2)
    else:
        assert np.isfinite(keypoints).all()


def test_a_student_file_that_is_not_one_is_refused_in_one_line(tmp_path, student_file):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, __header__=np.array([{"format": "facestream-student"}], dtype=object))
    no_header = tmp_path / "plain.npz"
    np.savez(no_header, weight=np.zeros(3))
    wrong = tmp_path / "wrong.npz"
    with zipfile.ZipFile(student_file) as source, zipfile.ZipFile(wrong, "w") as target:
        for item in source.infolist():
            if not item.filename.startswith("heads.weight"):
                target.writestr(item, source.read(item))
    for path, message in [(garbage, "not a readable .npz"), (pickled, "Object arrays cannot be loaded"),
                          (no_header, "not a facestream student file"), (wrong, "missing heads.weight"),
                          (tmp_path / "none.npz", "file not found")]:
        with pytest.raises(ModelFileError, match=message) as caught:
            load_model(path)
        assert "\n" not in str(caught.value)


def test_distill_on_a_simulated_video_then_resume(tmp_path, video):
    out = tmp_path / "run"
    runner = CliRunner()
    first = runner.invoke(main, ["distill", str(video), "--out", str(out), "--steps", "2", "--checkpoint-every", "1",
                                 "--eval-video", str(video), "--json", *TINY])
    assert first.exit_code == 0, first.output
    report = json.loads(first.output.strip().splitlines()[-1])
    assert report["held_out"]["frames"] == 5  # the last 20 % of the 24 frames read, by time
    assert report["videos"][str(video)]["frames"] == 30
    assert set(report["held_out"]) >= {"px", "px_256", "per_keypoint_px", "likelihood", "network_ms"}
    assert report["student"]["gflop"] < report["teacher"]["gflop"]
    assert (out / CHECKPOINT_NAME).is_file() and (out / "distill_report.json").is_file()
    model = load_model(out / STUDENT_NAME)
    assert model.teacher["sha256"] == load_model().sha256
    assert model.synthetic_only  # the bundled teacher knows only synthetic faces, so does its student

    # the run's settings are kept: a resumed run finishes where it was going, from its step
    before = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    assert before["step"] == 2
    run = Distiller.resume(out)
    assert run.step == 2 and run.config.widths == (4, 4, 8, 8)
    run.config = replace(run.config, steps=3)
    assert run.run().step == 3
    refused = runner.invoke(main, ["distill", "--resume", "--out", str(out), "--steps", "5"])
    assert refused.exit_code != 0 and "drop --steps" in refused.output


def test_distill_can_start_from_a_student_of_the_same_teacher(tmp_path, video):
    first, second = tmp_path / "first", tmp_path / "second"
    assert CliRunner().invoke(main, ["distill", str(video), "--out", str(first), "--steps", "1", *TINY]).exit_code == 0
    args = ["distill", str(video), "--from", str(first / STUDENT_NAME), "--widths", "8,8,8,8", "--steps", "1"]
    result = CliRunner().invoke(main, [*args[:1], *TINY, *args[1:], "--out", str(second)])
    assert result.exit_code == 0, result.output
    assert load_model(second / STUDENT_NAME).student.widths == (4, 4, 8, 8)  # the starting student's shape
    other_teacher = tmp_path / "other.npz"
    net = StudentNet(StudentArch((4, 4, 8, 8)))
    save_student(other_teacher, net.eval(), {"name": "x", "teacher": {"name": "t", "sha256": "cd" * 32}, "training": {}})
    for start, message in [(other_teacher, "distilled from another teacher"), (video, "--from:")]:
        refused = CliRunner().invoke(main, [*args[:1], *TINY, str(video), "--from", str(start), "--out", str(tmp_path / "no")])
        assert refused.exit_code != 0 and message in refused.output, refused.output


@pytest.mark.skipif(not REAL_FRAME.is_file(), reason="the real rig frame is not at hand")
def test_distill_on_a_video_made_of_a_real_rig_frame(tmp_path):
    """A short video of a real infrared rig frame, moved a few pixels each frame as a camera shakes."""
    image = cv2.imread(str(REAL_FRAME), cv2.IMREAD_GRAYSCALE)
    image = cv2.resize(image, (160, 120), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    frames = [np.roll(image, tuple(rng.integers(-3, 4, 2)), axis=(0, 1)) for _ in range(20)]
    video = write_video(tmp_path / "real.avi", frames)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["distill", str(video), "--out", str(out), "--steps", "2", *TINY])
    assert result.exit_code == 0, result.output
    assert load_model(out / STUDENT_NAME).student is not None
    assert "distance from the teacher" in result.output


def test_bad_inputs_are_refused_in_one_line(tmp_path, video):
    unreadable = tmp_path / "teacher.pt"
    unreadable.write_bytes(b"garbage")
    short = write_video(tmp_path / "short.avi", [np.full((120, 160), 100, np.uint8)] * 4)
    not_video = tmp_path / "notes.avi"
    not_video.write_text("hello")
    cases = [
        ([], "no video given"),
        ([str(tmp_path / "missing.avi")], "no such video file"),
        ([str(short)], "only 4 readable frames"),
        ([str(not_video)], "not a video OpenCV can read"),
        ([str(video), "--teacher", str(unreadable)], "teacher:"),
        ([str(video), "--widths", "4,4"], "--widths must be 4 positive integers"),
        ([str(video), "--holdout", "1.5"], "holdout must be a fraction"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, ["distill", *TINY, "--out", str(tmp_path / "never"), "--steps", "1", *args])
        assert result.exit_code != 0, args
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], (args, result.output)
    assert not (tmp_path / "never" / STUDENT_NAME).exists()


@pytest.mark.skipif(not BUNDLED_STUDENT.is_file(), reason="no bundled student")
def test_the_bundled_student_is_listed_and_named_student():
    listed = [e for e in json.loads(CliRunner().invoke(main, ["models", "--json"]).output) if e.get("kind") == "student"]
    assert [e["state"] for e in listed] == [str(BUNDLED_STUDENT)]
    model = load_model("student")
    assert model.teacher["sha256"] == load_model().sha256 == listed[0]["teacher_sha256"]


def _read(video: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    frames = []
    ok, frame = capture.read()
    while ok:
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame)
        ok, frame = capture.read()
    capture.release()
    return frames
