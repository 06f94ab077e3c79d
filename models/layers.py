"""Tiny building blocks shared by the heads and decoders.

Every conv in the course code that is followed by BatchNorm has no bias (BN's shift makes it
redundant), so the parameter counts in SPEC.md section 5 only come out right with ``bias=False``.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


class ConvBNReLU(nn.Sequential):
    """conv (no bias) -> BatchNorm -> ReLU; ``padding`` keeps the spatial size for odd kernels."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 dilation: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2),
                      dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False, as the course code), skipped when already that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
