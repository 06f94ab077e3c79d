"""Encoder, heads, decoders and attention blocks each do what their knob says."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnet34

from models.aspp import ASPP, PlainHead, build_head
from models.attention import SelfAttention, SqueezeAndExcitation
from models.decoders import (DeepLabV3PlusDecoder, IdentityDecoder, UpConvDecoder, UpProject,
                             build_decoder)
from models.encoder import EncoderFeatures, ResNetEncoder


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def features() -> EncoderFeatures:
    torch.manual_seed(0)
    with torch.no_grad():
        return ResNetEncoder("resnet18", output_stride=16).eval()(torch.randn(2, 3, 64, 128))


# ---------------------------------------------------------------- encoder

@pytest.mark.parametrize("stride, bottleneck_hw", [(32, (2, 4)), (16, (4, 8)), (8, (8, 16))])
def test_output_stride_sets_bottleneck_resolution(stride, bottleneck_hw):
    encoder = ResNetEncoder("resnet18", output_stride=stride).eval()
    with torch.no_grad():
        f = encoder(torch.randn(1, 3, 64, 128))
    assert isinstance(f, EncoderFeatures)
    assert f.skip2.shape == (1, 64, 32, 64)
    assert f.skip4.shape == (1, 64, 16, 32)
    assert f.bottleneck.shape == (1, 512, *bottleneck_hw)
    assert (encoder.skip2_channels, encoder.skip4_channels, encoder.bottleneck_channels) == (
        64, 64, 512)


def _conv2_dilations(stage: nn.Sequential) -> list[tuple[int, int]]:
    return [block.conv2.dilation for block in stage]


def test_stride_16_dilates_layer4_conv2_only():
    encoder = ResNetEncoder("resnet34", output_stride=16)
    assert _conv2_dilations(encoder.layer4) == [(2, 2)] * 3
    assert all(block.conv2.padding == (2, 2) for block in encoder.layer4)
    assert all(block.conv1.dilation == (1, 1) for block in encoder.layer4)
    assert encoder.layer4[0].conv1.stride == (1, 1)
    assert encoder.layer4[0].downsample[0].stride == (1, 1)
    assert _conv2_dilations(encoder.layer3) == [(1, 1)] * 6
    assert encoder.layer3[0].conv1.stride == (2, 2)


def test_stride_8_dilates_layer3_by_2_and_layer4_by_4():
    encoder = ResNetEncoder("resnet18", output_stride=8)
    assert _conv2_dilations(encoder.layer3) == [(2, 2)] * 2
    assert _conv2_dilations(encoder.layer4) == [(4, 4)] * 2
    assert encoder.layer3[0].conv1.stride == (1, 1)


def test_stride_32_is_plain_resnet():
    encoder = ResNetEncoder("resnet18", output_stride=32)
    for stage in (encoder.layer3, encoder.layer4):
        assert _conv2_dilations(stage) == [(1, 1)] * 2
        assert stage[0].conv1.stride == (2, 2)


def test_resnet50_channels_and_native_dilation():
    encoder = ResNetEncoder("resnet50", output_stride=16).eval()
    assert (encoder.skip4_channels, encoder.bottleneck_channels) == (256, 2048)
    assert encoder.layer4[1].conv2.dilation == (2, 2)
    with torch.no_grad():
        f = encoder(torch.randn(1, 3, 64, 64))
    assert f.skip2.shape == (1, 64, 32, 32)
    assert f.skip4.shape == (1, 256, 16, 16)
    assert f.bottleneck.shape == (1, 2048, 4, 4)


def test_encoder_has_torchvision_keys_without_classifier():
    ours = set(ResNetEncoder("resnet34").state_dict())
    theirs = {k for k in resnet34().state_dict() if not k.startswith("fc.")}
    assert ours == theirs


def test_random_init_zeroes_residual_bn():
    encoder = ResNetEncoder("resnet18")
    assert all(torch.all(block.bn2.weight == 0) for block in encoder.layer1)


@pytest.mark.parametrize("kwargs", [dict(name="resnet101"), dict(output_stride=4)])
def test_encoder_rejects_unknown_knobs(kwargs):
    with pytest.raises(ValueError):
        ResNetEncoder(**kwargs)


# ---------------------------------------------------------------- heads

def test_aspp_branches_and_shape():
    aspp = ASPP(512, 256, rates=(3, 6, 9)).eval()
    dilations = [branch[0].dilation for branch in aspp.branches[:-1]]
    assert dilations == [(1, 1), (3, 3), (6, 6), (9, 9)]
    assert [branch[0].padding for branch in aspp.branches[1:-1]] == [(3, 3), (6, 6), (9, 9)]
    assert isinstance(aspp.branches[-1][0], nn.AdaptiveAvgPool2d)
    assert aspp.project[0].in_channels == 5 * 256
    assert all(m.bias is None for m in aspp.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        assert aspp(torch.randn(2, 512, 4, 8)).shape == (2, 256, 4, 8)


def test_plain_head_is_a_1x1_projection():
    head = build_head("plain", 512, 256)
    assert isinstance(head, PlainHead) and head.out_channels == 256
    assert head[0].kernel_size == (1, 1) and head[0].bias is None
    assert sum(p.numel() for p in head.parameters()) == 512 * 256 + 2 * 256
    assert isinstance(build_head("aspp", 512, 128), ASPP)
    with pytest.raises(ValueError):
        build_head("psp", 512)


# ---------------------------------------------------------------- decoders

@pytest.mark.parametrize("kind, channels, hw, cls", [
    ("none", 256, (4, 8), IdentityDecoder),
    ("deeplabv3p", 256, (16, 32), DeepLabV3PlusDecoder),
    ("upconv", 128, (32, 64), UpConvDecoder),
    ("upconv_skip2x", 128, (32, 64), UpConvDecoder),
])
def test_decoder_resolution_and_channels(features, kind, channels, hw, cls):
    decoder = build_decoder(kind, 256, 64, 64, channels_4x=256, upconv_channels=128).eval()
    assert isinstance(decoder, cls) and decoder.out_channels == channels
    x = torch.randn(2, 256, *features.bottleneck.shape[-2:])
    with torch.no_grad():
        out = decoder(x, features)
    assert out.shape == (2, channels, *hw)
    if kind == "none":
        assert out is x


def test_skip2x_conv_only_in_upconv_skip2x():
    plain = build_decoder("upconv", 256, 64, 64)
    skip = build_decoder("upconv_skip2x", 256, 64, 64, upconv_channels=96)
    assert plain.skip2_fuse is None
    conv = skip.skip2_fuse[0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (96 + 64, 96, (3, 3))
    extra = sum(p.numel() for p in skip.parameters()) - sum(
        p.numel() for p in build_decoder("upconv", 256, 64, 64, upconv_channels=96).parameters())
    assert extra == (96 + 64) * 96 * 9 + 2 * 96


@pytest.mark.parametrize("kind", ["deeplabv3p", "upconv_skip2x"])
def test_decoder_accepts_any_input_resolution(features, kind):
    """The distillation's second stage feeds 1/4 or 1/2 resolution features."""
    decoder = build_decoder(kind, 128, 64, 64).eval()
    with torch.no_grad():
        for hw in [(16, 32), (32, 64)]:
            out = decoder(torch.randn(2, 128, *hw), features)
            assert out.shape[-2:] == ((16, 32) if kind == "deeplabv3p" else (32, 64))


