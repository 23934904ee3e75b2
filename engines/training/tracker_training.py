"""Training Facemap's tracker network: Facemap's recipe, resumable, saved as a Facemap model.

The recipe follows Facemap's model_training.train: a Gaussian heatmap target (sigma 3 cells)
scaled to sum to 10, compared by L1 with the network's training-mode heatmap (which FMnet scales
to sum to 10); plus 0.5 x the Euclidean error of the two offset maps within sigma of the
keypoint, whose targets are (cell - keypoint) / (2 sigma), what decode.py inverts; keypoints out
of view are left out of both. Adam, gradient norm clipped at 50. Fine-tuning takes Facemap's
defaults: lr 1e-4 for 36 epochs, divided by 10 for the last 6 and by 25 for the last 3.
Training from scratch takes a higher lr with a warm-up and a cosine decay.

One term is added to Facemap's loss, because Facemap's leaves the likelihood untrained (the
training heatmap is scaled to a fixed sum, so its height is free): a hinge on the pre-ReLU
heatmap that lifts it to ``PRESENCE_MARGIN`` at a keypoint in view (likelihood 0.88) and keeps
it at or below 0 everywhere when the keypoint is out of view or hidden (likelihood 0.5).
``presence_weight=0`` gives Facemap's loss exactly.

For speed on a CPU the network runs in channels-last layout and, where the CPU computes bfloat16
natively, under bfloat16 autocast (weights, optimizer and loss stay float32). The run's state
(weights, optimizer, step, torch's RNG, settings) is written atomically to
``<out>/training_checkpoint.pth`` every ``checkpoint_every`` steps, on a stop request and at the
end, together with the model files ``facemap_model_state.pt`` and ``facemap_model_params.pth``,
which model_files.load_model and the pipeline load as they are.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm import tqdm

from ..bodyparts import N_KEYPOINTS
from .datasets import (
    HEATMAP_SIZE,
    LabelledFrames,
    TrainingError,
    TrainingSet,
    load_refined_data,
    synthetic_frames,
)
from ..fmnet import FMnet
from ..model_files import PARAMS_NAME, STATE_NAME, SYNTHETIC_DATA, load_model
from ..onnx_engine import cache_dir

CHECKPOINT_NAME = "training_checkpoint.pth"
CHECKPOINT_FORMAT = 1
SCRATCH_CHANNELS = (16, 32, 64, 128, 200)
SIGMA = 3.0  # heatmap cells
HEATMAP_SUM = 10.0
OFFSET_WEIGHT = 0.5
GRAD_CLIP = 50.0
PRESENCE_MARGIN = 2.0
FINE_TUNE_LR, SCRATCH_LR = 1e-4, 2e-3
FACEMAP_EPOCHS = 36
WARMUP_FRACTION, COSINE_FLOOR = 0.03, 0.01
SCHEDULES = ("facemap", "cosine")
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class TrainConfig:
    """A training run's settings; ``resolve`` fills the ones left None from the data and the CPU.

    init: "scratch", "default" (the bundled model) or a model path for model_files.load_model.
    data: "synthetic", "views" and/or paths of Facemap refined-data files. steps, or else epochs
    (passes over the labelled frames; a synthetic bank counts synthetic_seeds x frames_per_seed
    frames, the views bank view_animals x views_per_animal),
    default 36 epochs. lr and schedule default by init (scratch: 2e-3, "cosine"; else 1e-4,
    "facemap"). augment: augmentation strength (0 = none, 1 = Facemap-like ranges).
    threads: torch threads (0 = torch's default); precision: "auto" = bf16 where native.
    """

    out: str = "trained_tracker"
    init: str = "default"
    data: tuple[str, ...] = ("synthetic",)
    steps: int | None = None
    epochs: float | None = None
    batch: int = 8
    lr: float | None = None
    schedule: str | None = None
    seed: int = 0
    checkpoint_every: int = 200
    augment: float = 1.0
    synthetic_seeds: int = 512
    frames_per_seed: int = 24
    view_animals: int = 1024
    views_per_animal: int = 4
    width: int = 640
    height: int = 480
    presence_weight: float = 1.0
    precision: str = "auto"
    threads: int = 0
    channels: tuple[int, ...] | None = None
    name: str | None = None
    command: str = ""

    def check(self) -> None:
        """Raise TrainingError on settings no run can use."""
        problems = [
            (self.steps is not None and self.epochs is not None, "give steps or epochs, not both"),
            (self.steps is not None and self.steps < 1, f"steps must be at least 1, got {self.steps}"),
            (self.epochs is not None and not self.epochs > 0, f"epochs must be positive, got {self.epochs}"),
            (self.batch < 1, f"batch must be at least 1, got {self.batch}"),
            (self.lr is not None and not self.lr > 0, f"lr must be positive, got {self.lr}"),
            (self.schedule not in (None, *SCHEDULES), f"schedule must be one of {', '.join(SCHEDULES)}"),
            (self.checkpoint_every < 1, f"checkpoint interval must be at least 1, got {self.checkpoint_every}"),
            (not 0 <= self.augment <= 3, f"augment strength must be 0 .. 3, got {self.augment}"),
            (self.precision not in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}"),
            (self.threads < 0, f"threads must be >= 0, got {self.threads}"),
            (self.seed < 0, f"seed must be >= 0, got {self.seed}"),
            (not self.data, "no training data given"),
            (self.view_animals < 1 or self.views_per_animal < 1, "view animals and views per animal must be at least 1"),
            (self.presence_weight < 0, f"presence weight must be >= 0, got {self.presence_weight}"),
        ]
        for bad, message in problems:
            if bad:
                raise TrainingError(message)

    def resolve(self, n_frames: int, channels: tuple[int, ...]) -> TrainConfig:
        """These settings with every default filled in, as the checkpoint records them."""
        scratch = self.init == "scratch"
        steps = self.steps or math.ceil((self.epochs or FACEMAP_EPOCHS) * n_frames / self.batch)
        precision = self.precision if self.precision != "auto" else ("bf16" if _native_bf16() else "fp32")
        return replace(
            self,
            steps=steps,
            epochs=None,
            lr=self.lr or (SCRATCH_LR if scratch else FINE_TUNE_LR),
            schedule=self.schedule or ("cosine" if scratch else "facemap"),
            precision=precision,
            threads=self.threads or torch.get_num_threads(),
            channels=tuple(channels),
            name=self.name or Path(self.out).resolve().name,
            data=tuple(d if d in SYNTHETIC_DATA else str(Path(d).expanduser().resolve()) for d in self.data),
        )


def _native_bf16() -> bool:
    """Whether the CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX); emulated it is slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def learning_rate(config: TrainConfig, step: int) -> float:
    """The lr at ``step`` of a resolved config."""
    lr, total = float(config.lr), int(config.steps)
    if config.schedule == "facemap":
        done = step / total
        return lr if done < 30 / 36 else lr / 10 if done < 33 / 36 else lr / 25
    warmup = max(1, round(WARMUP_FRACTION * total))
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return lr * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress)))


