"""Fitting the streaming encoder to a paired recording: keypoints and neural activity.

Facemap's recipe (facemap/neural_prediction, version 1.0.8), kept where it suits a live
encoder: x, y of the 15 keypoints in, z-scored; neurons z-scored and reduced to their first
128 principal components (variance kept: components times singular values); the recording cut
into 10 time segments, the first 75 % of each for training and the rest for testing; one
optimizer step per training segment (the whole segment as one sequence), AdamW (lr 1e-3,
weight decay 1e-4), up to 300 epochs, the learning rate divided by 10 at 2/3 and 5/6 of them
(epochs 200 and 250 of 300, as Facemap's); loss: mean squared error plus 0.5 times the summed
squared differences of neighbouring wavelet taps; test variance explained = 1 - MSE /
variance, pooled over the components.

Where this differs, and why:

- every statistic (keypoint mean and std, the jump threshold, neuron mean and std, the
  principal components) comes from the training segments only, and is then fixed in the model
  file: a live experiment has no whole session to normalise with;
- outlier keypoints (NaN, low likelihood, jumps) hold their last accepted position
  (``encoder.InputCleaner``), causally, instead of being interpolated between both neighbours;
- the neural activity is resampled to the frame times for training (linear interpolation;
  Gaussian smoothing first only when it is sampled faster than the frames), and every frame
  with a target counts in the loss, where Facemap trains on the frames nearest the neural
  samples; the activity at frame t is predicted from frame t (Facemap shifts it by one neural
  sample). Every score, though, is on the recorded samples, each predicted by the output at
  the last frame at or before it (``Prepared.score``): scoring on interpolated frames would
  average noise away and read higher;
- early stopping: the last 10 % of each training segment (after a gap) is a validation block;
  the weights kept are those of the epoch that predicts the validation blocks best, and
  training stops ``patience`` (20) epochs after it. Facemap runs a fixed 300 epochs, which on
  a few minutes of recording overfits badly (docs/encoder.md has the figures); ``patience=0``
  restores it;
- a training segment is run with the frames around it as context, so every prediction, in
  training and in testing, is exactly what the streaming encoder gives at that frame (Facemap
  pads each segment with zeros); test blocks are kept ``gap_s`` (0.5 s) away from training
  frames on both sides (Facemap: 3 neural samples, on one side).

Three causal models are fitted on the same split from the same seed: the ridge model on lagged
positions and speeds (``ridge_fit``), the network (look-ahead L frames, 0 by default) and the
network fitted to the ridge model's residuals; the one saved is the best on the validation
blocks. The symmetric Facemap-style network (201 taps, 100 of them in the future), a shuffled
control and Facemap's own network (``facemap_encoder``) are fitted for comparison only.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import torch
from tqdm import tqdm

from ..bodyparts import BODYPARTS, N_KEYPOINTS
from ..encoder import (
    MODELS,
    N_IN,
    InputSpec,
    NeuralProjection,
    clean_and_normalise,
    save_encoder,
)
from ..encoder_network import KeypointsEncoder, RidgePlusNetwork
from ..lagged_ridge import LaggedRidge
from .facemap_encoder import facemap_network
from .ridge_fit import fit_ridge

KEYPOINTS_SUFFIX = "_FacemapPose.h5"
NEURAL_NAME = "neural.npy"
NEURAL_TIMES_NAME = "neural_t_ns.npy"
SYMMETRIC_LOOKAHEAD = 100  # Facemap's filter: 201 taps centred on the frame
INPUTS = ("keypoints", "motion_svd")  # what models may take: the keypoints' x, y; Facemap's motion SVD
VALIDATION_FRACTION = 0.1  # of each training segment, for early stopping
JUMP_FLOOR_PX = 5.0
MIN_STD_PX = 1.0  # a keypoint that (almost) never moves is not blown up by its z-score


class EncoderTrainingError(ValueError):
    """Input files or settings that cannot be trained on; the message is one line."""


# -- the recording -------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Recording:
    """Keypoints and neural activity on one clock.

    keypoints: (frames, 15, 3) [x, y, likelihood] in Facemap's bodypart order; NaN allowed.
    frame_t_s: (frames,) increasing. neural: (neurons, samples) finite. neural_t_s: (samples,)
    increasing. motion_svd: (frames, components) or None; NaN rows where it was not ready.
    """

    keypoints: np.ndarray
    frame_t_s: np.ndarray
    neural: np.ndarray
    neural_t_s: np.ndarray
    sources: dict[str, str] = field(default_factory=dict)
    motion_svd: np.ndarray | None = None

    def __post_init__(self) -> None:
        kp, neural = np.asarray(self.keypoints, np.float64), np.asarray(self.neural)
        if kp.ndim != 3 or kp.shape[1:] != (N_KEYPOINTS, 3):
            raise EncoderTrainingError(f"keypoints must be (frames, {N_KEYPOINTS}, 3), got shape {kp.shape}")
        if neural.ndim != 2 or 0 in neural.shape:
            raise EncoderTrainingError(
                f"neural activity must be a non-empty neurons x samples (2-D) array, got shape {neural.shape}")
        if neural.dtype.kind not in "fiu":
            raise EncoderTrainingError(f"neural activity must be numbers, not {neural.dtype}")
        bad = ~np.isfinite(neural)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise EncoderTrainingError(
                f"neural activity has {int(bad.sum())} NaN or infinite values (the first at neuron {i}, sample {j})")
        _check_times("frame times", self.frame_t_s, len(kp), "keypoint frames")
        if len(self.neural_t_s) == neural.shape[0] != neural.shape[1]:
            raise EncoderTrainingError(
                f"neural activity is {neural.shape[0]} x {neural.shape[1]} and there are {neural.shape[0]} neural "
                "times: it must be neurons x samples (transpose it)")
        _check_times("neural times", self.neural_t_s, neural.shape[1], "neural samples (columns)")
        if not (np.isfinite(kp[:, :, :2]).all(axis=2) & (kp[:, :, 2] > 0)).any():
            raise EncoderTrainingError("no keypoint has a finite position and a positive likelihood in any frame")
        if self.motion_svd is not None:
            motion = np.asarray(self.motion_svd)
            if motion.ndim != 2 or len(motion) != len(kp) or motion.dtype.kind not in "fiu":
                raise EncoderTrainingError(f"motion SVD must be numbers, (frames, components) with one row per keypoint "
                                           f"frame ({len(kp)}), got shape {motion.shape}")
            object.__setattr__(self, "motion_svd", motion.astype(np.float64))
        object.__setattr__(self, "keypoints", kp)
        object.__setattr__(self, "neural", neural.astype(np.float32, copy=False))
        object.__setattr__(self, "frame_t_s", np.asarray(self.frame_t_s, np.float64))
        object.__setattr__(self, "neural_t_s", np.asarray(self.neural_t_s, np.float64))

    @property
    def frame_rate_hz(self) -> float:
        return round(1.0 / float(np.median(np.diff(self.frame_t_s))), 6)

    @property
    def neural_rate_hz(self) -> float:
        return round(1.0 / float(np.median(np.diff(self.neural_t_s))), 6)


def _check_times(what: str, times: np.ndarray, expected: int, of: str) -> None:
    times = np.asarray(times)
    if times.ndim != 1:
        raise EncoderTrainingError(f"{what} must be 1-D, got shape {times.shape}")
    if len(times) != expected:
        raise EncoderTrainingError(f"{len(times)} {what} for {expected} {of}: the lengths must match")
    if expected < 2:
        raise EncoderTrainingError(f"{what}: need at least 2, got {expected}")
    if times.dtype.kind not in "fiu" or not np.isfinite(times).all() or not (np.diff(times) > 0).all():
        raise EncoderTrainingError(f"{what} must be finite and strictly increasing")


def session_files(session_dir: str | Path) -> dict[str, Path | None]:
    """The files of a session folder: ``*_FacemapPose.h5``, ``neural.npy``, ``neural_t_ns.npy``
    (None where absent; the keypoints file must be the only one of its kind)."""
    folder = Path(session_dir)
    if not folder.is_dir():
        raise EncoderTrainingError(f"{folder}: no such folder")
    found = sorted(folder.glob(f"*{KEYPOINTS_SUFFIX}"))
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise EncoderTrainingError(f"{folder} holds several keypoints files ({names}): choose one with --keypoints")
    times = folder / NEURAL_TIMES_NAME
    return {
        "keypoints": found[0] if found else None,
        "neural": folder / NEURAL_NAME if (folder / NEURAL_NAME).exists() else None,
        "neural_times": times if times.exists() else None,
    }


def read_keypoints(path: str | Path) -> tuple[np.ndarray, np.ndarray | None, float | None]:
    """A keypoints file in Facemap's layout -> (frames, 15, 3), the frame times in seconds if it
    records them (``/facestream/t_ns``, ``t_video_s`` or ``t_capture_ns``), and its ``fps``
    attribute if any. EncoderTrainingError (one line) for anything else."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            facemap = f.get("Facemap")
            if not isinstance(facemap, h5py.Group):
                raise EncoderTrainingError(f"keypoints file {path} has no /Facemap group (Facemap's layout)")
            columns = []
            for name in BODYPARTS:
                group = facemap.get(name)
                if not isinstance(group, h5py.Group) or not all(
                        isinstance(group.get(k), h5py.Dataset) for k in ("x", "y", "likelihood")):
                    raise EncoderTrainingError(f"keypoints file {path} lacks /Facemap/{name}/{{x, y, likelihood}}")
                for k in ("x", "y", "likelihood"):
                    if group[k].dtype.kind not in "biuf":
                        raise EncoderTrainingError(f"keypoints file {path}: /Facemap/{name}/{k} holds "
                                                   f"{group[k].dtype}, not numbers")
                columns.append([np.asarray(group[k][()], np.float64) for k in ("x", "y", "likelihood")])
            lengths = {c.shape for bodypart in columns for c in bodypart}
            if len(lengths) != 1 or len(next(iter(lengths))) != 1:
                raise EncoderTrainingError(
                    f"keypoints file {path}: x, y and likelihood of every bodypart must be 1-D and of one length, "
                    f"got shapes {sorted(lengths)}")
            keypoints = np.stack([np.stack(c, axis=-1) for c in columns], axis=1)
            return keypoints, _recorded_times(f.get("facestream"), len(keypoints)), _fps_attr(f, path)
    except (OSError, RuntimeError) as exc:
        raise EncoderTrainingError(
            f"keypoints file {path} cannot be read as HDF5 ({' '.join(str(exc).split())})") from None


