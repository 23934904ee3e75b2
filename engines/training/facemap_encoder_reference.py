"""Facemap 1.0.8's own keypoints-to-neural network, trained by Facemap on a split given to it.

Runs INSIDE the Facemap virtual environment (``.facemap-venv``), not facestream's, by path:
``encoder_training.facemap_network`` writes the data, runs this script and scores what it
returns exactly as it scores facestream's models. Facemap does the rest:
``KeypointsNetwork(n_in, n_out).train_model(...)`` with its defaults (201-frame symmetric
wavelet filters, 300 epochs, AdamW 1e-3 annealed twice, smoothing penalty 0.5, ``delay=-1``:
keypoints around frame t predict the next neural sample), on the CPU.

Facemap's training module imports its GUI's progress-bar window, which needs Qt; with
``gui=None`` it is never used, so an empty module stands in for it here.

Usage: python facemap_encoder_reference.py DATA.npz OUT.npz
DATA: ``inputs`` (frames, n_in) float32, ``targets`` (samples, n_out), ``t_frames_s``,
``t_samples_s``, ``itrain`` and ``itest`` ((chunks, length) sample indices), ``epochs``,
``seed``, ``threads``. OUT: ``predicted`` (test samples, n_out) and ``samples`` (the sample
index each row predicts), and ``facemap_ve``, Facemap's own figure.
"""
from __future__ import annotations

import sys
import types


def main(data_path: str, out_path: str) -> None:
    sys.modules["facemap.gui.help_windows"] = types.ModuleType("facemap.gui.help_windows")
    import numpy as np
    import torch
    from facemap.neural_prediction.neural_model import KeypointsNetwork

    data = np.load(data_path)
    torch.manual_seed(int(data["seed"]))
    torch.set_num_threads(int(data["threads"]))
    inputs, targets = data["inputs"].astype(np.float32), data["targets"].astype(np.float32)
    model = KeypointsNetwork(n_in=inputs.shape[1], n_out=targets.shape[1])
    predicted, facemap_ve, _, _, samples = model.train_model(
        inputs, targets, data["t_frames_s"], data["t_samples_s"], n_iter=int(data["epochs"]),
        itrain=data["itrain"].copy(), itest=data["itest"].copy(), device=torch.device("cpu"),
    )
    np.savez(out_path, predicted=np.asarray(predicted, np.float32), samples=np.asarray(samples).reshape(-1),
             facemap_ve=np.float64(facemap_ve))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python facemap_encoder_reference.py DATA.npz OUT.npz")
    main(sys.argv[1], sys.argv[2])