def test_deeplab_decoder_layout():
    decoder = DeepLabV3PlusDecoder(256, 64)
    assert (decoder.skip_reduce[0].in_channels, decoder.skip_reduce[0].out_channels) == (64, 48)
    assert decoder.refine[0][0].in_channels == 256 + 48
    assert decoder.refine[1][0].kernel_size == (3, 3)


def test_up_project_doubles_resolution():
    up = UpProject(256, 128).eval()
    kernels = [seq[0].kernel_size for seq in up.phases]
    assert kernels == [(3, 3), (2, 3), (3, 2), (2, 2)]
    assert all(seq[0].bias is not None for seq in up.phases)  # as in the report's code
    with torch.no_grad():
        out = up(torch.randn(2, 256, 5, 7))
    assert out.shape == (2, 128, 10, 14) and torch.all(out >= 0)


def test_unknown_decoder():
    with pytest.raises(ValueError):
        build_decoder("fpn", 256, 64, 64)


# ---------------------------------------------------------------- attention

def test_self_attention_gate_starts_at_one_half():
    sa = SelfAttention(8, 4)
    assert torch.all(sa.gate.weight == 0) and sa.conv.bias is None and sa.gate.bias is None
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        assert torch.allclose(sa(x), 0.5 * sa.conv(x))


def test_squeeze_and_excitation_scales_channels():
    se = SqueezeAndExcitation(32)
    assert (se.fc1.in_features, se.fc1.out_features, se.fc2.out_features) == (32, 2, 32)
    x = torch.rand(2, 32, 4, 4) + 0.1
    with torch.no_grad():
        y = se(x)
    ratio = y / x  # one factor per (sample, channel), in (0, 1)
    assert torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio))
    assert torch.all((ratio > 0) & (ratio < 1))