def heatmap_targets(cells: torch.Tensor, size: int = HEATMAP_SIZE) -> tuple[torch.Tensor, ...]:
    """Targets for keypoints at ``cells`` (B, K, 2) [row, col] in heatmap cells.

    Returns the heatmap (B, K, size, size) summing to 10, the row and column offset maps
    ((cell - keypoint) / (2 sigma), so decode's cell - 2 sigma x offset is the keypoint), and the
    mask of cells within sigma of the keypoint, where the offsets are trained.
    """
    grid = torch.arange(size, dtype=torch.float32)
    d_row = grid.view(1, 1, size, 1) - cells[..., 0, None, None]
    d_col = grid.view(1, 1, 1, size) - cells[..., 1, None, None]
    dist2 = d_row**2 + d_col**2
    heat = torch.exp(-dist2 / (2 * SIGMA**2))
    heat = HEATMAP_SUM * heat / (1e-3 + heat.sum(dim=(-2, -1), keepdim=True))
    scale = 2 * SIGMA
    return heat, (d_row / scale).expand_as(heat), (d_col / scale).expand_as(heat), dist2 <= SIGMA**2


def tracker_loss(
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    raw_heatmap: torch.Tensor,
    cells: torch.Tensor,
    visible: torch.Tensor,
    presence_weight: float,
) -> torch.Tensor:
    """Facemap's loss over the keypoints in view, plus the presence hinge (see the module doc).

    outputs: FMnet's training-mode (heatmap, row offset, col offset); raw_heatmap: the heatmap
    head's output before its ReLU, all (B, K, h, w).
    """
    heatmap, row_offset, col_offset = outputs
    target, row_target, col_target, near = heatmap_targets(cells, heatmap.shape[-1])
    per_keypoint = (heatmap - target).abs().sum(dim=(-2, -1))
    # the epsilon keeps the gradient finite where the offset error is exactly zero
    offset_error = torch.sqrt((row_offset - row_target) ** 2 + (col_offset - col_target) ** 2 + 1e-12)
    per_keypoint = per_keypoint + OFFSET_WEIGHT * (near * offset_error).sum(dim=(-2, -1))
    in_view = visible.to(per_keypoint.dtype)
    loss = (per_keypoint * in_view).sum() / in_view.sum().clamp(min=1)
    if presence_weight:
        flat = raw_heatmap.flatten(-2)
        size = raw_heatmap.shape[-1]
        cell = cells.round().clamp(0, size - 1).long()
        at_keypoint = flat.gather(-1, (cell[..., 0] * size + cell[..., 1])[..., None])[..., 0]
        hinge = torch.where(visible, torch.relu(PRESENCE_MARGIN - at_keypoint), torch.relu(flat.amax(dim=-1)))
        loss = loss + presence_weight * hinge.mean()
    return loss


