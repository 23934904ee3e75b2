"""Facemap's own speed on the frames a benchmark used, run by Facemap itself.

Facemap 1.0.8 needs numpy<2, so it usually lives in an interpreter of its own: the one named by
``FACEMAP_PYTHON`` (``.ci/run`` builds ``.facemap-venv``), else this interpreter if it can import
facemap. The frames are written to an MJPG video and tracked by ``engines/facemap_reference.py``
(Facemap's ``Pose(...).run()``, batch size 1, the bundled model as its base model, in a
temporary HOME so nothing is downloaded). The figure is Facemap's own ``inference_speed``:
frames / the time of its pre-processing, network and post-processing, video decoding excluded.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from facestream.engines.training import facemap_reference
from facestream.engines.model_files import BUNDLED_DIR, PARAMS_NAME, STATE_NAME

_TIMEOUT_S = 900


def facemap_python() -> str | None:
    """The interpreter that has Facemap, or None."""
    named = os.environ.get("FACEMAP_PYTHON")
    if named:
        return named if Path(named).is_file() else None
    return sys.executable if importlib.util.find_spec("facemap") is not None else None


def facemap_fps(frames: np.ndarray, fps: float, python: str) -> dict:
    """{"fps": Facemap's frames/s, "frames", "threads", "python"} for uint8 frames (N, H, W);
    {"error": one line} when Facemap fails."""
    with tempfile.TemporaryDirectory(prefix="facestream-facemap-") as tmp:
        home = Path(tmp) / "home"
        models = home / ".facemap" / "models"
        models.mkdir(parents=True)
        for name in (STATE_NAME, PARAMS_NAME):
            (models / name).write_bytes((BUNDLED_DIR / name).read_bytes())
        video = Path(tmp) / "bench.avi"
        height, width = frames.shape[1:]
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), fps or 50.0, (width, height), isColor=True)
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
        writer.release()
        env = {**os.environ, "HOME": str(home), "MPLBACKEND": "Agg"}
        try:
            done = subprocess.run(
                [python, facemap_reference.__file__, str(video), tmp, "--run", "bench::"],
                capture_output=True, text=True, env=env, timeout=_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"Facemap did not finish within {_TIMEOUT_S} s"}
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return {"error": f"Facemap failed: {last}"}
        result = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "fps": round(result["runs"]["bench"]["inference_speed"], 2),
        "frames": result["frames"],
        "threads": result["threads"],
        "python": python,
    }
