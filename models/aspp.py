"""Context heads on the encoder bottleneck: ASPP (report 1.3.1) or a plain 1x1 projection.

Both map the bottleneck (512/2048 ch) to ``out_channels`` (256) at the bottleneck's resolution,
so the decoders do not care which one ran. ``plain`` is the report's pre-ASPP baseline.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from models.layers import ConvBNReLU, resize_to


class ImagePooling(nn.Sequential):
    """Global average pool -> 1x1 conv+BN+ReLU; the ASPP's image-level context branch."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), ConvBNReLU(in_channels, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # back to the input's size so it can be concatenated with the other branches
        return resize_to(super().forward(x), x.shape[-2:])


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling: parallel branches at several receptive fields.

    Branches: 1x1, one 3x3 per rate (dilation = padding = rate), image pooling; each
    conv (no bias)+BN+ReLU; concatenated and projected by a 1x1 conv+BN+ReLU.
    ASPP(512, 256) has 4,131,840 parameters (SPEC 5).
    Note: the image-pooling BN sees one value per channel and sample, so training needs batch >= 2.
    """

    def __init__(self, in_channels: int, out_channels: int = 256,
                 rates: Sequence[int] = (3, 6, 9)):
        super().__init__()
        if any(int(r) < 1 for r in rates):
            raise ValueError(f"ASPP rates must be positive integers, got {tuple(rates)}")
        branches = [ConvBNReLU(in_channels, out_channels, 1)]
        branches += [ConvBNReLU(in_channels, out_channels, 3, dilation=int(r)) for r in rates]
        branches.append(ImagePooling(in_channels, out_channels))
        self.branches = nn.ModuleList(branches)
        self.project = ConvBNReLU(out_channels * len(branches), out_channels, 1)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class PlainHead(ConvBNReLU):
    """1x1 conv (no bias)+BN+ReLU projection: the report's baseline before ASPP (Table 4)."""

    def __init__(self, in_channels: int, out_channels: int = 256):
        super().__init__(in_channels, out_channels, 1)
        self.out_channels = out_channels


def build_head(kind: str, in_channels: int, out_channels: int = 256,
               rates: Sequence[int] = (3, 6, 9)) -> nn.Module:
    """``plain`` or ``aspp``; both expose ``out_channels``."""
    if kind == "aspp":
        return ASPP(in_channels, out_channels, rates)
    if kind == "plain":
        return PlainHead(in_channels, out_channels)
    raise ValueError(f"unknown head '{kind}', expected 'plain' or 'aspp'")