@dataclass
class TrainResult:
    """Where a run stands: its folder, steps done of the total, every step's loss, mean step time."""

    out: Path
    step: int
    total_steps: int
    losses: list[float] = field(repr=False)
    seconds_per_step: float

    @property
    def complete(self) -> bool:
        return self.step >= self.total_steps


class TrainingLoop:
    """A resumable optimizer loop: Adam, the lr schedule, gradient clipping, a progress bar and
    atomic checkpoints. A kind of run supplies ``loss(step)``, its ``description`` and
    ``save_model(state)`` (the model files written beside each checkpoint); its settings need
    lr, steps, schedule, threads, checkpoint_every and precision."""

    description = "training"

    def __init__(self, config, net: torch.nn.Module, checkpoint: dict | None) -> None:
        self.config = config
        self.out = Path(config.out)
        torch.set_num_threads(config.threads)
        self.net = net.train().to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=float(config.lr), weight_decay=0.0)
        self.step = 0
        self.losses: list[float] = []
        if checkpoint is not None:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.step = int(checkpoint["step"])
            self.losses = [float(v) for v in checkpoint["losses"]]
            torch.set_rng_state(checkpoint["torch_rng"])

    def loss(self, step: int) -> torch.Tensor:
        raise NotImplementedError

    def save_model(self, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def train_step(self) -> float:
        """One optimizer step on batch ``self.step``; its loss."""
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.config, self.step)
        loss = self.loss(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), GRAD_CLIP)
        self.optimizer.step()
        self.step += 1
        value = float(loss.detach())
        self.losses.append(value)
        return value

    def run(self, should_stop: Callable[[], bool] = lambda: False, progress: bool = False) -> TrainResult:
        """Train to the configured step count or until ``should_stop()``; save; report."""
        total = int(self.config.steps)
        started, first = time.perf_counter(), self.step
        with tqdm(total=total, initial=self.step, desc=self.description, unit="step", disable=not progress) as bar:
            while self.step < total and not should_stop():
                self.train_step()
                recent = self.losses[-50:]
                bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}", lr=f"{learning_rate(self.config, self.step - 1):.1e}")
                bar.update(1)
                if self.step % self.config.checkpoint_every == 0 and self.step < total:
                    self.save()
        self.save()
        done = self.step - first
        return TrainResult(self.out, self.step, total, self.losses, (time.perf_counter() - started) / max(done, 1))

    def save(self) -> None:
        """The checkpoint and the model files at the current step, each written atomically."""
        self.out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().clone() for k, v in self.net.state_dict().items()}
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "model": state,
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "losses": list(self.losses),
            "torch_rng": torch.get_rng_state(),
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.config).items()},
        }
        atomic_save(checkpoint, self.out / CHECKPOINT_NAME)
        self.save_model(state)

    def autocast(self):
        """bfloat16 autocast where the run's precision says so."""
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.config.precision == "bf16")


