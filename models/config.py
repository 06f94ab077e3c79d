"""The model configuration: every field is one of the report's architecture ablations.

Model code receives this object and nothing else: it never reads files, environment or CLIs,
so a model can be rebuilt from the resolved config stored with every trial.

Why pydantic: these knobs are declared once, here, with their types and ranges; the built-in
task's training config (``runner.tasks.mtl.config.Config``) inherits them, so a study file, ``ablate
train`` and ``build_model`` refuse the same values with the same words. Nothing of ablate is
imported: the networks stay usable on their own.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

EncoderName = Literal["resnet18", "resnet34", "resnet50"]
HeadKind = Literal["plain", "aspp"]
DecoderKind = Literal["none", "deeplabv3p", "upconv", "upconv_skip2x"]
ArchitectureKind = Literal["joint", "branched", "distillation", "distillation_se"]

NUM_SEMSEG_CLASSES = 19
#: Largest channel count: twice ResNet-50's widest layer (2048); beyond it a value is a typo.
MAX_CHANNELS = 4096


class ModelConfig(BaseModel):
    """Architecture knobs, named after the report's sections.

    encoder_weights: ``none`` (random init), ``imagenet`` (torchvision's weights through the
    torch hub cache) or a path to a local state-dict file (e.g. produced offline by ablate).
    encoder_output_stride: 32 (plain ResNet), 16 (last stage dilated, report 1.2.2) or 8.
    head: ``plain`` (1x1 conv + BN + ReLU projection) or ``aspp`` (report 1.3.1).
    decoder: ``none`` (predict from the bottleneck), ``deeplabv3p`` (4x skip, report 1.3.2),
    ``upconv`` (up-projection to 1/2 resolution, report 4.2), ``upconv_skip2x`` (+ 2x skip, 4.3).
    architecture: ``joint`` (one decoder, 20-channel head), ``branched`` (per-task ASPP+decoder,
    report 2), ``distillation`` (second decoder stage fed by self-attention of the other task,
    report 3), ``distillation_se`` (attention over both tasks + SE residual, report 4.4).
    bottleneck_se: squeeze-and-excitation on the encoder bottleneck (the report's joint count).
    """

    # strict: "head_channels: '64'" is an error, not a silent coercion; tuples stay lax (YAML and
    # JSON give lists). Frozen: a config is a value, hashed and stored with every trial.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    encoder: EncoderName = "resnet34"
    encoder_weights: str = Field("none", min_length=1)
    encoder_output_stride: Literal[8, 16, 32] = 32
    head: HeadKind = "aspp"
    aspp_rates: tuple[Annotated[int, Field(ge=1)], ...] = Field((3, 6, 9), strict=False)
    head_channels: int = Field(256, ge=1, le=MAX_CHANNELS)
    decoder: DecoderKind = "deeplabv3p"
    upconv_channels: int = Field(128, ge=1, le=MAX_CHANNELS)
    architecture: ArchitectureKind = "joint"
    bottleneck_se: bool = False
    num_classes: int = Field(NUM_SEMSEG_CLASSES, ge=1)
