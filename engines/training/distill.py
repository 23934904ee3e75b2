"""Distillation: a small student network trained to give a Facemap model's outputs on a rig's own video.

No human labels: the teacher (the bundled model, Facemap's base model or a fine-tuned one) labels
every training sample as it is made. A sample is a frame of the user's video through the same
augmentation code as tracker training (``datasets.make_sample``), so the student learns the
teacher on views a little beyond the video's. By default only Facemap's jitter is applied
(``augment``), not the rig randomisation (``rig_augment``, mirroring, other camera angles,
props): the student serves this rig, and its capacity goes to this rig's views.

The loss compares the two networks' outputs where decoding reads them:

- the heatmaps after ReLU, squared difference summed over each 64x64 map (the peak's cell and
  height, so the keypoint's cell and its likelihood, follow the teacher's);
- the two offset maps, absolute difference within ``OFFSET_RADIUS`` cells of the teacher's
  peak (decoding reads the offset at the peak cell; its neighbours count for a student whose
  peak lands one cell off), weighted by ``OFFSET_WEIGHT``;
- the decoded position itself, where the teacher has the keypoint in view: the student's peak
  cell plus its offsets there, against the teacher's, in cells (absolute difference, weighted by
  ``POSITION_WEIGHT``). A student peak more than ``OFFSET_RADIUS`` cells away is left to the
  heatmap term: offsets cannot carry a keypoint that far.

Frames are held out by time: the last ``holdout`` fraction of each video is never trained on;
``evaluate`` compares student and teacher there and on any other video, through the tracker's
own engines (pre-processing, network, decoding), in frame pixels and at the network's 256-px scale.

The run is a ``tracker_training.TrainingLoop``: same schedule, progress bar and resumable,
atomic checkpoints; its model file is the student file (``engines/student.py``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from .. import torch_ops
from ..bodyparts import BODYPARTS, N_KEYPOINTS
from ..model_files import ModelFileError, TrackerModel, load_model
from ..onnx_engine import OnnxNetwork, onnx_model_path
from ..preprocess import INPUT_SIZE, make_geometry
from ..student import StudentArch, StudentNet, conv_flops, save_student
from .datasets import TrainingError, TrainingSet
from .tracker_training import (
    CHECKPOINT_NAME,
    PRECISIONS,
    SCHEDULES,
    TrainingLoop,
    _native_bf16,
    load_checkpoint,
)

STUDENT_NAME = "student.npz"
REPORT_NAME = "distill_report.json"
MIN_FRAMES = 10  # per video: at least this many, of which the held-out part is at least 1
IN_VIEW = 0.6  # a keypoint is in view where the teacher's likelihood is at least this (the monitor's and encoder's threshold)
OFFSET_RADIUS = 2.0  # cells around the teacher's peak where offsets are compared
OFFSET_WEIGHT = 20.0
POSITION_WEIGHT = 4.0  # per heatmap cell of decoded error (4 px of the network's input)
_NETWORK_INPUT = make_geometry((INPUT_SIZE, INPUT_SIZE))  # decoding in the network's own 256-px input


@dataclass(frozen=True)
class DistillConfig:
    """A distillation run's settings.

    teacher: "default" (the bundled model), "facemap" or a Facemap model path. init: a student
    file (or "student", the bundled one) to start from, whose shape then replaces widths,
    separable and full_res; None starts from random weights. videos: the rig's video files.
    widths, separable, full_res: the student's shape (``StudentArch``).
    max_frames: frames read per video, spread evenly over it (memory: 300 KB per 640x480 frame).
    holdout: the final fraction of each video kept for evaluation. augment: strength of
    Facemap's jitter, rig_augment: of the rig randomisation, as in tracker training (0 = none). threads: torch threads (0 = torch's default).
    """

    out: str = "student"
    teacher: str = "default"
    init: str | None = None
    videos: tuple[str, ...] = ()
    widths: tuple[int, ...] = (16, 32, 64, 128)
    separable: bool = False
    full_res: int = 0
    steps: int = 2400
    batch: int = 16
    lr: float = 2e-3
    schedule: str = "cosine"
    seed: int = 0
    checkpoint_every: int = 200
    augment: float = 1.0
    rig_augment: float = 0.0
    max_frames: int = 1000
    holdout: float = 0.2
    precision: str = "auto"
    threads: int = 0
    name: str | None = None
    command: str = ""

    def check(self) -> None:
        """Raise TrainingError on settings no run can use."""
        arch_problem = StudentArch(tuple(self.widths), self.separable, self.full_res).check()
        problems = [
            (not self.videos, "no video given: distillation trains on frames of your own video"),
            (arch_problem is not None, f"student {arch_problem}"),
            (self.steps < 1, f"steps must be at least 1, got {self.steps}"),
            (self.batch < 1, f"batch must be at least 1, got {self.batch}"),
            (not self.lr > 0, f"lr must be positive, got {self.lr}"),
            (self.schedule not in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}"),
            (self.checkpoint_every < 1, f"checkpoint interval must be at least 1, got {self.checkpoint_every}"),
            (not 0 <= self.augment <= 3, f"augment strength must be 0 .. 3, got {self.augment}"),
            (not 0 <= self.rig_augment <= 3, f"rig augment strength must be 0 .. 3, got {self.rig_augment}"),
            (self.max_frames < MIN_FRAMES, f"max frames must be at least {MIN_FRAMES}, got {self.max_frames}"),
            (not 0 < self.holdout < 1, f"holdout must be a fraction between 0 and 1, got {self.holdout}"),
            (self.precision not in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}"),
            (self.threads < 0, f"threads must be >= 0, got {self.threads}"),
            (self.seed < 0, f"seed must be >= 0, got {self.seed}"),
        ]
        for bad, message in problems:
            if bad:
                raise TrainingError(message)

    @property
    def arch(self) -> StudentArch:
        return StudentArch(tuple(self.widths), self.separable, self.full_res)


def read_video(path: str | Path, max_frames: int) -> np.ndarray:
    """Up to ``max_frames`` grayscale frames (N, H, W) uint8 spread evenly over the video, in
    time order; TrainingError (one line) for a missing, unreadable or too short video."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TrainingError(f"{path}: no such video file")
    capture = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    try:
        if not capture.isOpened():
            raise TrainingError(f"{path}: not a video OpenCV can read")
        ok, image = capture.read()
        while ok:
            frames.append(image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
            ok, image = capture.read()
    finally:
        capture.release()
    if len(frames) < MIN_FRAMES:
        what = "no readable frame" if not frames else f"only {len(frames)} readable frames"
        raise TrainingError(f"{path}: {what}; distillation needs at least {MIN_FRAMES}")
    keep = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
    return np.stack([frames[i] for i in keep])


def split_by_time(frames: np.ndarray, holdout: float) -> tuple[np.ndarray, np.ndarray]:
    """(training frames, held-out frames): the held-out ones are the video's last ``holdout``."""
    held = max(1, math.ceil(len(frames) * holdout))
    return frames[:-held], frames[-held:]


class VideoFrames:
    """A video's training frames for ``TrainingSet``: no keypoints (the teacher labels them)."""

    def __init__(self, frames: np.ndarray) -> None:
        self.frames = frames
        self.keypoints = np.zeros((len(frames), N_KEYPOINTS, 3), np.float32)

    def __len__(self) -> int:
        return len(self.frames)

    def frame(self, index: int) -> np.ndarray:
        return self.frames[index]


def distill_loss(student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The module doc's loss between (heatmap after ReLU, row offset, col offset) maps (B, K, h, w)."""
    heat_s, row_s, col_s = student
    heat_t, row_t, col_t = teacher
    heat = ((heat_s - heat_t) ** 2).sum(dim=(-2, -1)).mean()
    size = heat_t.shape[-1]
    peak_t = heat_t.flatten(-2).argmax(dim=-1)
    grid = torch.arange(size, device=heat_t.device)
    d_row = grid.view(1, 1, size, 1) - (peak_t // size)[..., None, None]
    d_col = grid.view(1, 1, 1, size) - (peak_t % size)[..., None, None]
    near = ((d_row**2 + d_col**2) <= OFFSET_RADIUS**2).to(heat_s.dtype)
    offsets = (near * ((row_s - row_t).abs() + (col_s - col_t).abs())).sum() / near.sum()
    # the position decoding reads: the student's own peak cell and its offsets, against the teacher's
    position_s, _ = _decoded(heat_s, row_s, col_s)
    position_t, likelihood_t = _decoded(heat_t, row_t, col_t)
    in_view = likelihood_t >= IN_VIEW
    close = (position_s.detach() - position_t).abs().amax(dim=-1) <= OFFSET_RADIUS  # farther: the heatmap's to fix
    counted = (in_view & close).to(heat_s.dtype)
    position = (counted * (position_s - position_t).abs().sum(dim=-1)).sum() / counted.sum().clamp(min=1)
    return heat + OFFSET_WEIGHT * offsets + POSITION_WEIGHT * position


def _decoded(heatmap: torch.Tensor, row_offset: torch.Tensor, col_offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoint positions (B, K, 2) [x, y] in heatmap cells and likelihoods (B, K), decoded as
    the tracker decodes them (``torch_ops.decode``: the peak cell, the offsets there); the
    gradient reaches the offsets."""
    keypoints = torch_ops.decode(heatmap.detach(), row_offset, col_offset, _NETWORK_INPUT)
    return keypoints[..., :2] * (heatmap.shape[-1] / INPUT_SIZE), keypoints[..., 2]


class Distiller(TrainingLoop):
    """One distillation run; make it with ``Distiller.start`` or ``Distiller.resume``, then ``run``,
    then ``evaluate``."""

    description = "distilling"

    def __init__(self, config: DistillConfig, teacher: TrackerModel, train: list[np.ndarray], held_out: list[np.ndarray],
                 net: StudentNet, checkpoint: dict | None) -> None:
        super().__init__(config, net, checkpoint)
        self.teacher = teacher
        self.held_out = held_out
        self.data = TrainingSet([VideoFrames(f) for f in train], config.batch, config.seed, config.augment,
                                config.rig_augment)
        # the teacher labels through ONNX Runtime fp32 (its inference engine): 2.5x torch's speed on a CPU
        self._teacher_net = OnnxNetwork(onnx_model_path(teacher), config.threads, "fp32")

    @classmethod
    def start(cls, config: DistillConfig, progress: bool = False) -> Distiller:
        """A new run in ``config.out``, which must not already hold a run or a student."""
        config.check()
        out = Path(config.out).expanduser()
        for name in (CHECKPOINT_NAME, STUDENT_NAME):
            if (out / name).exists():
                raise TrainingError(f"{out / name} exists: --resume continues that run, or choose another --out")
        teacher = _teacher(config.teacher)
        start = _start(config.init, teacher)
        if start is not None:
            config = replace(config, widths=start.student.widths, separable=start.student.separable,
                             full_res=start.student.full_res)
        train, held_out = _frames(config)
        torch.manual_seed(config.seed)
        net = StudentNet(config.arch) if start is None else start.build()
        config = replace(
            config, out=str(out.resolve()), widths=tuple(config.widths),
            videos=tuple(str(Path(v).expanduser().resolve()) for v in config.videos),
            precision=config.precision if config.precision != "auto" else ("bf16" if _native_bf16() else "fp32"),
            threads=config.threads or torch.get_num_threads(), name=config.name or out.resolve().name,
        )
        return cls(config, teacher, train, held_out, net, None)

    @classmethod
    def resume(cls, out: str | Path) -> Distiller:
        """The run whose checkpoint is in ``out``, at the step it was saved, with its own settings."""
        path = Path(out).expanduser() / CHECKPOINT_NAME
        checkpoint = load_checkpoint(path)
        try:
            config = DistillConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in checkpoint["config"].items()})
        except TypeError:
            raise TrainingError(f"{path}: not a distillation checkpoint (a train-tracker run's? resume it with train-tracker)") from None
        config = replace(config, out=str(path.parent.resolve()))
        net = StudentNet(config.arch)
        net.load_state_dict(checkpoint["model"])
        train, held_out = _frames(config)
        return cls(config, _teacher(config.teacher), train, held_out, net, checkpoint)

    def loss(self, step: int) -> torch.Tensor:
        images = self.data.batch(step).images
        teacher = tuple(torch.from_numpy(o) for o in self._teacher_net(images.numpy()))
        images = images.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            _, row_offset, col_offset = self.net(images)
        student = (torch.relu(self.net.raw_heatmap.float()), row_offset.float(), col_offset.float())
        return distill_loss(student, teacher)

    def save_model(self, state: dict[str, torch.Tensor]) -> None:
        """The student file, with its teacher and how it was trained in its header."""
        recent = self.losses[-100:]
        net = StudentNet(self.config.arch)
        net.load_state_dict(state)
        save_student(self.out / STUDENT_NAME, net, {
            "name": self.config.name,
            "teacher": {"name": self.teacher.name, "sha256": self.teacher.sha256},
            "training": {
                "command": self.config.command,
                "steps": self.step,
                "total_steps": self.config.steps,
                "batch": self.config.batch,
                "augment": self.config.augment,
                "rig_augment": self.config.rig_augment,
                "videos": [Path(v).name for v in self.config.videos],
                "holdout": self.config.holdout,
                "loss": sum(recent) / len(recent) if recent else None,
                "data": ["synthetic"] if self.teacher.synthetic_only else ["video"],  # what it knows is its teacher's
            },
        })

    def evaluate(self, other_videos: tuple[str, ...] = (), threads: int = 1) -> dict:
        """The saved student against its teacher on the held-out frames and on ``other_videos``
        (read whole), with both networks' GFLOP per frame and network time; also written to
        ``<out>/distill_report.json``."""
        import json

        report = {
            "teacher": {"name": self.teacher.name, "sha256": self.teacher.sha256,
                        "gflop": conv_flops(self.teacher.build()) / 1e9},
            "student": {"path": str(self.out / STUDENT_NAME), "architecture": asdict(self.config.arch),
                        "gflop": conv_flops(StudentNet(self.config.arch)) / 1e9},
            "held_out": compare(self.teacher.state_path, self.out / STUDENT_NAME, self.held_out, threads),
            "videos": {str(v): compare(self.teacher.state_path, self.out / STUDENT_NAME,
                                       [read_video(v, 10**9)], threads) for v in other_videos},
        }
        report["flop_ratio"] = report["teacher"]["gflop"] / report["student"]["gflop"]
        (self.out / REPORT_NAME).write_text(json.dumps(report, indent=1))
        return report


def _teacher(name: str) -> TrackerModel:
    try:
        model = load_model(None if name == "default" else name)
    except ModelFileError as exc:
        raise TrainingError(f"teacher: {exc}") from None
    if model.student is not None:
        raise TrainingError(f"teacher: {model.state_path} is a student; distil from a Facemap model")
    return model


def _start(init: str | None, teacher: TrackerModel) -> TrackerModel | None:
    """The student a run starts from, which must have been distilled from the same teacher."""
    if init is None:
        return None
    try:
        model = load_model(init)
    except ModelFileError as exc:
        raise TrainingError(f"--from: {exc}") from None
    if model.student is None:
        raise TrainingError(f"--from: {model.state_path} is not a student file")
    if model.teacher["sha256"] != teacher.sha256:
        raise TrainingError(f"--from: {model.state_path} was distilled from another teacher "
                            f"(sha256 {model.teacher['sha256'][:12]}, not {teacher.sha256[:12]})")
    return model


def _frames(config: DistillConfig) -> tuple[list[np.ndarray], list[np.ndarray]]:
    train, held_out = [], []
    for video in config.videos:
        frames = read_video(video, config.max_frames)
        a, b = split_by_time(frames, config.holdout)
        train.append(a)
        held_out.append(b)
    return train, held_out


def compare(teacher: Path, student: Path, videos: list[np.ndarray], threads: int = 1) -> dict:
    """Student against teacher on frames, both through the ``onnx`` (fp32) engine: distance of
    keypoints the teacher has in view (likelihood >= IN_VIEW) in frame pixels and at the
    network's 256-px scale (mean, median, p99, max, per keypoint), likelihood agreement (mean
    and max absolute difference, share of keypoints on which both agree about being in view),
    and each network's median time per frame."""
    from ..tracker import load_tracker

    trackers = [load_tracker("onnx", str(path), threads=threads) for path in (teacher, student)]
    outputs: list[list[np.ndarray]] = [[], []]
    times: list[list[float]] = [[], []]
    scale_256: list[np.ndarray] = []
    for frames in videos:
        for frame in frames:
            for k, tracker in enumerate(trackers):
                outputs[k].append(tracker.infer(frame)[0])
                times[k].append(tracker.last_timings_ms["network"])
            scale_256.append(np.full(N_KEYPOINTS, 256 / make_geometry(frame.shape).side))
    teacher_kp, student_kp = np.stack(outputs[0]), np.stack(outputs[1])
    distance = np.linalg.norm(teacher_kp[..., :2] - student_kp[..., :2], axis=-1)
    in_view = teacher_kp[..., 2] >= IN_VIEW
    at_256 = distance * np.stack(scale_256)

    def stats(values: np.ndarray) -> dict:
        if values.size == 0:
            return {"mean": None, "median": None, "p99": None, "max": None}
        return {"mean": float(values.mean()), "median": float(np.median(values)),
                "p99": float(np.percentile(values, 99)), "max": float(values.max())}

    likelihood = np.abs(teacher_kp[..., 2] - student_kp[..., 2])
    return {
        "frames": len(teacher_kp),
        "in_view_keypoints": int(in_view.sum()),
        "px": stats(distance[in_view]),
        "px_256": stats(at_256[in_view]),
        "per_keypoint_px": {name: (float(distance[:, k][in_view[:, k]].mean()) if in_view[:, k].any() else None)
                            for k, name in enumerate(BODYPARTS)},
        "likelihood": {"mean_abs_diff": float(likelihood.mean()), "max_abs_diff": float(likelihood.max()),
                       "in_view_agreement": float(((student_kp[..., 2] >= IN_VIEW) == in_view).mean())},
        "network_ms": {"teacher": float(np.median(times[0])), "student": float(np.median(times[1]))},
    }


def report_lines(report: dict) -> list[str]:
    """The report in a few lines for the terminal."""
    lines = [f"student {report['student']['gflop']:.3f} GFLOP per frame, teacher {report['teacher']['gflop']:.3f} "
             f"({report['flop_ratio']:.1f}x fewer)"]
    for label, result in [("held-out frames", report["held_out"]), *report["videos"].items()]:
        px, at_256, like = result["px"], result["px_256"], result["likelihood"]
        if px["mean"] is None:
            lines.append(f"{label}: {result['frames']} frames, no keypoint in view for the teacher")
            continue
        lines.append(
            f"{label}: {result['frames']} frames, {result['in_view_keypoints']} in-view keypoints: distance from the "
            f"teacher mean {px['mean']:.2f} px, p99 {px['p99']:.2f} px (256-px scale {at_256['mean']:.2f} / "
            f"{at_256['p99']:.2f}); likelihood |diff| mean {like['mean_abs_diff']:.3f}, in-view agreement "
            f"{100 * like['in_view_agreement']:.1f} %; network {result['network_ms']['student']:.1f} ms vs "
            f"{result['network_ms']['teacher']:.1f} ms (onnx fp32)")
    return lines

