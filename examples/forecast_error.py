"""How much forward prediction helps: the error of the newest keypoints (the lag) and of the
forecast, both against where the keypoints truly are ``horizon`` later, on synthetic sessions.

    python examples/forecast_error.py                       # keypoints = truth + 0.3 px jitter
    python examples/forecast_error.py --tracker --frames 1000   # keypoints from the bundled tracker

The synthetic camera knows the true keypoints at any moment, so the true future is exact.
Errors are Euclidean, in pixels, over the keypoints in view, averaged over all frames and
over the frames in which a keypoint moves more than 1 px within the horizon (when a stimulus
triggered on motion needs the prediction). Uses held-out seeds (never used in training).
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from facestream.camera_adapters.synthetic.camera import SyntheticCamera
from facestream.engines.training.datasets import EVAL_SEED_START
from facestream.engines.forecast import DEFAULT_Q_OVER_R, KalmanForecaster

HORIZONS_MS = (5.0, 10.0, 20.0)


def session_errors(seed: int, frames: int, fps: float, tracker, jitter_px: float, q_over_r: float) -> dict:
    cam = SyntheticCamera(fps=fps, seed=seed)
    rng = np.random.default_rng(seed)
    out = {h: {"lag": [], "pred": [], "moving": []} for h in HORIZONS_MS}
    forecaster = KalmanForecaster(q_over_r)
    for k in range(frames):
        t = cam.time_of(k)
        if tracker is not None:
            pixels, truth = cam.render(k)
            measured = tracker.infer(pixels)[0][:, :2]
        else:
            truth = cam.model.pose(t).keypoints
            measured = truth[:, :2] + rng.normal(0.0, jitter_px, (len(truth), 2))
        t_ns = round(t * 1e9)
        forecaster.update(measured, t_ns)
        if k < 10:  # let the velocity settle
            continue
        visible = truth[:, 2] > 0
        for h in HORIZONS_MS:
            future = cam.model.pose(t + h / 1e3).keypoints[:, :2]
            predicted = forecaster.predict(t_ns + round(h * 1e6), measured.shape)
            o = out[h]
            o["lag"].extend(np.linalg.norm(measured - future, axis=1)[visible])
            o["pred"].extend(np.linalg.norm(predicted - future, axis=1)[visible])
            o["moving"].extend((np.linalg.norm(truth[:, :2] - future, axis=1) > 1.0)[visible])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=3000, help="frames per session")
    p.add_argument("--seeds", type=int, default=2, help="sessions (held-out seeds)")
    p.add_argument("--fps", type=float, default=50.0)
    p.add_argument("--tracker", action="store_true", help="measure the bundled tracker's keypoints on rendered frames")
    p.add_argument("--jitter", type=float, default=0.3, help="px of noise added to the truth without --tracker")
    p.add_argument("--q-over-r", type=float, default=DEFAULT_Q_OVER_R)
    args = p.parse_args()
    tracker = None
    if args.tracker:
        from facestream.engines.tracker import load_tracker
        tracker = load_tracker(engine="onnx", model=None)
    merged = {h: {"lag": [], "pred": [], "moving": []} for h in HORIZONS_MS}
    for seed in range(EVAL_SEED_START, EVAL_SEED_START + args.seeds):
        for h, o in session_errors(seed, args.frames, args.fps, tracker, args.jitter, args.q_over_r).items():
            for key in o:
                merged[h][key].extend(o[key])
    rows = []
    for h, o in merged.items():
        lag, pred, moving = np.array(o["lag"]), np.array(o["pred"]), np.array(o["moving"], bool)
        rows.append({
            "horizon_ms": h, "points": len(lag), "moving_fraction": round(float(moving.mean()), 3),
            "lag_px": round(float(lag.mean()), 2), "predicted_px": round(float(pred.mean()), 2),
            "lag_moving_px": round(float(lag[moving].mean()), 2), "predicted_moving_px": round(float(pred[moving].mean()), 2),
        })
    print(json.dumps({"keypoints": "tracker" if tracker else f"truth + {args.jitter:g} px jitter", "fps": args.fps,
                      "frames": args.frames, "seeds": args.seeds, "q_over_r": args.q_over_r, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
