"""`facestream predict-neural`: a trained encoder applied to a keypoints file as the live
pipeline applies it.

The streaming encoder steps once per frame, in order, from a fresh state, exactly as it does
in ``camera_stream`` on the frames a run publishes; so row t of the output is the ``neural``
value a run publishes with frame t (for a model with look-ahead L, its estimate for frame
t - L). A recording made with ``run --record`` gives back the activity that was published.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facestream.engines.encoder import StreamingEncoder, load_encoder
from facestream.engines.training.encoder_training import EncoderTrainingError, read_keypoints

RATE_TOLERANCE = 0.01  # a keypoints file's frame rate may differ from the encoder's by 1 %


def predict_neural(
    encoder_path: str | Path | None, keypoints_path: str | Path, neurons: bool = False, progress: bool = False,
) -> tuple[np.ndarray, StreamingEncoder]:
    """(frames, outputs) float32 predictions for the keypoints file, and the encoder used.

    encoder_path: an encoder file, None for the bundled default. neurons: every neuron of the
    training population, in its units (an encoder of principal components applies its
    projection). Raises EncoderFileError or EncoderTrainingError, one line each.
    """
    encoder = load_encoder(encoder_path)
    keypoints, times_s, fps = read_keypoints(keypoints_path)
    if len(keypoints) == 0:
        raise EncoderTrainingError(f"keypoints file {keypoints_path} holds no frames")
    rate = _frame_rate(times_s, fps)
    trained = encoder.meta.get("frame_rate_hz")
    if rate is not None and trained and abs(rate / trained - 1) > RATE_TOLERANCE:
        raise EncoderTrainingError(
            f"keypoints file {keypoints_path} is at {rate:.4g} frames/s and encoder {encoder.path} was trained at "
            f"{trained:.4g}: its filters are in frames, so its predictions would be wrong")
    if neurons and encoder.meta["kind"] == "pcs" and encoder.projection is None:
        raise EncoderTrainingError(
            f"encoder {encoder.path} predicts principal components and holds no projection to neurons")
    encoder.reset()
    out = np.empty((len(keypoints), encoder.n_out), np.float32)
    for t in tqdm(range(len(keypoints)), desc="predict", unit="frame", disable=not progress):
        out[t] = encoder.step(keypoints[t])
    if neurons and encoder.meta["kind"] == "pcs":
        out = encoder.projection.to_neurons(out).astype(np.float32)
    return out, encoder


def save_npy(array: np.ndarray, path: str | Path) -> Path:
    """Write ``array`` to ``path`` beside it first, then move it into place: no half file."""
    target = Path(path).expanduser()
    if not target.parent.is_dir():
        raise EncoderTrainingError(f"--out {target}: folder {target.parent} does not exist")
    if target.is_dir():
        raise EncoderTrainingError(f"--out {target} is a folder")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.save(f, array)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _frame_rate(times_s: np.ndarray | None, fps: float | None) -> float | None:
    if times_s is not None and len(times_s) > 1:
        step = float(np.median(np.diff(times_s)))
        if step > 0:
            return 1.0 / step
    return fps
