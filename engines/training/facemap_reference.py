"""Facemap 1.0.8's own offline pose pipeline on one video, for the parity test.

Runs INSIDE the Facemap virtual environment (``.facemap-venv``), not facestream's: Facemap needs
numpy<2. Each run calls ``facemap.pose.pose.Pose(...).run()``, the class behind Facemap's GUI and
API (batch size 1 outside the GUI), which writes ``<video stem>_FacemapPose.h5`` beside the
video; the file is then moved to ``OUT_DIR/<run name>.h5``. One process does every run, so
Facemap's slow import is paid once. The last line on stdout is JSON: per run the h5 path,
Facemap's own inference speed (frames/s without decoding) and the wall time of ``run()``; plus a
digest of the frames Facemap's OpenCV decodes, so that a decoder difference between the two
environments shows as such and not as a tracking difference.

Facemap reads its model files from ``~/.facemap/models/`` and downloads the base model when they
are missing: this script refuses to start unless that folder already holds both base files, so
the caller sets HOME to a folder prepared with the model files to compare. A run's MODEL is the
name of a ``*.pt`` file there (Facemap's fine-tuned models), empty for the base model.

Usage: HOME=DIR python facemap_reference.py VIDEO OUT_DIR --run NAME:MODEL:BBOX [--run ...] [--threads N]
(BBOX is ROW1,ROW2,COL1,COL2, Facemap's [x1, x2, y1, y2], or empty for the whole frame.)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import shutil
import sys
import time
from pathlib import Path

BASE_FILES = ("facemap_model_state.pt", "facemap_model_params.pth")


def frames_digest(video: str) -> tuple[int, str]:
    """(frames, sha256 of the grayscale frames) decoded as Facemap's utils.get_batch_frames does."""
    import cv2

    capture = cv2.VideoCapture(video)
    digest = hashlib.sha256()
    count = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        digest.update(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).tobytes())
        count += 1
    capture.release()
    return count, digest.hexdigest()


def make_pose(video: str, model: str | None, bbox: list[int] | None):
    """Facemap's Pose for one video, with the flags its GUI sets for a user bbox
    (pose_gui.PoseGUI.adjust_bbox: pad when not square, resize when not 256x256)."""
    from facemap.pose.pose import Pose

    if bbox is None:
        return Pose(filenames=[[video]], bbox=[], bbox_set=False, model_name=model)
    rows, cols = bbox[1] - bbox[0], bbox[3] - bbox[2]
    return Pose(
        filenames=[[video]],
        bbox=[bbox],
        bbox_set=True,
        add_padding=rows != cols,
        resize=(rows, cols) != (256, 256),
        model_name=model,
    )


def parse_run(text: str) -> tuple[str, str | None, list[int] | None]:
    name, model, bbox = text.split(":")
    return name, model or None, [int(v) for v in bbox.split(",")] if bbox else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("out_dir")
    parser.add_argument("--run", action="append", required=True, type=parse_run, help="NAME:MODEL:BBOX")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()

    models_dir = Path.home() / ".facemap" / "models"
    missing = [name for name in BASE_FILES if not (models_dir / name).is_file()]
    if missing:
        print(f"facemap_reference: {models_dir} lacks {', '.join(missing)}; Facemap would download", file=sys.stderr)
        return 2
    os.environ.setdefault("MPLBACKEND", "Agg")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    video = str(Path(args.video).resolve())
    written = Path(video).with_name(Path(video).stem + "_FacemapPose.h5")
    metadata_file = written.with_name(written.stem + "_metadata.pkl")
    out_dir = Path(args.out_dir)
    runs = {}
    for name, model, bbox in args.run:
        pose = make_pose(video, model, bbox)
        stdout, sys.stdout = sys.stdout, open(os.devnull, "w")  # Facemap prints its progress
        try:
            t0 = time.perf_counter()
            pose.run()
            seconds = time.perf_counter() - t0
        finally:
            sys.stdout.close()
            sys.stdout = stdout
        with open(metadata_file, "rb") as f:
            metadata = pickle.load(f)
        target = out_dir / f"{name}.h5"
        shutil.move(written, target)
        metadata_file.unlink()
        runs[name] = {
            "h5": str(target),
            "inference_speed": float(metadata["inference_speed"]),
            "run_seconds": seconds,
            "bbox": [int(v) for v in metadata["bbox"]],
        }
    frames, digest = frames_digest(video)
    print(json.dumps({"frames": frames, "frames_sha256": digest, "threads": torch.get_num_threads(), "runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