class Trainer(TrainingLoop):
    """One training run of Facemap's network; make it with ``Trainer.start`` or ``Trainer.resume``, then ``run``."""

    def __init__(self, config: TrainConfig, data: TrainingSet, net: FMnet, checkpoint: dict | None) -> None:
        super().__init__(config, net, checkpoint)
        self.data = data
        self._raw: dict[str, torch.Tensor] = {}
        self.net.Conv2_1x1.conv0.register_forward_hook(lambda _m, _i, out: self._raw.__setitem__("heatmap", out))

    @classmethod
    def start(cls, config: TrainConfig, progress: bool = False) -> Trainer:
        """A new run in ``config.out``, which must not already hold a run or a model."""
        config.check()
        out = Path(config.out).expanduser()
        for name in (CHECKPOINT_NAME, STATE_NAME):
            if (out / name).exists():
                raise TrainingError(f"{out / name} exists: --resume continues that run, or choose another --out")
        torch.manual_seed(config.seed)
        if config.init == "scratch":
            net = FMnet(SCRATCH_CHANNELS, output_ch=N_KEYPOINTS)
        else:
            net = load_model(None if config.init == "default" else config.init).build()
        sources = _sources(config, progress)
        n_frames = sum(len(s) for s in sources)
        config = replace(config, out=str(out.resolve())).resolve(n_frames, net.channels)
        return cls(config, TrainingSet(sources, config.batch, config.seed, config.augment), net, None)

    @classmethod
    def resume(cls, out: str | Path, progress: bool = False) -> Trainer:
        """The run whose checkpoint is in ``out``, at the step it was saved, with its own settings."""
        path = Path(out).expanduser() / CHECKPOINT_NAME
        checkpoint = load_checkpoint(path)
        config = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in checkpoint["config"].items()})
        config = replace(config, out=str(path.parent.resolve()))
        net = FMnet(config.channels, output_ch=N_KEYPOINTS)
        net.load_state_dict(checkpoint["model"])
        sources = _sources(config, progress)
        return cls(config, TrainingSet(sources, config.batch, config.seed, config.augment), net, checkpoint)

    def loss(self, step: int) -> torch.Tensor:
        batch = self.data.batch(step)
        images = batch.images.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            outputs = self.net(images)
        outputs = tuple(o.float() for o in outputs)
        return tracker_loss(outputs, self._raw["heatmap"].float(), batch.cells, batch.visible, self.config.presence_weight)

    def save_model(self, state: dict[str, torch.Tensor]) -> None:
        """Facemap's two model files."""
        recent = self.losses[-100:]
        params = {
            "params": {"channels": list(self.config.channels)},
            "facestream": {
                "name": self.config.name,
                "trained": True,
                "command": self.config.command,
                "steps": self.step,
                "total_steps": int(self.config.steps),
                "seed": self.config.seed,
                "init": self.config.init,
                "data": list(self.config.data),
                "loss": sum(recent) / len(recent) if recent else None,
            },
        }
        atomic_save(params, self.out / PARAMS_NAME)
        atomic_save(state, self.out / STATE_NAME)


def _sources(config: TrainConfig, progress: bool) -> list[LabelledFrames]:
    banks = {"synthetic": (config.synthetic_seeds, config.frames_per_seed, "synthetic faces"),
             "views": (config.view_animals, config.views_per_animal, "3D views of synthetic heads")}
    sources: list[LabelledFrames] = []
    for item in config.data:
        if item not in banks:
            sources.append(load_refined_data(item))
            continue
        seeds, per_seed, what = banks[item]
        with tqdm(total=seeds, desc=f"rendering {what}", unit="face", disable=not progress, leave=False) as bar:
            sources.append(synthetic_frames(
                config.width, config.height, seeds, per_seed, cache_dir() / "training",
                progress=lambda n: bar.update(n - bar.n), kind=item,
            ))
    return sources


def load_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise TrainingError(f"{path}: no training checkpoint to resume")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unreadable files
        raise TrainingError(f"{path}: unreadable training checkpoint ({type(exc).__name__})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path}: not a facestream training checkpoint (format {CHECKPOINT_FORMAT})")
    return checkpoint


def atomic_save(obj: object, path: Path) -> None:
    """torch.save to a temporary file beside ``path``, flushed to disk, then renamed over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