def read_motion_svd(path: str | Path) -> np.ndarray:
    """``/facestream/motion_svd`` of a keypoints file (as ``facestream run --record`` and
    ``facestream simulate`` write it): (frames, components); EncoderTrainingError if absent."""
    try:
        with h5py.File(path, "r") as f:
            column = f.get("facestream/motion_svd")
            if not isinstance(column, h5py.Dataset) or column.ndim != 2 or column.dtype.kind not in "fiu":
                raise EncoderTrainingError(
                    f"keypoints file {path} has no motion SVD (/facestream/motion_svd, frames x components): record a run "
                    "with [motion_svd] on, or simulate with video")
            return np.asarray(column[()], np.float64)
    except (OSError, RuntimeError) as exc:
        raise EncoderTrainingError(f"keypoints file {path} cannot be read as HDF5 ({' '.join(str(exc).split())})") from None


def _fps_attr(f: h5py.File, path: Path) -> float | None:
    """The file's ``fps`` attribute, if it has a positive one."""
    fps = f.attrs.get("fps")
    if fps is None:
        return None
    try:
        value = float(np.asarray(fps).item())
    except (TypeError, ValueError):
        raise EncoderTrainingError(f"keypoints file {path}: its fps attribute is not a number ({fps!r:.40})") from None
    return value if math.isfinite(value) and value > 0 else None  # 0 or NaN: as good as none


