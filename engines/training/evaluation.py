"""How well a tracker finds the keypoints: pixel errors on synthetic faces it was never trained on.

Evaluation frames come from synthetic seeds ``EVAL_SEED_START`` and up, which training refuses to
use, so the numbers measure generalisation to new animals, not memory. Errors count only the
keypoints in view (the synthetic camera's truth says which); the likelihood is reported
separately for keypoints in view and out of view or hidden, since a useful likelihood is lower
on the latter. The metrics are a pure function of predictions and truth (``keypoint_metrics``)
so that they can be checked on arrays worked out by hand.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from facestream.camera_adapters.synthetic.camera import SyntheticCamera
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


def eval_frames(frames: int, width: int = 640, height: int = 480, seeds: int = EVAL_SEEDS):
    """(seed, frame_id, pixels, truth) for ``frames`` evaluation frames spread over held-out seeds."""
    seeds = max(1, min(seeds, frames))
    for i in range(seeds):
        seed = EVAL_SEED_START + i
        camera = SyntheticCamera(width, height, fps=SYNTHETIC_FPS, seed=seed)
        for frame_id in frame_ids(seed, frames // seeds + (i < frames % seeds)):
            pixels, truth = camera.render(int(frame_id))
            yield seed, int(frame_id), pixels, truth


def evaluate(
    tracker: Tracker,
    frames: int = 300,
    width: int = 640,
    height: int = 480,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """``keypoint_metrics`` of ``tracker`` on ``frames`` held-out synthetic frames, with what was run.

    ``progress`` is called with the number of frames done so far.
    """
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    predicted, truth, pending = [], [], []
    for _, _, pixels, keypoints in eval_frames(frames, width, height):
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
    lines = [f"{result['model']} ({result['engine']}) on {result['frames']} held-out frames",
             f"{'keypoint':<14}{'error px':>10}{f'<= {WITHIN_PX:g} px':>10}{'in view':>9}"]
    for name, row in result["per_keypoint"].items():
        lines.append(f"{name:<14}{fmt(row['mean_px_error'], '10.2f')}{fmt(row['within_5px'], '10.1%')}{row['visible']:>9}")
    lines.append(
        f"mean {fmt(result['mean_px_error'], '.2f')} px, median {fmt(result['median_px_error'], '.2f')} px, "
        f"within {WITHIN_PX:g} px {fmt(result['within_5px'], '.1%')}; likelihood in view "
        f"{fmt(result['likelihood_visible'], '.3f')}, out of view or hidden {fmt(result['likelihood_occluded'], '.3f')}"
    )
    return lines
