"""``build_model(ModelConfig)``: the one place that turns config knobs into modules.

Validation happens here, before anything is built, so a bad config fails with a ValueError
naming the field instead of a shape error inside a forward pass. Weights are loaded right after
the encoder is built so a missing weights file fails fast (EncoderWeightsError, bad input).
"""
from __future__ import annotations

from typing import get_args

from torch import nn

from models.architectures import BranchedModel, DistillationModel, JointModel
from models.aspp import build_head
from models.attention import SqueezeAndExcitation
from models.config import ArchitectureKind, DecoderKind, HeadKind, ModelConfig
from models.decoders import build_decoder
from models.encoder import ENCODER_NAMES, OUTPUT_STRIDES, ResNetEncoder
from models.weights import load_encoder_weights


def _check(ok: bool, field: str, value, expected: str) -> None:
    if not ok:
        raise ValueError(f"model config: {field}={value!r} is invalid, expected {expected}")


def validate_config(cfg: ModelConfig) -> None:
    """Raise ValueError for any field outside what the builder supports.

    Every combination of valid values builds (e.g. ``plain`` + ``none`` is the report's
    baseline; distillation with ``none`` distils at bottleneck resolution).
    """
    _check(cfg.encoder in ENCODER_NAMES, "encoder", cfg.encoder, f"one of {ENCODER_NAMES}")
    _check(isinstance(cfg.encoder_weights, str) and cfg.encoder_weights != "",
           "encoder_weights", cfg.encoder_weights, "'none', 'imagenet' or a file path")
    _check(cfg.encoder_output_stride in OUTPUT_STRIDES, "encoder_output_stride",
           cfg.encoder_output_stride, f"one of {OUTPUT_STRIDES}")
    _check(cfg.head in get_args(HeadKind), "head", cfg.head, f"one of {get_args(HeadKind)}")
    _check(all(isinstance(r, int) and r >= 1 for r in cfg.aspp_rates), "aspp_rates",
           cfg.aspp_rates, "positive integers")
    _check(cfg.head_channels >= 1, "head_channels", cfg.head_channels, "a positive integer")
    _check(cfg.decoder in get_args(DecoderKind), "decoder", cfg.decoder,
           f"one of {get_args(DecoderKind)}")
    _check(cfg.upconv_channels >= 1, "upconv_channels", cfg.upconv_channels, "a positive integer")
    _check(cfg.architecture in get_args(ArchitectureKind), "architecture", cfg.architecture,
           f"one of {get_args(ArchitectureKind)}")
    _check(cfg.num_classes >= 1, "num_classes", cfg.num_classes, "a positive integer")


def build_model(cfg: ModelConfig) -> nn.Module:
    """Build the multi-task network described by ``cfg`` (see models.architectures)."""
    validate_config(cfg)
    encoder = ResNetEncoder(cfg.encoder, cfg.encoder_output_stride)
    load_encoder_weights(encoder, cfg.encoder_weights)
    bottleneck_se = (SqueezeAndExcitation(encoder.bottleneck_channels)
                     if cfg.bottleneck_se else None)

    def head() -> nn.Module:
        return build_head(cfg.head, encoder.bottleneck_channels, cfg.head_channels,
                          cfg.aspp_rates)

    def decoder(in_channels: int = cfg.head_channels) -> nn.Module:
        return build_decoder(cfg.decoder, in_channels, encoder.skip4_channels,
                             encoder.skip2_channels, cfg.head_channels, cfg.upconv_channels)

    if cfg.architecture == "joint":
        return JointModel(encoder, head(), decoder(), cfg.num_classes, bottleneck_se)
    if cfg.architecture == "branched":
        return BranchedModel(encoder, head(), head(), decoder(), decoder(), cfg.num_classes,
                             bottleneck_se)
    decoder_seg, decoder_depth = decoder(), decoder()
    stage2 = decoder_seg.out_channels  # second decoders take the first stage's features
    return DistillationModel(encoder, head(), head(), decoder_seg, decoder_depth,
                             decoder(stage2), decoder(stage2), cfg.num_classes,
                             squeeze_excite=cfg.architecture == "distillation_se",
                             bottleneck_se=bottleneck_se)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters; BatchNorm running statistics are buffers, so they never count."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
