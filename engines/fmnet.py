"""Facemap's keypoint network (FMnet), rebuilt so that Facemap's model files load into it unchanged.

The module tree reproduces Facemap's state-dict keys exactly (``Conv.conv0.conv.conv_0.0.weight``,
``Up_conv.upconv1.conv.conv_1.2.weight``, ``Conv2_1x1.conv2.bias``, ...), so a state dict saved by
Facemap loads with ``strict=True`` and gives the same outputs.

Shape: 1x256x256 in; an encoder of ``len(channels)`` stages of two pre-activation blocks
(BatchNorm -> ReLU -> 3x3 conv; the very first block has no ReLU) separated by 3x3/2 max pooling;
a decoder of two stages (nearest x2 upsampling, concatenated skip, two blocks); three 1x1 heads:
heatmap (ReLU), row offset, column offset. With Facemap's five widths the outputs are 64x64.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

N_UPSAMPLE = 2


def _unit(ch_in: int, ch_out: int, kernel: int, relu: bool) -> nn.Sequential:
    """BatchNorm -> (ReLU) -> conv without bias: Facemap's pre-activation unit."""
    layers: list[nn.Module] = [nn.BatchNorm2d(ch_in, eps=1e-5, momentum=0.1)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    layers.append(nn.Conv2d(ch_in, ch_out, kernel, padding=kernel // 2, bias=False))
    return nn.Sequential(*layers)


class _Block(nn.Module):
    """Two units in a row; ``first`` drops the ReLU of the first unit (the network's input block)."""

    def __init__(self, ch_in: int, ch_out: int, kernel: int, first: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            OrderedDict(
                conv_0=_unit(ch_in, ch_out, kernel, relu=not first),
                conv_1=_unit(ch_out, ch_out, kernel, relu=True),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class FMnet(nn.Module):
    """Facemap's tracker network; ``channels`` are the encoder widths from the params file."""

    def __init__(
        self, channels: Sequence[int], img_ch: int = 1, output_ch: int = 15, kernel: int = 3
    ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if len(channels) < N_UPSAMPLE + 1:
            raise ValueError(f"FMnet needs at least {N_UPSAMPLE + 1} channel widths, got {channels}")
        self.channels = tuple(channels)
        widths_in = [img_ch, *channels[:-1]]
        self.Conv = nn.Sequential(
            OrderedDict(
                (f"conv{k}", _Block(widths_in[k], channels[k], kernel, first=k == 0))
                for k in range(len(channels))
            )
        )
        self.Up_conv = nn.Sequential(
            OrderedDict(
                (f"upconv{k}", _Block(channels[-1 - k] + channels[-2 - k], channels[-2 - k], kernel))
                for k in range(N_UPSAMPLE)
            )
        )
        head_in = channels[-1 - N_UPSAMPLE]
        self.Conv2_1x1 = nn.Sequential(
            OrderedDict((f"conv{j}", nn.Conv2d(head_in, output_ch, kernel_size=1)) for j in range(3))
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(heatmap, row offset, column offset) for a (B, 1, 256, 256) normalized input.

        In training mode the heatmap is scaled to sum to 10 per map, as Facemap's training loss
        expects; in eval mode it is the ReLU output, which decoding uses.
        """
        skips = []
        for k, block in enumerate(self.Conv):
            if k:
                x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
            x = block(x)
            skips.append(x)
        for k, block in enumerate(self.Up_conv):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = block(torch.cat((x, skips[-2 - k]), dim=1))
        hm = F.relu(self.Conv2_1x1.conv0(x))
        if self.training:
            hm = 10 * hm / (1e-4 + hm.sum(dim=(-2, -1), keepdim=True))
        return hm, self.Conv2_1x1.conv1(x), self.Conv2_1x1.conv2(x)
