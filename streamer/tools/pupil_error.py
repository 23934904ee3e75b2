"""``facestream pupil-error``: the live pupil's error against the synthetic face's true pupil.

Held-out synthetic faces (the evaluation seeds, which tracker training never sees) are drawn,
tracked as the live pipeline tracks them, and their pupil found from the tracked eye keypoints
with the run's ``[pupil]`` settings; the same is done from the true eye keypoints, which shows
what the pupil method itself costs apart from the tracker's error. Frames whose eye is partly
closed (the face's blink or squint latent above ``OPEN``) are left out: the lids then cover part
of the true pupil. Error: area relative to the true disc's (pi r^2), centre in pixels.
"""
from __future__ import annotations

import numpy as np

from facestream.camera_adapters.synthetic.camera import SyntheticCamera
from facestream.camera_adapters.synthetic.sampling import SYNTHETIC_FPS, SyntheticCalibration, frame_ids
from facestream.engines.tracker import load_tracker
from facestream.engines.training.datasets import EVAL_SEED_START
from facestream.streamer.config import PupilSettings
from facestream.streamer.pupil import PupilFinder

OPEN = 0.1  # blink latent at most this: the eye open


def _stats(area: list[float], centre: list[float], valid: int, fitted: int, frames: int) -> dict:
    a, c = np.abs(np.asarray(area)), np.asarray(centre)
    return {
        "frames": frames, "fitted": fitted, "valid": valid,
        "area_relative_error": {"median": round(float(np.median(a)), 3), "mean": round(float(a.mean()), 3),
                                "p90": round(float(np.percentile(a, 90)), 3)} if a.size else None,
        "area_bias": round(float(np.median(area)), 3) if a.size else None,
        "centre_error_px": {"median": round(float(np.median(c)), 2), "mean": round(float(c.mean()), 2),
                            "p90": round(float(np.percentile(c, 90)), 2)} if c.size else None,
    }


def measure(settings: PupilSettings, frames: int = 400, seeds: int = 20, engine: str = "auto", model: str | None = None,
            width: int = 640, height: int = 480) -> dict:
    """The error over ``frames`` open-eyed frames of ``seeds`` held-out faces, with tracked and
    with true eye keypoints."""
    tracker = load_tracker(engine=engine, model=model, calibration=SyntheticCalibration())
    finder = PupilFinder(settings.region_scale, settings.min_likelihood, settings.smooth_px)
    per_seed = -(-frames // seeds)
    sums = {"tracked": ([], [], 0, 0), "true": ([], [], 0, 0)}
    used = 0
    for i in range(seeds):
        seed = EVAL_SEED_START + i
        camera = SyntheticCamera(width, height, fps=SYNTHETIC_FPS, seed=seed)
        taken = 0
        for frame_id in frame_ids(seed, 4 * per_seed):
            if taken == per_seed or used == frames:
                break
            if camera.latents(int(frame_id))["blink"] > OPEN or camera.model.squint > OPEN:
                continue
            pixels, truth = camera.render(int(frame_id))
            tracked = tracker.infer(pixels)[0]
            x, y, r = camera.pupil(int(frame_id))
            for name, keypoints in (("tracked", tracked), ("true", np.column_stack([truth[:, :2], np.ones(len(truth))]))):
                area, centre, valid, fitted = sums[name]
                pupil = finder.find(pixels, keypoints)
                if pupil.area is not None:
                    fitted += 1
                    valid += pupil.valid
                    area.append(pupil.area / (np.pi * r * r) - 1)
                    centre.append(float(np.hypot(pupil.centre[0] - x, pupil.centre[1] - y)))
                sums[name] = (area, centre, valid, fitted)
            taken += 1
            used += 1
    return {
        "tracker": tracker.describe().get("model"), "engine": tracker.describe().get("engine"),
        "seeds": [EVAL_SEED_START, EVAL_SEED_START + seeds - 1], "frame": [width, height],
        "settings": {"region_scale": settings.region_scale, "min_likelihood": settings.min_likelihood,
                     "smooth_px": settings.smooth_px},
        **{f"{name}_keypoints": _stats(*values, used) for name, values in sums.items()},
    }


def summary_text(result: dict) -> str:
    lines = [f"pupil against the true pupil, {result['tracked_keypoints']['frames']} open-eyed frames of held-out faces "
             f"{result['seeds'][0]}..{result['seeds'][1]} ({result['tracker']}, {result['engine']})"]
    for name in ("tracked", "true"):
        s = result[f"{name}_keypoints"]
        if s["area_relative_error"] is None:
            lines.append(f"  {name} eye keypoints: no pupil fitted")
            continue
        a, c = s["area_relative_error"], s["centre_error_px"]
        lines.append(f"  {name} eye keypoints: area error median {a['median']:.1%} (p90 {a['p90']:.1%}, bias "
                     f"{s['area_bias']:+.1%}), centre median {c['median']:.2f} px (p90 {c['p90']:.2f}); fitted "
                     f"{s['fitted']}, valid {s['valid']}")
    return "\n".join(lines)