def _recorded_times(group: h5py.Group | None, frames: int) -> np.ndarray | None:
    if not isinstance(group, h5py.Group):
        return None
    for name, to_s in (("t_ns", 1e-9), ("t_video_s", 1.0), ("t_capture_ns", 1e-9)):
        column = group.get(name)
        if isinstance(column, h5py.Dataset) and column.shape == (frames,) and column.dtype.kind in "iuf":
            t = np.asarray(column[()], np.float64) * to_s
            if np.isfinite(t).all() and (np.diff(t) > 0).all():
                return t
    return None


def _load_npy(path: str | Path, what: str) -> np.ndarray:
    try:
        loaded = np.load(Path(path), allow_pickle=False)
    except FileNotFoundError:
        raise EncoderTrainingError(f"{what} file {path} does not exist") from None
    except (OSError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EncoderTrainingError(f"{what} file {path} is not a readable .npy array ({reason})") from None
    if not isinstance(loaded, np.ndarray):
        loaded.close()
        raise EncoderTrainingError(f"{what} file {path} is an .npz archive, not one .npy array")
    return loaded


def _times_s(times_ns: np.ndarray, what: str) -> np.ndarray:
    if times_ns.dtype.kind not in "fiu":
        raise EncoderTrainingError(f"{what} must be numbers (ns), not {times_ns.dtype}")
    return times_ns.astype(np.float64) * 1e-9


def load_recording(
    keypoints: str | Path, neural: str | Path, neural_times: str | Path | None = None,
    frame_times: str | Path | None = None, fps: float | None = None, motion_svd: bool = False,
) -> Recording:
    """Read and check a paired recording (with ``motion_svd``, the keypoints file's motion SVD too).

    neural: neurons x samples .npy. neural_times, frame_times: .npy of times in ns on one
    clock. Frame times come from, in order: ``frame_times``, ``fps`` (frame k at k / fps), the
    times recorded in the keypoints file, its ``fps`` attribute. Without neural times the
    samples are taken to span the frames' time evenly (Facemap's assumption).
    """
    if not Path(keypoints).exists():
        raise EncoderTrainingError(f"keypoints file {keypoints} does not exist")
    kp, recorded, fps_attr = read_keypoints(keypoints)
    activity = _load_npy(neural, "neural")
    if fps is not None and fps <= 0:
        raise EncoderTrainingError(f"fps must be positive, not {fps}")
    if frame_times is not None:
        frame_t = _times_s(_load_npy(frame_times, "frame times"), "frame times")
    elif fps is not None or recorded is None:
        rate = fps if fps is not None else fps_attr
        if rate is None:
            raise EncoderTrainingError(f"{keypoints} records no frame times: pass --frame-times or --fps")
        frame_t = np.arange(len(kp)) / rate
    else:
        frame_t = recorded
    if neural_times is not None:
        neural_t = _times_s(_load_npy(neural_times, "neural times"), "neural times")
    else:
        n = activity.shape[-1] if activity.ndim else 0
        neural_t = np.linspace(frame_t[0], frame_t[-1], n) if len(frame_t) else np.zeros(n)
    sources = {"keypoints": str(keypoints), "neural": str(neural)}
    sources.update({k: str(v) for k, v in (("neural_times", neural_times), ("frame_times", frame_times)) if v})
    return Recording(kp, frame_t, activity, neural_t, sources, read_motion_svd(keypoints) if motion_svd else None)


# -- settings, split, preparation ---------------------------------------------------------


@dataclass(frozen=True)
class TrainSettings:
    n_pcs: int = 128
    output: str = "pcs"  # or "neurons": the readout folds the projection back to every neuron
    lookahead_frames: int = 0
    epochs: int = 300  # at most
    patience: int = 20  # stop after this many epochs without a better validation score; 0: run every epoch
    lr: float = 1e-3
    weight_decay: float = 1e-4
    smoothing_penalty: float = 0.5
    segments: int = 10
    test_fraction: float = 0.25
    gap_s: float = 0.5
    likelihood_threshold: float = 0.52
    seed: int = 0
    model: str = "best"  # the model saved: "best" on validation, or one of encoder.MODELS
    symmetric: bool = True  # also train the Facemap-style model for comparison
    shuffled_control: bool = False  # also train on activity shifted half a session against the keypoints
    threads: int = 1  # torch threads; 0 = torch's default (on a busy 2-core machine, 1 is far faster)
    facemap_python: str | None = None  # an interpreter with Facemap 1.0.8: also train its own network, for comparison
    inputs: tuple[str, ...] = ("keypoints",)  # any of INPUTS; with motion_svd the models are scored, never saved

    @property
    def live(self) -> bool:
        """Whether the models take what the streaming encoder takes (the keypoints alone)."""
        return self.inputs == ("keypoints",)

    def __post_init__(self) -> None:
        problems = [
            (not self.inputs or len(set(self.inputs)) != len(self.inputs) or not set(self.inputs) <= set(INPUTS),
             f"inputs must be one or more of {', '.join(INPUTS)}, each once, not {','.join(self.inputs)!r}"),
            (self.facemap_python is not None and not self.live, "Facemap's own network takes the keypoints alone: "
             "--facemap needs --inputs keypoints"),
            (self.n_pcs < 1, f"pcs must be at least 1, not {self.n_pcs}"),
            (self.output not in ("pcs", "neurons"), f"output must be pcs or neurons, not {self.output!r}"),
            (self.model not in ("best", *MODELS), f"model must be best or one of {', '.join(MODELS)}, not {self.model!r}"),
            (self.model == "ridge+network" and self.lookahead_frames > 0,
             "a ridge+network model has no look-ahead: use --model network with --lookahead"),
            (not 0 <= self.lookahead_frames <= SYMMETRIC_LOOKAHEAD,
             f"lookahead must be 0..{SYMMETRIC_LOOKAHEAD} frames, not {self.lookahead_frames}"),
            (self.epochs < 1, f"epochs must be at least 1, not {self.epochs}"),
            (self.patience < 0, f"patience must not be negative, not {self.patience}"),
            (not self.lr > 0, f"learning rate must be positive, not {self.lr}"),
            (self.segments < 1, f"segments must be at least 1, not {self.segments}"),
            (not 0 < self.test_fraction < 1, f"test fraction must be between 0 and 1, not {self.test_fraction}"),
            (self.gap_s < 0, f"gap must not be negative, not {self.gap_s}"),
        ]
        for bad, message in problems:
            if bad:
                raise EncoderTrainingError(message)


@dataclass(frozen=True, eq=False)
class Prepared:
    """Inputs and targets at every frame, the split and the fixed statistics."""

    inputs: np.ndarray  # (frames, 30) float32, exactly what the streaming encoder sees (keypoints alone)
    targets: np.ndarray  # (frames, n_pcs) float32; NaN where no neural sample covers the frame
    train: list[tuple[int, int]]  # frame ranges [start, end)
    validation: list[tuple[int, int]]  # the end of each training segment, for early stopping and choosing
    test: list[tuple[int, int]]
    spec: InputSpec
    projection: NeuralProjection
    sample_frame: np.ndarray  # (samples,) the last frame at or before each neural sample (-1: none)
    sample_neurons: np.ndarray  # (samples, neurons) float32, the recorded samples z-scored
    sample_targets: np.ndarray  # (samples, n_pcs) float32, their principal components

    def frames(self, ranges: list[tuple[int, int]]) -> np.ndarray:
        return np.concatenate([np.arange(a, b) for a, b in ranges])

    def samples_in(self, ranges: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """The neural samples scored on ``ranges``: those whose last frame lies in one, and
        that frame's row in the frames of ``ranges`` concatenated."""
        frames = self.frames(ranges)
        row = np.searchsorted(frames, self.sample_frame)
        inside = row < len(frames)
        inside[inside] = frames[row[inside]] == self.sample_frame[inside]
        return np.flatnonzero(inside), row[inside]

    def score(self, predicted: np.ndarray, ranges: list[tuple[int, int]], neurons: bool = False) -> float:
        """Variance explained on the recorded samples of ``ranges``, each predicted by the
        prediction at its last frame. predicted: one row per frame of ``ranges``, in order.
        neurons: the mean over neurons of each neuron's own figure, instead of the pooled
        figure of the components."""
        samples, rows = self.samples_in(ranges)
        if not neurons:
            return variance_explained(self.sample_targets[samples], predicted[rows])
        return float(np.nanmean(neuron_variance_explained(
            self.sample_neurons[samples], predicted[rows] @ self.projection.components.T)))


def split_segments(n_frames: int, first: int, segments: int, test_fraction: float, gap: int) -> tuple[list, list]:
    """Train and test frame ranges: ``segments`` equal stretches of frames ``first ..
    first + n_frames``, each its training part first, then, ``gap`` frames on, its test part,
    ending ``gap`` frames before the next stretch."""
    needed = segments * (2 * gap + 4)
    if n_frames < needed:
        raise EncoderTrainingError(
            f"only {n_frames} frames have neural data; {segments} train/test segments with {gap}-frame gaps "
            f"need at least {needed}")
    edges = [first + round(k * n_frames / segments) for k in range(segments + 1)]
    train, test = [], []
    for k in range(segments):
        start, end = edges[k], edges[k + 1]
        split = start + max(1, round((end - start) * (1 - test_fraction)))
        test_end = end - gap if k < segments - 1 else end
        if test_end - (split + gap) < 1 or split - start < 1:
            raise EncoderTrainingError(f"segments of {end - start} frames are too short for a {gap}-frame gap")
        train.append((start, split))
        test.append((split + gap, test_end))
    return train, test


def carve_validation(train: list[tuple[int, int]], gap: int) -> tuple[list, list]:
    """Split each training range into (training, validation): the last VALIDATION_FRACTION of
    it, ``gap`` frames after what stays for training."""
    fit_ranges, validation = [], []
    for a, b in train:
        v = max(1, round((b - a) * VALIDATION_FRACTION))
        if b - v - gap - a < 1:
            raise EncoderTrainingError(f"training segments of {b - a} frames are too short for a validation block")
        fit_ranges.append((a, b - v - gap))
        validation.append((b - v, b))
    return fit_ranges, validation


def _gaussian_smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Smooth each row of (n, samples) ``x`` with a Gaussian of ``sigma`` samples (edges reflected)."""
    radius = int(math.ceil(4 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(x, ((0, 0), (radius, radius)), mode="reflect" if x.shape[1] > radius else "edge")
    return np.stack([np.convolve(row, taps, mode="valid") for row in padded]).astype(x.dtype)


def neural_at_frames(recording: Recording) -> tuple[np.ndarray, np.ndarray]:
    """(frames, neurons) activity at the frame times and the mask of frames inside the neural
    recording (rows outside it are NaN)."""
    t, tn, activity = recording.frame_t_s, recording.neural_t_s, recording.neural
    ratio = recording.neural_rate_hz / recording.frame_rate_hz
    if ratio > 1:  # faster than the frames: anti-alias as Facemap does (sigma = ratio / 4 samples)
        activity = _gaussian_smooth(activity, max(ratio / 4, 0.5))
    inside = (t >= tn[0]) & (t <= tn[-1])
    out = np.full((len(t), activity.shape[0]), np.nan, np.float32)
    ti = t[inside]
    j = np.clip(np.searchsorted(tn, ti, side="right") - 1, 0, len(tn) - 2)
    frac = ((ti - tn[j]) / (tn[j + 1] - tn[j])).astype(np.float32)
    out[inside] = (activity[:, j] * (1 - frac) + activity[:, j + 1] * frac).T
    return out, inside


def fit_inputs(keypoints: np.ndarray, frames: np.ndarray, likelihood_threshold: float) -> InputSpec:
    """Normalisation and jump threshold from the given (training) frames only.

    The jump threshold is twice the 99.9th percentile of frame-to-frame moves of confident
    keypoints (x or y), at least 5 px; the mean and std are those of the cleaned positions
    (std at least 1 px).
    """
    xy, likelihood = keypoints[:, :, :2], keypoints[:, :, 2]
    with np.errstate(invalid="ignore"):
        confident = np.isfinite(xy).all(axis=2) & (likelihood >= likelihood_threshold)
    in_train = np.zeros(len(keypoints), bool)
    in_train[frames] = True
    pairs = in_train[1:] & in_train[:-1]
    both = confident[1:] & confident[:-1] & pairs[:, None]
    moves = np.abs(np.diff(xy, axis=0)).max(axis=2)[both]
    jump = max(JUMP_FLOOR_PX, 2 * float(np.quantile(moves, 0.999))) if moves.size else 25.0
    seen = confident & in_train[:, None]
    if not seen.any():
        raise EncoderTrainingError(
            f"no keypoint reaches the likelihood threshold {likelihood_threshold} in the training frames")
    fallback = np.median(xy[seen], axis=0)
    centre = np.stack([np.median(xy[seen[:, k], k], axis=0) if seen[:, k].any() else fallback
                       for k in range(N_KEYPOINTS)]).reshape(N_IN)
    provisional = InputSpec(centre, np.ones(N_IN), likelihood_threshold, jump)
    positions = clean_and_normalise(keypoints, provisional)[frames].astype(np.float64) + centre
    return InputSpec(positions.mean(axis=0), np.maximum(positions.std(axis=0), MIN_STD_PX), likelihood_threshold, jump)


def _motion_inputs(recording: Recording, train_frames: np.ndarray) -> np.ndarray:
    """The motion SVD z-scored with the training frames' statistics; rows before it was ready
    (NaN) at 0, its training mean."""
    if recording.motion_svd is None:
        raise EncoderTrainingError("inputs name motion_svd but the recording has none")
    motion = recording.motion_svd
    ready = np.isfinite(motion).all(axis=1)
    seen = motion[train_frames[ready[train_frames]]]
    if len(seen) < 2:
        raise EncoderTrainingError("the motion SVD is not ready in the training frames (NaN rows): nothing to fit on")
    z = (motion - seen.mean(axis=0)) / np.maximum(seen.std(axis=0), 1e-9)
    return np.where(ready[:, None], z, 0.0).astype(np.float32)


def prepare(recording: Recording, settings: TrainSettings) -> Prepared:
    """Resample, split, fix the statistics on the training frames, project onto the PCs."""
    activity, inside = neural_at_frames(recording)
    covered = np.flatnonzero(inside)
    if covered.size == 0:
        raise EncoderTrainingError(
            f"the neural samples ({recording.neural_t_s[0]:.3f} .. {recording.neural_t_s[-1]:.3f} s) and the frames "
            f"({recording.frame_t_s[0]:.3f} .. {recording.frame_t_s[-1]:.3f} s) do not overlap: are their times on one clock?")
    gap = math.ceil(settings.gap_s * recording.frame_rate_hz)
    train, test = split_segments(len(covered), int(covered[0]), settings.segments, settings.test_fraction, gap)
    train, validation = carve_validation(train, gap)
    train_frames = np.concatenate([np.arange(a, b) for a, b in train])

    spec = fit_inputs(recording.keypoints, train_frames, settings.likelihood_threshold)
    columns = []
    if "keypoints" in settings.inputs:
        columns.append(clean_and_normalise(recording.keypoints, spec))
    if "motion_svd" in settings.inputs:
        columns.append(_motion_inputs(recording, train_frames))
    inputs = np.concatenate(columns, axis=1)

    mean = activity[train_frames].mean(axis=0, dtype=np.float64)
    std = activity[train_frames].std(axis=0, dtype=np.float64)
    scale = np.where(std > 0, std, 1.0)
    z = ((activity - mean) / scale).astype(np.float32)
    n_pcs = min(settings.n_pcs, z.shape[1], len(train_frames))
    z_train = z[train_frames].astype(np.float64)
    _, vectors = np.linalg.eigh(z_train.T @ z_train)
    components = vectors[:, ::-1][:, :n_pcs]
    components *= np.where(components.sum(axis=0) < 0, -1.0, 1.0)  # a fixed sign per component
    projection = NeuralProjection(mean, scale, components)
    targets = (z @ projection.components).astype(np.float32)
    sample_frame = np.searchsorted(recording.frame_t_s, recording.neural_t_s, side="right") - 1
    sample_neurons = ((recording.neural.T - mean) / scale).astype(np.float32)
    return Prepared(
        inputs.astype(np.float32), targets, train, validation, test, spec, projection,
        sample_frame, sample_neurons, (sample_neurons @ projection.components).astype(np.float32),
    )


# -- training -----------------------------------------------------------------------------


def variance_explained(target: np.ndarray, prediction: np.ndarray) -> float:
    """Facemap's test variance explained: 1 - MSE / variance, pooled over columns."""
    residual = ((target - prediction) ** 2).mean()
    return float(1.0 - residual / ((target - target.mean(axis=0)) ** 2).mean())


def neuron_variance_explained(target: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Variance explained of each column on its own."""
    variance = ((target - target.mean(axis=0)) ** 2).mean(axis=0)
    return 1.0 - ((target - prediction) ** 2).mean(axis=0) / np.where(variance > 0, variance, np.nan)


@dataclass(frozen=True)
class FitLog:
    losses: list[float]  # mean training loss of each epoch run
    validation: list[float]  # validation variance explained (on samples) after each epoch
    best_epoch: int  # the epoch whose weights were kept (counted from 1)


@dataclass(frozen=True)
class EpochReport:
    """What one epoch did, for a progress display."""

    epoch: int
    loss: float
    validation: float
    best_epoch: int
    last_epoch: int  # the epoch training will stop after unless validation improves


def predict_ranges(module: KeypointsEncoder, x: torch.Tensor, ranges: list[tuple[int, int]]) -> torch.Tensor:
    """The module's predictions for the frames of ``ranges``, each range run with the frames
    around it as context: row for row what it gives on the whole sequence."""
    before, after = module.kernel_frames - 1 - module.lookahead_frames, module.lookahead_frames
    outputs = []
    for a, b in ranges:
        lo, hi = max(0, a - before), min(len(x), b + after)
        outputs.append(module(x[lo:hi])[a - lo:b - lo])
    return torch.cat(outputs)


def fit(
    module: KeypointsEncoder, prepared: Prepared, settings: TrainSettings, targets: np.ndarray | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None, offset: np.ndarray | None = None,
) -> FitLog:
    """Train ``module`` in place with Facemap's recipe, one step per training segment, scoring
    the validation samples after each epoch. With ``settings.patience``, keep the weights of
    the epoch that predicts them best and stop ``patience`` epochs after it; without, keep the
    last epoch's. offset: (frames, n_out) added to the module's predictions before they are
    scored, for a module fitted to another model's residuals (``targets`` then being them)."""
    x = torch.from_numpy(prepared.inputs)
    y = torch.from_numpy(prepared.targets if targets is None else targets)
    validation_offset = 0.0 if offset is None else offset[prepared.frames(prepared.validation)]
    optimizer = torch.optim.AdamW(module.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    anneal = {round(settings.epochs * 2 / 3), round(settings.epochs * 5 / 6)}
    order = np.random.default_rng(settings.seed)
    wavelets = module.core.features.wavelet0.weight
    losses: list[float] = []
    scores: list[float] = []
    best_epoch, best_state = settings.epochs, None
    for epoch in range(1, settings.epochs + 1):
        module.train()
        if epoch - 1 in anneal:
            for group in optimizer.param_groups:
                group["lr"] /= 10.0
        total = 0.0
        for k in order.permutation(len(prepared.train)):
            a, b = prepared.train[k]
            out = predict_ranges(module, x, [(a, b)])
            loss = ((out - y[a:b]) ** 2).mean() + settings.smoothing_penalty * (torch.diff(wavelets) ** 2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        losses.append(total / len(prepared.train))
        module.eval()
        with torch.no_grad():
            predicted = predict_ranges(module, x, prepared.validation).numpy() + validation_offset
            scores.append(prepared.score(predicted, prepared.validation))
        if settings.patience and (best_state is None or scores[-1] > scores[best_epoch - 1]):
            best_epoch, best_state = epoch, {k: v.clone() for k, v in module.state_dict().items()}
        last = min(settings.epochs, best_epoch + settings.patience) if settings.patience else settings.epochs
        if on_epoch:
            on_epoch(EpochReport(epoch, losses[-1], scores[-1], best_epoch if settings.patience else epoch, last))
        if epoch >= last:
            break
    if best_state is not None:
        module.load_state_dict(best_state)
    return FitLog(losses, scores, best_epoch if settings.patience else len(losses))


def _new_module(n_in: int, n_out: int, lookahead: int, seed: int) -> KeypointsEncoder:
    torch.manual_seed(seed)
    return KeypointsEncoder(n_in=n_in, n_out=n_out, lookahead_frames=lookahead)


def model_to_neurons(model: KeypointsEncoder | LaggedRidge | RidgePlusNetwork,
                     projection: NeuralProjection) -> KeypointsEncoder | LaggedRidge | RidgePlusNetwork:
    """Any of the models with the projection folded into its readout: outputs are neurons (the
    mean added once, by the ridge part of a sum)."""
    if isinstance(model, KeypointsEncoder):
        return to_neurons(model, projection)
    if isinstance(model, LaggedRidge):
        return ridge_to_neurons(model, projection)
    return RidgePlusNetwork(ridge_to_neurons(model.ridge, projection),
                            to_neurons(model.network, projection, with_mean=False))


def to_neurons(module: KeypointsEncoder, projection: NeuralProjection, with_mean: bool = True) -> KeypointsEncoder:
    """The same network with the readout folded through the projection: outputs are neurons."""
    w = module.readout.features.linear0.weight.detach().numpy().astype(np.float64)
    b = module.readout.features.linear0.bias.detach().numpy().astype(np.float64)
    u = projection.components.astype(np.float64) * projection.scale[:, None]
    out = KeypointsEncoder(
        module.n_in, projection.n_neurons, module.kernel_frames, module.lookahead_frames, module.n_filt,
        module.n_med, module.n_latents,
    )
    state = {k: v.clone() for k, v in module.state_dict().items()}
    state["readout.features.linear0.weight"] = torch.from_numpy((u @ w).astype(np.float32))
    state["readout.features.linear0.bias"] = torch.from_numpy((u @ b + projection.mean * with_mean).astype(np.float32))
    out.load_state_dict(state)
    return out.eval()


def ridge_to_neurons(model: LaggedRidge, projection: NeuralProjection) -> LaggedRidge:
    """The same ridge model with the projection folded into its readout: outputs are neurons."""
    u = projection.components.astype(np.float64) * projection.scale[:, None]
    return model.with_readout(u, projection.mean.astype(np.float64))


@dataclass(eq=False)
class TrainingResult:
    model: KeypointsEncoder | LaggedRidge | RidgePlusNetwork  # the model saved, outputs as settings.output
    spec: InputSpec
    projection: NeuralProjection
    settings: TrainSettings
    frame_rate_hz: float
    summary: dict[str, Any]

    def save(self, path: str | Path) -> None:
        """Write the chosen causal encoder (with the projection when it outputs PCs), named after
        the file; written beside it first and moved into place, so a failed save leaves no half file.
        Models that take more than the keypoints are offline only: refused."""
        if not self.settings.live:
            raise EncoderTrainingError(f"models on {','.join(self.settings.inputs)} are scored only: the streaming encoder "
                                       "takes the keypoints alone (train with --inputs keypoints to save one)")
        target = Path(path)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        pcs = self.settings.output == "pcs"
        try:
            save_encoder(
                self.model, tmp, name=target.stem, kind=self.settings.output, inputs=self.spec, trained=True,
                frame_rate_hz=self.frame_rate_hz, projection=self.projection if pcs else None,
                n_neurons=self.projection.n_neurons, training=self.summary,
            )
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def line(self) -> str:
        """The scores in one line for a person."""
        r, models = self.summary, self.summary["models"]
        others = "".join(
            f", {label} {models[label]['test_variance_explained']:.3f}"
            for label in ("network", "ridge", "ridge+network", "symmetric", "facemap", "shuffled") if label in models and label != r["model"])
        verb = "saved" if self.settings.live else f"on {','.join(self.settings.inputs)} (offline only, not saved),"
        return (
            f"{verb} the {r['model']} model: test variance explained {r['test_variance_explained']:.3f} on "
            f"{r['samples_test']} recorded samples (look-ahead {r['lookahead_frames']} frames){others}; "
            f"{r['n_pcs']} PCs of {r['n_neurons']} neurons, {r['frames_train']} training / {r['frames_test']} test "
            f"frames, {r['seconds']:.0f} s"
        )


def train_encoders(recording: Recording, settings: TrainSettings, progress: bool = True) -> TrainingResult:
    """Fit the causal network and the causal ridge model (and, per settings, the symmetric
    network and the shuffled control), score them on the recorded samples, keep one."""
    threads = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        return _train(recording, settings, progress)
    finally:
        torch.set_num_threads(threads)


def _fit_network(
    prepared: Prepared, settings: TrainSettings, label: str, lookahead: int, targets: np.ndarray | None,
    progress: bool, offset: np.ndarray | None = None,
) -> tuple[KeypointsEncoder, dict[str, Any]]:
    """A network fitted to ``targets`` (default: the components), scored with ``offset`` added."""
    module = _new_module(prepared.inputs.shape[1], prepared.projection.components.shape[1], lookahead, settings.seed)
    with tqdm(total=settings.epochs, desc=f"{label} (L={lookahead})", unit="epoch", disable=not progress) as bar:

        def on_epoch(report: EpochReport) -> None:
            bar.total = report.last_epoch  # early stopping: the epoch it ends at unless validation improves
            bar.update(1)
            bar.set_postfix(loss=f"{report.loss:.3f}", val_ve=f"{report.validation:.3f}",
                            best=report.best_epoch, left=report.last_epoch - report.epoch, refresh=False)

        log = fit(module, prepared, settings, targets, on_epoch, offset)
    predicted = module.predict(prepared.inputs) + (0.0 if offset is None else offset)
    return module, _scores(prepared, predicted) | {"epochs": {"run": len(log.losses), "kept": log.best_epoch}}


def _scores(prepared: Prepared, predicted: np.ndarray) -> dict[str, float]:
    """A model's figures on the recorded samples; predicted: one row per frame."""
    validation, test = prepared.frames(prepared.validation), prepared.frames(prepared.test)
    return {
        "validation_variance_explained": prepared.score(predicted[validation], prepared.validation),
        "test_variance_explained": prepared.score(predicted[test], prepared.test),
        "test_variance_explained_neurons": prepared.score(predicted[test], prepared.test, neurons=True),
    }


def _train(recording: Recording, settings: TrainSettings, progress: bool) -> TrainingResult:
    started = time.perf_counter()
    prepared = prepare(recording, settings)
    validation = prepared.frames(prepared.validation)

    ridge = fit_ridge(prepared.inputs, prepared.targets, prepared.frames(prepared.train),
                      lambda predicted: prepared.score(predicted[validation], prepared.validation))
    ridge_predicted = ridge.model.predict(prepared.inputs)
    models: dict[str, dict[str, Any]] = {"ridge": _scores(prepared, ridge_predicted) | {
        "window_frames": ridge.window_frames, "penalty": ridge.penalty}}
    candidates = ["ridge"]  # the models that may be saved
    runs = []  # label, look-ahead, targets, offset of each network to fit
    if settings.model in ("best", "network"):
        candidates.append("network")
        runs.append(("network", settings.lookahead_frames, None, None))
    if settings.model == "ridge+network" or (settings.model == "best" and settings.lookahead_frames == 0):
        candidates.append("ridge+network")
        residuals = (prepared.targets - ridge_predicted).astype(np.float32)
        runs.append(("ridge+network", 0, residuals, ridge_predicted))
    if settings.symmetric:
        runs.append(("symmetric", SYMMETRIC_LOOKAHEAD, None, None))
    if settings.shuffled_control:
        shuffled = prepared.targets.copy()
        covered = np.flatnonzero(np.isfinite(prepared.targets[:, 0]))
        shuffled[covered] = np.roll(prepared.targets[covered], len(covered) // 2, axis=0)
        runs.append(("shuffled", settings.lookahead_frames, shuffled, None))
    networks = {}
    for label, lookahead, targets, offset in runs:
        networks[label], models[label] = _fit_network(prepared, settings, label, lookahead, targets, progress, offset)

    chosen = settings.model
    if chosen == "best":
        chosen = max(candidates, key=lambda m: models[m]["validation_variance_explained"])
    model: KeypointsEncoder | LaggedRidge | RidgePlusNetwork = ridge.model
    if chosen == "network":
        model = networks["network"]
    elif chosen == "ridge+network":
        model = RidgePlusNetwork(ridge.model, networks["ridge+network"])
    lookahead = settings.lookahead_frames if chosen == "network" else 0
    rate = recording.frame_rate_hz
    kept = models[chosen]
    summary: dict[str, Any] = {
        "model": chosen,
        "test_variance_explained": kept["test_variance_explained"],
        "test_variance_explained_neurons": kept["test_variance_explained_neurons"],
        "validation_variance_explained": kept["validation_variance_explained"],
        "scored_on": "recorded neural samples of the test blocks, each predicted at the last frame at or before it",
        "lookahead_frames": lookahead,
        "lookahead_ms": 1000.0 * lookahead / rate,
        "models": models,
    }
    if "symmetric" in models:
        symmetric = models["symmetric"]["test_variance_explained"]
        summary.update(
            test_variance_explained_noncausal=symmetric,
            noncausal_lookahead_frames=SYMMETRIC_LOOKAHEAD,
            causal_over_noncausal=kept["test_variance_explained"] / symmetric if symmetric > 0 else None,
        )
    if settings.facemap_python:
        models["facemap"] = facemap_network(recording, prepared, settings, settings.facemap_python)
    if "shuffled" in models:
        summary["test_variance_explained_shuffled"] = models["shuffled"]["test_variance_explained"]
    summary.update(
        inputs=list(settings.inputs),
        n_inputs=int(prepared.inputs.shape[1]),
        kind=settings.output,
        n_pcs=prepared.projection.components.shape[1],
        n_neurons=prepared.projection.n_neurons,
        frames_train=int(sum(b - a for a, b in prepared.train)),
        frames_validation=int(len(validation)),
        frames_test=int(sum(b - a for a, b in prepared.test)),
        samples_validation=int(len(prepared.samples_in(prepared.validation)[0])),
        samples_test=int(len(prepared.samples_in(prepared.test)[0])),
        frame_rate_hz=rate,
        neural_rate_hz=recording.neural_rate_hz,
        jump_threshold_px=prepared.spec.jump_threshold_px,
        likelihood_threshold=prepared.spec.likelihood_threshold,
        settings={k: v for k, v in asdict(settings).items() if k not in ("symmetric", "shuffled_control", "threads")},
        sources=recording.sources,
        seconds=time.perf_counter() - started,
    )
    if settings.output == "neurons":
        model = model_to_neurons(model, prepared.projection)
    return TrainingResult(model, prepared.spec, prepared.projection, settings, rate, summary)
