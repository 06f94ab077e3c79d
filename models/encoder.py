"""ResNet encoder: torchvision's ResNet-18/34/50 without avgpool/fc, optionally dilated.

Why not torchvision's model as is: the decoders need the stem (1/2) and layer1 (1/4) features as
skips, and the report's dilation ablation (1.2.2) needs output stride 16 or 8 on ResNet-18/34,
which torchvision's ``BasicBlock`` refuses. The submodule names are torchvision's own
(``conv1``, ``bn1``, ``layer1`` ...), so torchvision state dicts load into it key for key.
Weight loading lives in :mod:`models.weights`; this module only builds the network.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

# name -> (torchvision builder, layer1 channels, layer4 channels)
_RESNETS = {
    "resnet18": (tv_resnet.resnet18, 64, 512),
    "resnet34": (tv_resnet.resnet34, 64, 512),
    "resnet50": (tv_resnet.resnet50, 256, 2048),
}
ENCODER_NAMES = tuple(_RESNETS)

# output stride -> (layer3 dilation, layer4 dilation); a dilated stage keeps its input resolution
_DILATIONS = {32: (1, 1), 16: (1, 2), 8: (2, 4)}
OUTPUT_STRIDES = tuple(_DILATIONS)


class EncoderFeatures(NamedTuple):
    """What the heads and decoders consume, by role rather than by scale number."""

    skip2: torch.Tensor       # stem conv1+bn+relu, 64 ch, 1/2 resolution
    skip4: torch.Tensor       # layer1, 64 (resnet18/34) or 256 (resnet50) ch, 1/4 resolution
    bottleneck: torch.Tensor  # layer4, 512 or 2048 ch, 1/output_stride resolution


def _dilate_basic_stage(stage: nn.Sequential, dilation: int) -> None:
    """Turn a BasicBlock stage's stride 2 into ``dilation`` on every block's second conv.

    This is what the course encoder did (SPEC 5): the first block stops downsampling (its conv1
    and its 1x1 downsample conv get stride 1) and each conv2 is dilated with matching padding,
    so the stage keeps its input resolution and its receptive field still grows.
    """
    first = stage[0]
    first.conv1.stride = (1, 1)
    if first.downsample is not None:
        first.downsample[0].stride = (1, 1)
    for block in stage:
        block.conv2.dilation = (dilation, dilation)
        block.conv2.padding = (dilation, dilation)


class ResNetEncoder(nn.Module):
    """ResNet trunk returning :class:`EncoderFeatures`.

    ``output_stride`` 32 is the plain ResNet, 16 dilates layer4 (dilation 2), 8 dilates layer3
    (2) and layer4 (4). Residual branches end in zero-initialised BN (``zero_init_residual``, as
    the course code), which only matters for randomly initialised encoders.
    Channel counts are attributes so heads and decoders can be sized without a forward pass.
    """

    def __init__(self, name: str = "resnet34", output_stride: int = 32):
        super().__init__()
        if name not in _RESNETS:
            raise ValueError(f"unknown encoder '{name}', expected one of {', '.join(ENCODER_NAMES)}")
        if output_stride not in _DILATIONS:
            raise ValueError(f"encoder output stride must be one of {OUTPUT_STRIDES}, "
                             f"got {output_stride}")
        build, skip4_channels, bottleneck_channels = _RESNETS[name]
        d3, d4 = _DILATIONS[output_stride]
        if name == "resnet50":  # Bottleneck blocks support dilation natively
            net = build(weights=None, zero_init_residual=True,
                        replace_stride_with_dilation=[False, d3 > 1, d4 > 1])
        else:
            net = build(weights=None, zero_init_residual=True)
            if d3 > 1:
                _dilate_basic_stage(net.layer3, d3)
            if d4 > 1:
                _dilate_basic_stage(net.layer4, d4)

        self.name = name
        self.output_stride = output_stride
        self.skip2_channels = net.conv1.out_channels
        self.skip4_channels = skip4_channels
        self.bottleneck_channels = bottleneck_channels
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1, net.layer2, net.layer3, net.layer4)

    def forward(self, x: torch.Tensor) -> EncoderFeatures:
        skip2 = self.relu(self.bn1(self.conv1(x)))
        skip4 = self.layer1(self.maxpool(skip2))
        bottleneck = self.layer4(self.layer3(self.layer2(skip4)))
        return EncoderFeatures(skip2=skip2, skip4=skip4, bottleneck=bottleneck)
