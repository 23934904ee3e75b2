"""The encoder's trainable torch forms: ``KeypointsEncoder`` (Facemap's KeypointsNetwork with a
causal temporal filter) and ``RidgePlusNetwork`` (the causal ridge model plus a network fitted to
its residuals). They run on whole sequences, for training and offline prediction;
``encoder.StreamingEncoder`` runs the same weights one frame at a time in numpy, so the live path
never imports torch.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .encoder import N_IN
from .lagged_ridge import LaggedRidge


def gabor_bank(n_filt: int, kernel_frames: int, lookahead_frames: int | None = None) -> np.ndarray:
    """Facemap's wavelet initialisation, centred on the current frame: (n_filt, kernel_frames) float32.

    Gaussian (sigma 1 rad, 2*pi rad = kernel_frames taps) times cosine, centred on the tap that
    sees the current frame (tap K-1-L), at n_filt/2 frequencies geometrically spaced from 1 to
    10 cycles, in phase 0 then pi/2; each phase's block of filters is scaled to unit total
    norm. With K = 201 and L = 100 (lookahead None: the middle) this is exactly Facemap's.
    A causal filter (L = 0) centred on the kernel's middle would start by weighting what
    happened two seconds ago and almost nothing of the last second; centred on the current
    frame, its causal half starts at the present: on a held-out population this alone took the
    causal network's test variance explained from 0.211 to 0.217 (docs/encoder.md).
    """
    centre = (kernel_frames - 1) // 2 if lookahead_frames is None else kernel_frames - 1 - lookahead_frames
    t = ((np.arange(kernel_frames) - centre) * (2 * np.pi / kernel_frames)).astype(np.float32)
    freqs = np.geomspace(1, 10, n_filt // 2).astype(np.float32)[:, None]
    blocks = [np.exp(-(t**2) / 2) * np.cos(phase + freqs * t) for phase in (0.0, np.pi / 2)]
    return np.vstack([b / np.sqrt((b**2).sum()) for b in blocks]).astype(np.float32)


class KeypointsEncoder(nn.Module):
    """Facemap's KeypointsNetwork with a causal temporal filter.

    linear (n_in -> n_in) -> Conv1d(1 -> n_filt, kernel K, no bias, shared across features)
    -> ReLU -> linear (n_filt*n_in -> n_med) -> ReLU -> linear (n_med -> n_latents) -> ReLU
    -> readout linear (n_latents -> n_out).

    The filter output for frame t covers frames t-K+1+L .. t+L (K taps, L = lookahead_frames);
    frames before the start of the sequence are zeros and so are those after its end. K=201, L=100
    is Facemap's symmetric filter; parameter names and shapes match Facemap's state dict.
    """

    def __init__(
        self,
        n_in: int = N_IN,
        n_out: int = 128,
        kernel_frames: int = 201,
        lookahead_frames: int = 0,
        n_filt: int = 10,
        n_med: int = 50,
        n_latents: int = 256,
    ) -> None:
        super().__init__()
        if not 0 <= lookahead_frames < kernel_frames:
            raise ValueError(f"lookahead_frames must be in [0, {kernel_frames}), got {lookahead_frames}")
        if n_filt % 2:
            raise ValueError(f"n_filt must be even (cosine and sine pairs), got {n_filt}")
        self.n_in, self.n_out, self.n_filt = n_in, n_out, n_filt
        self.n_med, self.n_latents = n_med, n_latents
        self.kernel_frames, self.lookahead_frames = kernel_frames, lookahead_frames

        # Built in Facemap's order so that a given torch seed gives Facemap's initial weights.
        self.core = nn.Module()
        self.core.features = nn.Sequential(
            OrderedDict(
                linear0=nn.Sequential(nn.Linear(n_in, n_in)),
                wavelet0=nn.Conv1d(1, n_filt, kernel_frames, bias=False),
                linear1=nn.Sequential(nn.Linear(n_filt * n_in, n_med)),
                latent=nn.Sequential(nn.Linear(n_med, n_latents)),
            )
        )
        self.core.features.wavelet0.weight.data = torch.from_numpy(
            gabor_bank(n_filt, kernel_frames, lookahead_frames)).unsqueeze(1)
        self.readout = nn.Module()
        self.readout.features = nn.Sequential(OrderedDict(linear0=nn.Linear(n_latents, n_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(T, n_in) or (B, T, n_in) normalised inputs -> (T, n_out) or (B, T, n_out)."""
        batched = x.dim() == 3
        if not batched:
            x = x.unsqueeze(0)
        n_batch, n_time, _ = x.shape
        layers = self.core.features
        h = layers.linear0(x).transpose(1, 2).reshape(n_batch * self.n_in, 1, n_time)
        h = F.pad(h, (self.kernel_frames - 1 - self.lookahead_frames, self.lookahead_frames))
        h = layers.wavelet0(h).reshape(n_batch, self.n_in * self.n_filt, n_time).transpose(1, 2)
        h = F.relu(layers.linear1(F.relu(h)))
        h = F.relu(layers.latent(h))
        y = self.readout.features(h)
        return y if batched else y[0]

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """(T, n_in) inputs -> (T, n_out), in eval mode: row t is the prediction for frame t - L."""
        self.eval()
        with torch.no_grad():
            return self(torch.from_numpy(np.ascontiguousarray(inputs, np.float32))).numpy()

    def file_meta(self) -> dict[str, Any]:
        return {"model": "network", "n_in": self.n_in, "n_out": self.n_out, "n_filt": self.n_filt,
                "n_med": self.n_med, "n_latents": self.n_latents, "kernel_frames": self.kernel_frames,
                "lookahead_frames": self.lookahead_frames}

    def file_arrays(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in self.state_dict().items()}


@dataclass(frozen=True, eq=False)
class RidgePlusNetwork:
    """The causal ridge model plus a causal network trained on what the ridge model leaves
    unexplained: the network adds what a linear model of recent positions and speeds cannot
    do, and starts from the ridge model's figure instead of having to reach it."""

    ridge: LaggedRidge
    network: KeypointsEncoder

    def __post_init__(self) -> None:
        if self.network.lookahead_frames or self.ridge.n_out != self.network.n_out:
            raise ValueError("the network must be causal (no look-ahead) and have the ridge model's outputs")
        if self.ridge.kernel_frames > self.network.kernel_frames:
            raise ValueError("the ridge model's window must not be longer than the network's filter")

    n_in = property(lambda self: self.network.n_in)
    n_out = property(lambda self: self.network.n_out)
    kernel_frames = property(lambda self: self.network.kernel_frames)
    lookahead_frames = 0

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """(T, n_in) inputs -> (T, n_out): row t is the prediction for frame t."""
        return self.ridge.predict(inputs) + self.network.predict(inputs)

    def file_meta(self) -> dict[str, Any]:
        return {**self.ridge.file_meta(), **self.network.file_meta(), "model": "ridge+network"}

    def file_arrays(self) -> dict[str, np.ndarray]:
        return {**self.ridge.file_arrays(), **self.network.file_arrays()}
