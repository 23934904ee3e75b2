"""Facemap 1.0.8's own keypoints-to-neural network beside facestream's, on the same split.

Facemap needs numpy<2, so its network is trained in Facemap's own interpreter
(``facemap_encoder_reference.py``, run by path). It gets the same inputs (the cleaned,
z-scored keypoints), the same targets (the principal components of the recorded samples) and
the same training blocks, one chunk per block cut to the shortest (Facemap's chunks are of one
length); it is scored on the test blocks' recorded samples with the same formula. Facemap
predicts the next neural sample from the keypoints around the frame nearest a sample
(``delay=-1``), with filters that reach 100 frames into the future: it is not causal.
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import facemap_encoder_reference

if TYPE_CHECKING:
    from .encoder_training import Prepared, Recording, TrainSettings

TIMEOUT_S = 3600


def _chunks(prepared: Prepared, ranges: list[tuple[int, int]]) -> np.ndarray:
    """(blocks, length) neural sample indices: the samples of each block, cut to the shortest."""
    from .encoder_training import EncoderTrainingError

    per_block = [prepared.samples_in([block])[0] for block in ranges]
    per_block = [s for s in per_block if len(s)]
    if not per_block:
        raise EncoderTrainingError("no neural samples fall in the blocks to give Facemap")
    length = min(len(s) for s in per_block)
    return np.stack([s[:length] for s in per_block]).astype(np.int64)


def facemap_network(recording: Recording, prepared: Prepared, settings: TrainSettings, python: str) -> dict[str, Any]:
    """Train Facemap's network in ``python`` and score it: test variance explained on the
    components and the mean over neurons, Facemap's own figure, the epochs run."""
    from .encoder_training import EncoderTrainingError, neuron_variance_explained, variance_explained

    with tempfile.TemporaryDirectory(prefix="facestream-facemap-encoder-") as tmp:
        data, out = Path(tmp) / "data.npz", Path(tmp) / "out.npz"
        np.savez(
            data, inputs=prepared.inputs, targets=prepared.sample_targets, t_frames_s=recording.frame_t_s,
            t_samples_s=recording.neural_t_s, itrain=_chunks(prepared, prepared.train),
            itest=_chunks(prepared, prepared.test), epochs=settings.epochs, seed=settings.seed,
            threads=max(1, settings.threads),
        )
        try:
            done = subprocess.run([python, facemap_encoder_reference.__file__, str(data), str(out)],
                                  capture_output=True, text=True, timeout=TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EncoderTrainingError(f"Facemap's network could not be run with {python}: {exc}") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise EncoderTrainingError(f"Facemap's network failed: {last}")
        result = np.load(out)
        predicted, samples = result["predicted"], result["samples"]
    neurons = predicted @ prepared.projection.components.T
    return {
        "test_variance_explained": variance_explained(prepared.sample_targets[samples], predicted),
        "test_variance_explained_neurons": float(np.nanmean(neuron_variance_explained(
            prepared.sample_neurons[samples], neurons))),
        "facemap_own_variance_explained": float(result["facemap_ve"]),
        "samples_test": int(len(samples)),
        "epochs": {"run": settings.epochs, "kept": settings.epochs},
    }
