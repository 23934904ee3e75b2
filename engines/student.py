"""A student tracker: a small network distilled from a Facemap model, with Facemap's outputs.

It takes the same (B, 1, 256, 256) input as Facemap's network (the same pre-processing) and
gives the same three (B, 15, 64, 64) maps (heatmap after ReLU, row offset, column offset), so
decoding and everything downstream are unchanged. It is much cheaper because nothing runs at
256x256: a 3x3 stride-2 stem goes straight to 128x128, the encoder stages are narrow, and the
blocks may be depthwise separable (a 3x3 depthwise then a 1x1 pointwise convolution).

Layout (widths ``w0 .. w3``): stem 1 -> w0 at 128; a block w0 -> w0 at 128 (``full_res``
blocks, 0 or 1); max-pool, block w0 -> w1 at 64; max-pool, block w1 -> w2 at 32; max-pool,
block w2 -> w3 at 16; upsample x2, concatenate the 32x32 features, block -> w2; upsample x2,
concatenate the 64x64 features, block -> w1; three 1x1 heads. A block is conv -> BatchNorm ->
ReLU, twice (post-activation, so the export folds each BatchNorm into its convolution).

The file format (``*.npz``, read with ``allow_pickle=False``, so loading it runs no code):
one array per weight, named as the state dict names it, plus ``__header__``: the UTF-8 bytes
of a JSON object ``{"format": "facestream-student", "version": 1, "name", "architecture":
{"widths", "separable", "full_res"}, "input_size": 256, "output_size": 64, "keypoints": 15,
"teacher": {"name", "sha256"}, "training": {...}}``. docs/tracker-training.md describes it.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .bodyparts import N_KEYPOINTS
from .student_arch import StudentArch

FORMAT = "facestream-student"
VERSION = 1
HEADER_KEY = "__header__"
INPUT_SIZE, OUTPUT_SIZE = 256, 64


def _unit(ch_in: int, ch_out: int, separable: bool) -> nn.Sequential:
    if separable and ch_in == ch_out:
        convs = [nn.Conv2d(ch_in, ch_in, 3, padding=1, groups=ch_in, bias=False), nn.Conv2d(ch_in, ch_out, 1, bias=False)]
    elif separable:
        convs = [nn.Conv2d(ch_in, ch_out, 1, bias=False), nn.Conv2d(ch_out, ch_out, 3, padding=1, groups=ch_out, bias=False)]
    else:
        convs = [nn.Conv2d(ch_in, ch_out, 3, padding=1, bias=False)]
    return nn.Sequential(*convs, nn.BatchNorm2d(ch_out), nn.ReLU(inplace=True))


def _block(ch_in: int, ch_out: int, separable: bool) -> nn.Sequential:
    return nn.Sequential(_unit(ch_in, ch_out, separable), _unit(ch_out, ch_out, separable))


class StudentNet(nn.Module):
    """The student network; ``forward`` returns what FMnet's does, in both modes."""

    def __init__(self, arch: StudentArch) -> None:
        super().__init__()
        problem = arch.check()
        if problem:
            raise ValueError(problem)
        self.arch = arch
        w0, w1, w2, w3 = arch.widths
        s = arch.separable
        self.stem = nn.Sequential(nn.Conv2d(1, w0, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w0), nn.ReLU(inplace=True))
        self.full = nn.Sequential(*[_block(w0, w0, s) for _ in range(arch.full_res)])
        self.down = nn.ModuleList([_block(w0, w1, s), _block(w1, w2, s), _block(w2, w3, s)])
        self.up = nn.ModuleList([_block(w3 + w2, w2, s), _block(w2 + w1, w1, s)])
        self.heads = nn.Conv2d(w1, 3 * N_KEYPOINTS, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(heatmap, row offset, column offset), (B, 15, 64, 64) each, for a (B, 1, 256, 256) input.

        As FMnet: the heatmap is the ReLU of its head, scaled to sum to 10 per map in training mode."""
        x = self.full(self.stem(x))
        skips = []
        for block in self.down:
            x = block(F.max_pool2d(x, kernel_size=3, stride=2, padding=1))
            skips.append(x)
        for k, block in enumerate(self.up):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = block(torch.cat((x, skips[-2 - k]), dim=1))
        raw, row_offset, col_offset = self.heads(x).split(N_KEYPOINTS, dim=1)
        self.raw_heatmap = raw
        hm = F.relu(raw)
        if self.training:
            hm = 10 * hm / (1e-4 + hm.sum(dim=(-2, -1), keepdim=True))
        return hm, row_offset, col_offset


def conv_flops(net: nn.Module, size: int = INPUT_SIZE) -> float:
    """Multiply-adds x 2 of every convolution for one (1, 1, size, size) input: the network's
    GFLOP per frame is this / 1e9 (pooling, upsampling, BatchNorm and ReLU are left out)."""
    total = 0

    def count(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        total += 2 * per_output * output.numel()

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, nn.Conv2d)]
    was_training = net.training
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, 1, size, size))
    finally:
        for hook in hooks:
            hook.remove()
        net.train(was_training)
    return float(total)


class StudentFileError(ValueError):
    """A student file is missing, unreadable or not a student; one line for the user."""


def save_student(path: str | Path, net: StudentNet, header: dict) -> None:
    """Write ``net``'s weights and ``header`` (plus format, version and architecture) to ``path``."""
    full = {"format": FORMAT, "version": VERSION, **header, "architecture": asdict(net.arch),
            "input_size": INPUT_SIZE, "output_size": OUTPUT_SIZE, "keypoints": N_KEYPOINTS}
    arrays = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
    arrays[HEADER_KEY] = np.frombuffer(json.dumps(full).encode(), dtype=np.uint8)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def read_student(path: Path) -> tuple[dict, dict[str, torch.Tensor], str]:
    """(header, state dict, sha256) of a student file; StudentFileError with one line otherwise."""
    if not path.is_file():
        raise StudentFileError(f"{path}: file not found")
    data = path.read_bytes()
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise StudentFileError(f"{path}: not a student file (not a readable .npz: {str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})") from None
    raw = arrays.pop(HEADER_KEY, None)
    try:
        header = json.loads(bytes(raw).decode()) if raw is not None and raw.dtype == np.uint8 else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise StudentFileError(f"{path}: not a facestream student file (no {HEADER_KEY} naming format {FORMAT!r})")
    if header.get("version") != VERSION:
        raise StudentFileError(f"{path}: student file version {header.get('version')!r}; this facestream reads version {VERSION}")
    spec = header.get("architecture")
    try:
        arch = StudentArch(widths=tuple(spec["widths"]), separable=bool(spec["separable"]), full_res=int(spec["full_res"]))
    except (TypeError, KeyError, ValueError):
        raise StudentFileError(f"{path}: its header's architecture is not widths, separable, full_res: {spec!r}"[:200]) from None
    problem = arch.check()
    if problem:
        raise StudentFileError(f"{path}: {problem}")
    expected = {k: tuple(v.shape) for k, v in StudentNet(arch).state_dict().items()}
    problems = [f"missing {k}" for k in expected if k not in arrays]
    problems += [f"unexpected {k}" for k in arrays if k not in expected]
    problems += [f"{k} has shape {list(arrays[k].shape)}, expected {list(s)}" for k, s in expected.items()
                 if k in arrays and tuple(arrays[k].shape) != s]
    problems += [f"{k} is {arrays[k].dtype}" for k in expected if k in arrays and arrays[k].dtype.kind not in "fiu"]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise StudentFileError(f"{path}: weights do not match its architecture: {problems[0]}{more}")
    header["architecture"] = asdict(arch)
    state = {k: torch.from_numpy(np.array(arrays[k])) for k in expected}
    return header, state, hashlib.sha256(data).hexdigest()


def build_student(arch: Sequence[int] | StudentArch, state: dict[str, torch.Tensor] | None = None) -> StudentNet:
    """A student network of ``arch``, with ``state`` loaded (strict) if given, in eval mode."""
    net = StudentNet(arch if isinstance(arch, StudentArch) else StudentArch(tuple(arch)))
    if state is not None:
        net.load_state_dict(state, strict=True)
    return net.eval()
