"""How well a tracker finds the keypoints: pixel errors on synthetic faces it was never trained on
(the synthetic camera's profiles, or 3D views of held-out heads from random rig cameras).

Evaluation frames come from synthetic seeds ``EVAL_SEED_START`` and up, which training refuses to
use, so the numbers measure generalisation to new animals, not memory. Errors count only the
keypoints in view (the synthetic camera's truth says which); the likelihood is reported
separately for keypoints in view and out of view or hidden, since a useful likelihood is lower
on the latter. The metrics are a pure function of predictions and truth (``keypoint_metrics``)
so that they can be checked on arrays worked out by hand.

Labelled real frames (``labelled_frames``: a folder with labels.csv, or Facemap's refined data)
are scored by ``evaluate_labelled``: as labelled and mirrored left-right, errors at the network's
256-px scale per keypoint group, beside a blind baseline (the other images' mean layout) that
says how much of the score the image itself earns (``labelled_metrics``, also pure).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from facestream.camera_adapters.synthetic.camera import SyntheticCamera
from facestream.camera_adapters.synthetic.head_views import render_view
from facestream.camera_adapters.synthetic.sampling import SYNTHETIC_FPS, frame_ids

from ..bodyparts import BODYPARTS, N_KEYPOINTS
from ..tracker import Tracker
from .datasets import EVAL_SEED_START

WITHIN_PX = 5.0
EVAL_SEEDS = 10  # faces the evaluation frames are spread over
_BATCH = 8


def keypoint_metrics(predicted: np.ndarray, truth: np.ndarray) -> dict:
    """Errors of predicted (N, 15, 3) [x, y, likelihood] against truth (N, 15, 3) [x, y, visible].

    mean_px_error, median_px_error and within_5px pool every keypoint in view; per_keypoint
    gives each keypoint's mean error, fraction within 5 px and count in view (errors None when
    never in view); likelihood_visible / likelihood_occluded are the mean likelihoods of the
    keypoints in view / not in view (None when there are none).
    """
    predicted, truth = np.asarray(predicted, np.float64), np.asarray(truth, np.float64)
    if predicted.shape != truth.shape or predicted.ndim != 3 or predicted.shape[1:] != (N_KEYPOINTS, 3):
        raise ValueError(f"predicted {predicted.shape} and truth {truth.shape} must both be (N, {N_KEYPOINTS}, 3)")
    visible = truth[..., 2] > 0
    error = np.hypot(predicted[..., 0] - truth[..., 0], predicted[..., 1] - truth[..., 1])
    likelihood = predicted[..., 2]

    def mean(values: np.ndarray) -> float | None:
        return float(values.mean()) if values.size else None

    per_keypoint = {
        name: {
            "mean_px_error": mean(error[visible[:, k], k]),
            "within_5px": mean(error[visible[:, k], k] <= WITHIN_PX),
            "visible": int(visible[:, k].sum()),
        }
        for k, name in enumerate(BODYPARTS)
    }
    seen = error[visible]
    return {
        "frames": int(len(truth)),
        "mean_px_error": mean(seen),
        "median_px_error": float(np.median(seen)) if seen.size else None,
        "within_5px": mean(seen <= WITHIN_PX),
        "per_keypoint": per_keypoint,
        "likelihood_visible": mean(likelihood[visible]),
        "likelihood_occluded": mean(likelihood[~visible]),
        "keypoints_visible": int(visible.sum()),
        "keypoints_occluded": int((~visible).sum()),
    }


def eval_frames(frames: int, width: int = 640, height: int = 480, seeds: int = EVAL_SEEDS, views: bool = False):
    """(seed, frame_id, pixels, truth) for ``frames`` evaluation frames spread over held-out seeds:
    the synthetic camera's profiles, or with ``views`` 3D heads from random rig cameras."""
    seeds = max(1, min(seeds, frames))
    for i in range(seeds):
        seed = EVAL_SEED_START + i
        count = frames // seeds + (i < frames % seeds)
        if views:
            for index in range(count):
                yield (seed, index, *render_view(seed, index, width, height))
            continue
        camera = SyntheticCamera(width, height, fps=SYNTHETIC_FPS, seed=seed)
        for frame_id in frame_ids(seed, count):
            pixels, truth = camera.render(int(frame_id))
            yield seed, int(frame_id), pixels, truth


