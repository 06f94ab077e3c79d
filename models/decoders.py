"""Decoders: turn the head's features (+ encoder skips) into the final features to predict from.

Common interface: ``decoder(x, features: EncoderFeatures) -> final_features`` with attribute
``out_channels``. Decoders resize ``x`` to the skip's resolution themselves, so the same decoder
works on the head's bottleneck features and on the distillation's 1/4 or 1/2 resolution
features. Predictions (the 1x1 conv with bias) are not part of a decoder: the architectures own
them, which lets the distillation models reuse the decoder's final features.
"""
from __future__ import annotations

from typing import get_args

import torch
from torch import nn

from models.config import DecoderKind
from models.encoder import EncoderFeatures
from models.layers import ConvBNReLU, resize_to

DECODER_KINDS: tuple[str, ...] = get_args(DecoderKind)


class IdentityDecoder(nn.Module):
    """``none``: predict straight from the head's features (bottleneck resolution)."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor, features: EncoderFeatures) -> torch.Tensor:
        return x


class DeepLabV3PlusDecoder(nn.Module):
    """DeepLabV3+ decoder (report 1.3.2): 4x skip reduced to 48 ch, concat, two 3x3 refines.

    The skip is reduced so the rich encoder features do not overwhelm the head's features.
    With in=256, skip=64, out=256 it has 1,294,432 parameters (SPEC 5). Output: 1/4 resolution.
    """

    def __init__(self, in_channels: int, skip4_channels: int, out_channels: int = 256,
                 skip_reduced_channels: int = 48):
        super().__init__()
        self.skip_reduce = ConvBNReLU(skip4_channels, skip_reduced_channels, 1)
        self.refine = nn.Sequential(
            ConvBNReLU(in_channels + skip_reduced_channels, out_channels, 3),
            ConvBNReLU(out_channels, out_channels, 3),
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor, features: EncoderFeatures) -> torch.Tensor:
        skip = self.skip_reduce(features.skip4)
        x = resize_to(x, skip.shape[-2:])
        return self.refine(torch.cat((skip, x), dim=1))


class UpProject(nn.Module):
    """Up-projection (report 4.2): four convs 3x3, 2x3, 3x2, 2x2 + BN, interleaved by PixelShuffle.

    Each conv sees the input padded asymmetrically so that the four outputs are the four
    sub-pixel phases of a 2x larger map; PixelShuffle(2) interleaves them. The convs keep their
    bias as in the report's code. Output: 2x resolution, ``out_channels``.

    The input is padded once by 1 on every side; each phase's asymmetric padding is a view of
    that (a phase without left/top padding starts one column/row in).
    """

    _KERNELS = ((3, 3), (2, 3), (3, 2), (2, 2))
    _PADS = ((1, 1, 1, 1), (1, 1, 0, 1), (0, 1, 1, 1), (0, 1, 0, 1))  # (left, right, top, bottom)
    # every phase pads right and bottom by 1, so its view of the symmetric pad only drops
    # the first row (no top pad) and/or the first column (no left pad)
    _OFFSETS = tuple((1 - top, 1 - left) for left, _, top, _ in _PADS)  # (row, col)

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.phases = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels, out_channels, k), nn.BatchNorm2d(out_channels))
            for k in self._KERNELS)
        self.shuffle = nn.PixelShuffle(2)
        self.relu = nn.ReLU(inplace=True)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = nn.functional.pad(x, (1, 1, 1, 1))
        phases = [conv(padded[..., r:, c:]) for conv, (r, c) in zip(self.phases, self._OFFSETS)]
        return self.relu(self.shuffle(torch.cat(phases, dim=1)))


class UpConvDecoder(nn.Module):
    """``upconv`` / ``upconv_skip2x``: DeepLabV3+ decoder, then UpProject to 1/2 resolution.

    With ``skip2x`` (report 4.3) the stem features (1/2 resolution) are concatenated U-Net style
    and fused by a 3x3 conv+BN+ReLU back to ``upconv_channels``.
    """

    def __init__(self, in_channels: int, skip4_channels: int, skip2_channels: int,
                 upconv_channels: int = 128, channels_4x: int = 256, skip2x: bool = False):
        super().__init__()
        self.deeplab = DeepLabV3PlusDecoder(in_channels, skip4_channels, channels_4x)
        self.up = UpProject(channels_4x, upconv_channels)
        self.skip2_fuse = (ConvBNReLU(upconv_channels + skip2_channels, upconv_channels, 3)
                           if skip2x else None)
        self.out_channels = upconv_channels

    def forward(self, x: torch.Tensor, features: EncoderFeatures) -> torch.Tensor:
        x = self.up(self.deeplab(x, features))
        if self.skip2_fuse is None:
            return x
        # odd input sizes can leave the up-projection one pixel off the stem's size
        x = resize_to(x, features.skip2.shape[-2:])
        return self.skip2_fuse(torch.cat((x, features.skip2), dim=1))


def build_decoder(kind: str, in_channels: int, skip4_channels: int, skip2_channels: int,
                  channels_4x: int = 256, upconv_channels: int = 128) -> nn.Module:
    """One decoder of ``kind`` (see DECODER_KINDS) taking ``in_channels`` features."""
    if kind == "none":
        return IdentityDecoder(in_channels)
    if kind == "deeplabv3p":
        return DeepLabV3PlusDecoder(in_channels, skip4_channels, channels_4x)
    if kind in ("upconv", "upconv_skip2x"):
        return UpConvDecoder(in_channels, skip4_channels, skip2_channels, upconv_channels,
                             channels_4x, skip2x=kind == "upconv_skip2x")
    raise ValueError(f"unknown decoder '{kind}', expected one of {', '.join(DECODER_KINDS)}")
