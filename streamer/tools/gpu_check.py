"""The GPU path, checked and timed in one command on a machine with an NVIDIA GPU:

    python -m facestream.streamer.tools.gpu_check [--out gpu_check.json] [--frames 2000]

It installs nothing and needs only what ``pip install facestream[gpu]`` brings (PyTorch with
CUDA). For the bundled teacher and the bundled student it:

1. checks the ``cuda`` engine (fp16, CUDA graphs) against the CPU's ``onnx`` engine (fp32) on
   64 held-out synthetic frames, at batch 1 and batch 4: distance of in-view keypoints (mean,
   p99, max px) and the largest likelihood change; it fails (exit 1) beyond mean 0.5 px or
   p99 1.5 px, the bound the CPU int8 engine is held to;
2. runs ``facestream bench`` with the ``cuda`` engine for 1 camera and for 4 cameras (one
   network call per batch of 4 frames), the synthetic cameras at 2,000 frames/s each: frames/s
   and capture-to-publish latency p50 / p99.

It prints a table and writes every figure to ``--out``. On a machine without a CUDA GPU it says
so in one line and exits 2. Budget: under 8 minutes (four bench runs of ``--frames`` frames,
the check, start-ups).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

MODELS = {"teacher": None, "student": "student"}
CHECK_FRAMES = 64
MEAN_BOUND_PX, P99_BOUND_PX = 0.5, 1.5
CAMERA_FPS = 2000.0


def check_keypoints(model: str | None) -> dict:
    """cuda against onnx (CPU, fp32) on held-out synthetic frames, batch 1 and batch 4."""
    from facestream.camera_adapters.synthetic.camera import SyntheticCamera
    from facestream.engines.tracker import load_tracker
    from facestream.engines.training.datasets import EVAL_SEED_START

    frames = np.stack([SyntheticCamera(640, 480, seed=EVAL_SEED_START + i % 8).render(i)[0] for i in range(CHECK_FRAMES)])
    cpu = load_tracker("onnx", model)
    gpu = load_tracker("cuda", model)
    reference = np.concatenate([cpu.infer(f) for f in frames])
    results = {"runtime": gpu.describe()["runtime"]}
    for batch in (1, 4):
        found = np.concatenate([gpu.infer(frames[i:i + batch]) for i in range(0, len(frames), batch)])
        in_view = reference[..., 2] >= 0.6
        distance = np.linalg.norm(found[..., :2] - reference[..., :2], axis=-1)[in_view]
        results[f"batch{batch}"] = {
            "mean_px": float(distance.mean()), "p99_px": float(np.percentile(distance, 99)), "max_px": float(distance.max()),
            "likelihood_max_change": float(np.abs(found[..., 2] - reference[..., 2]).max()),
            "passed": bool(distance.mean() < MEAN_BOUND_PX and np.percentile(distance, 99) < P99_BOUND_PX),
        }
    return results


def bench(model: str | None, cameras: int, frames: int) -> dict:
    """One ``facestream bench`` run on the cuda engine; its JSON's headline figures."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        command = [sys.executable, "-m", "facestream.streamer.cli", "bench", "--engine", "cuda", "--frames", str(frames),
                   "--cameras", str(cameras), "--fps", str(CAMERA_FPS), "--no-facemap", "--json", str(out)]
        if model is not None:
            command += ["--model", model]
        done = subprocess.run(command, capture_output=True, text=True, timeout=240)
        if done.returncode != 0:
            return {"error": (done.stderr.strip().splitlines() or ["bench failed"])[-1]}
        result = json.loads(out.read_text())
    return {"fps": result["fps"], "latency_p50_ms": result["latency_ms"]["p50"], "latency_p99_ms": result["latency_ms"]["p99"],
            "network_ms": result.get("stages", {}).get("network")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check.json", help="JSON file for every figure")
    parser.add_argument("--frames", type=int, default=2000, help="frames per bench run")
    args = parser.parse_args(argv)
    from facestream.engines.registry import ENGINES

    missing = ENGINES["cuda"].missing()
    if missing is not None:
        print(f"gpu_check: not run: the cuda engine {missing}", file=sys.stderr)
        return 2
    report: dict = {}
    ok = True
    for name, model in MODELS.items():
        check = check_keypoints(model)
        ok &= check["batch1"]["passed"] and check["batch4"]["passed"]
        report[name] = {"check": check, "bench": {f"{n}_camera{'s' if n > 1 else ''}": bench(model, n, args.frames) for n in (1, 4)}}
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"GPU: {report['teacher']['check']['runtime']}")
    print("model    | cuda vs CPU fp32 (batch 1 / 4): mean, p99 px | cameras | frames/s | capture->publish p50 / p99 ms")
    for name, entry in report.items():
        c = entry["check"]
        agreement = f"{c['batch1']['mean_px']:.3f}, {c['batch1']['p99_px']:.3f} / {c['batch4']['mean_px']:.3f}, {c['batch4']['p99_px']:.3f}"
        for cameras, b in entry["bench"].items():
            timing = b["error"] if "error" in b else f"{b['fps']:.0f} | {b['latency_p50_ms']:.2f} / {b['latency_p99_ms']:.2f}"
            print(f"{name:8s} | {agreement} | {cameras} | {timing}")
    print(f"{'passed' if ok else 'FAILED'}: cuda within mean {MEAN_BOUND_PX} px, p99 {P99_BOUND_PX} px of the CPU; figures in {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