def evaluate(
    tracker: Tracker,
    frames: int = 300,
    width: int = 640,
    height: int = 480,
    progress: Callable[[int], None] | None = None,
    views: bool = False,
) -> dict:
    """``keypoint_metrics`` of ``tracker`` on ``frames`` held-out synthetic frames (``views``: 3D
    views of held-out heads), with what was run.

    ``progress`` is called with the number of frames done so far.
    """
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    predicted, truth, pending = [], [], []
    for _, _, pixels, keypoints in eval_frames(frames, width, height, views=views):
        pending.append(pixels)
        truth.append(keypoints)
        if len(pending) == _BATCH or len(truth) == frames:
            predicted.append(tracker.infer(np.stack(pending)))
            pending = []
            if progress is not None:
                progress(len(truth))
    result = keypoint_metrics(np.concatenate(predicted), np.stack(truth))
    description = tracker.describe()
    result.update(
        frame_size=[width, height],
        frames_from="3D views" if views else "profiles",
        eval_seeds=[EVAL_SEED_START, EVAL_SEED_START + min(EVAL_SEEDS, frames) - 1],
        engine=description["engine"],
        model=description["model"],
        model_path=description["model_path"],
        sha256=description["sha256"],
        trained=description["trained"],
    )
    return result


def result_lines(result: dict) -> list[str]:
    """``evaluate``'s result as a table for a person: each keypoint, then the whole."""
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    lines = [f"{result['model']} ({result['engine']}) on {result['frames']} held-out frames ({result['frames_from']})",
             f"{'keypoint':<14}{'error px':>10}{f'<= {WITHIN_PX:g} px':>10}{'in view':>9}"]
    for name, row in result["per_keypoint"].items():
        lines.append(f"{name:<14}{fmt(row['mean_px_error'], '10.2f')}{fmt(row['within_5px'], '10.1%')}{row['visible']:>9}")
    lines.append(
        f"mean {fmt(result['mean_px_error'], '.2f')} px, median {fmt(result['median_px_error'], '.2f')} px, "
        f"within {WITHIN_PX:g} px {fmt(result['within_5px'], '.1%')}; likelihood in view "
        f"{fmt(result['likelihood_visible'], '.3f')}, out of view or hidden {fmt(result['likelihood_occluded'], '.3f')}"
    )
    return lines


# ---------------------------------------------------------------- labelled real frames

#: keypoint groups of the labelled-frame scores (Facemap's names)
GROUPS: dict[str, tuple[str, ...]] = {
    "eye": ("eye(back)", "eye(bottom)", "eye(front)", "eye(top)"),
    "nose": ("nose(bottom)", "nose(r)", "nose(tip)", "nose(top)", "nosebridge"),
    "mouth": ("mouth", "lowerlip"),
    "whiskers": ("whisker(I)", "whisker(II)", "whisker(III)"),
    "paw": ("paw",),
}
SCALE = 256  # errors are reported at the network's input scale: error x 256 / side of the padded square
NO_BASELINE = "the blind baseline needs at least 2 images (each is scored against the others' mean layout)"


def normalised(xy: np.ndarray, geometries: list) -> np.ndarray:
    """Frame pixels (N, 15, 2) [x, y] as fractions of each frame's padded square (0..1), the
    layout the network sees whatever the frame's size (``preprocess.Geometry``, no bbox)."""
    out = np.empty(np.shape(xy)[:2] + (2,), np.float64)
    for i, g in enumerate(geometries):
        top, _, left, _ = g.pad
        row1, _, col1, _ = g.crop
        out[i, :, 0] = (xy[i, :, 0] - col1 + left) / g.side
        out[i, :, 1] = (xy[i, :, 1] - row1 + top) / g.side
    return out


def blind_layout(layout: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """The blind baseline's guess for each image (N, 15, 2), in normalised coordinates: the mean
    of the OTHER images' labelled positions of each keypoint (leave one out); NaN where no other
    image has that keypoint labelled."""
    weights = labelled.astype(np.float64)
    totals = (layout * weights[..., None]).sum(axis=0)  # (15, 2)
    counts = weights.sum(axis=0)  # (15,)
    others = counts[None, :] - weights  # (N, 15)
    sums = totals[None] - layout * weights[..., None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(others[..., None] > 0, sums / others[..., None], np.nan)


def _error_stats(errors: np.ndarray, mask: np.ndarray) -> dict:
    """median, mean and count of ``errors`` (N, 15) where ``mask``, overall and per group."""
    out = {}
    for group, parts in {"all": tuple(BODYPARTS), **GROUPS}.items():
        columns = [BODYPARTS.index(p) for p in parts]
        values = errors[:, columns][mask[:, columns]]
        out[group] = {
            "median_px": float(np.median(values)) if values.size else None,
            "mean_px": float(values.mean()) if values.size else None,
            "n": int(values.size),
        }
    return out


def labelled_metrics(predicted: np.ndarray, labels: np.ndarray, geometries: list) -> dict:
    """Scores of predicted (N, 15, 3) [x, y, likelihood] against labels (N, 15, 3) [x, y, in view].

    ``tracker`` and ``baseline``: median and mean error in pixels at the network's 256-px scale
    (error x 256 / side of the square the frame is padded to), over the labelled keypoints, for
    all and per group (``GROUPS``), with their count n. The baseline ignores the images: its guess
    is ``blind_layout`` (keypoints labelled in no other image are left out of its n); None with
    fewer than 2 images. ``likelihood``: mean likelihood of labelled and absent keypoints, the
    paw apart (None where there are none).
    """
    predicted, labels = np.asarray(predicted, np.float64), np.asarray(labels, np.float64)
    if predicted.shape != labels.shape or predicted.ndim != 3 or predicted.shape[1:] != (N_KEYPOINTS, 3):
        raise ValueError(f"predicted {predicted.shape} and labels {labels.shape} must both be (N, {N_KEYPOINTS}, 3)")
    if len(geometries) != len(labels):
        raise ValueError(f"{len(geometries)} geometries for {len(labels)} images")
    labelled = labels[..., 2] > 0
    truth = normalised(labels[..., :2], geometries)
    guess = normalised(predicted[..., :2], geometries)
    error = SCALE * np.hypot(*(guess - truth).transpose(2, 0, 1))
    baseline = None
    if len(labels) >= 2:
        blind = blind_layout(truth, labelled)
        blind_error = SCALE * np.hypot(*(blind - truth).transpose(2, 0, 1))
        baseline = _error_stats(np.nan_to_num(blind_error), labelled & np.isfinite(blind_error))
    paw = np.zeros(N_KEYPOINTS, bool)
    paw[BODYPARTS.index("paw")] = True
    likelihood = predicted[..., 2]

    def mean(mask: np.ndarray) -> float | None:
        return float(likelihood[mask].mean()) if mask.any() else None

    return {
        "images": int(len(labels)),
        "labelled": int(labelled.sum()),
        "absent": int((~labelled).sum()),
        "tracker": _error_stats(error, labelled),
        "baseline": baseline,
        "likelihood": {
            "labelled": mean(labelled & ~paw),
            "absent": mean(~labelled & ~paw),
            "paw_labelled": mean(labelled & paw),
            "paw_absent": mean(~labelled & paw),
        },
    }


def evaluate_labelled(tracker: Tracker, frames, progress: Callable[[int], None] | None = None) -> dict:
    """``labelled_metrics`` of ``tracker`` on labelled frames (``labelled_frames.LabelledFrames``),
    as labelled and mirrored left-right, with what was run. ``progress`` gets images done (of 2 N)."""
    from ..preprocess import make_geometry
    from .labelled_frames import mirrored

    result = {"labels": str(frames.source), "kind": frames.kind, "images": len(frames), "scale_px": SCALE}
    done = 0
    for orientation, subset in (("as_labelled", frames), ("mirrored", mirrored(frames))):
        predicted = []
        for image in subset.images:
            predicted.append(tracker.infer(image)[0])
            done += 1
            if progress is not None:
                progress(done)
        geometries = [make_geometry(image.shape) for image in subset.images]
        result[orientation] = labelled_metrics(np.stack(predicted), subset.labels, geometries)
    result["baseline_note"] = None if len(frames) >= 2 else NO_BASELINE
    description = tracker.describe()
    result.update(engine=description["engine"], model=description["model"], model_path=description["model_path"],
                  sha256=description["sha256"], trained=description["trained"])
    return result


def labelled_result_lines(result: dict) -> list[str]:
    """``evaluate_labelled``'s result as a table for a person: per orientation, each group's
    tracker and baseline errors, then the likelihoods."""
    def fmt(v: float | None, spec: str) -> str:  # "-" for a missing value, as wide as the number would be
        return format(v, spec) if v is not None else "-".rjust(int(spec.split(".")[0]) if spec[0].isdigit() else 1)

    lines = [f"{result['model']} ({result['engine']}) on {result['images']} labelled images from {result['labels']}",
             f"errors in px at the network's {result['scale_px']}-px scale; baseline: the other images' mean layout, blind"]
    for orientation, title in (("as_labelled", "as labelled"), ("mirrored", "mirrored left-right")):
        scores = result[orientation]
        lines.append(f"{title}: {scores['labelled']} keypoints labelled, {scores['absent']} absent")
        lines.append(f"  {'group':<10}{'n':>5}{'median':>9}{'mean':>9}   {'baseline n':>10}{'median':>9}{'mean':>9}")
        for group, row in scores["tracker"].items():
            base = None if scores["baseline"] is None else scores["baseline"][group]
            lines.append(
                f"  {group:<10}{row['n']:>5}{fmt(row['median_px'], '9.2f')}{fmt(row['mean_px'], '9.2f')}   "
                + ("" if base is None else f"{base['n']:>10}{fmt(base['median_px'], '9.2f')}{fmt(base['mean_px'], '9.2f')}")
            )
        lk = scores["likelihood"]
        lines.append(f"  likelihood: labelled {fmt(lk['labelled'], '.3f')}, absent {fmt(lk['absent'], '.3f')}; "
                     f"paw labelled {fmt(lk['paw_labelled'], '.3f')}, paw absent {fmt(lk['paw_absent'], '.3f')}")
    if result["baseline_note"]:
        lines.append(f"baseline: cannot be computed: {result['baseline_note']}")
    return lines
