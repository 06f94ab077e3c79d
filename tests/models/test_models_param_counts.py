"""The parameter counts that pin the architecture down (SPEC 5, report Tables 5 and 6)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from models import ModelConfig, build_model, count_parameters
from models.aspp import ASPP
from models.attention import SqueezeAndExcitation
from models.decoders import DeepLabV3PlusDecoder
from models.encoder import ResNetEncoder

# the report's setting: ResNet-34, ASPP, DeepLabV3+ decoder, last stage dilated
REPORT = dict(encoder="resnet34", head="aspp", decoder="deeplabv3p", encoder_output_stride=16)


@pytest.mark.parametrize("overrides, expected", [
    (dict(architecture="joint"), 26_716_084),
    (dict(architecture="joint", bottleneck_se=True), 26_749_396),
    (dict(architecture="branched"), 32_142_356),
    (dict(architecture="distillation"), 37_095_656),
])
def test_model_counts_match_the_report(overrides, expected):
    assert count_parameters(build_model(ModelConfig(**REPORT, **overrides))) == expected


def test_counts_do_not_depend_on_output_stride():
    cfg = dict(REPORT, architecture="branched", encoder_output_stride=32)
    assert count_parameters(build_model(ModelConfig(**cfg))) == 32_142_356


def test_part_counts():
    assert count_parameters(ResNetEncoder("resnet34")) == 21_284_672
    assert count_parameters(ASPP(512, 256)) == 4_131_840
    assert count_parameters(DeepLabV3PlusDecoder(256, 64)) == 1_294_432
    assert count_parameters(SqueezeAndExcitation(512)) == 33_312


def test_count_excludes_frozen_parameters_and_buffers():
    encoder = ResNetEncoder("resnet18")
    total = count_parameters(encoder)
    assert total == sum(p.numel() for p in encoder.parameters())  # BN stats are buffers
    encoder.conv1.weight.requires_grad_(False)
    assert count_parameters(encoder) == total - encoder.conv1.weight.numel()


def test_package_import_is_light():
    """The CLI imports ``models`` lazily; importing it must not even pull in torch
    (build_model and friends are imported on first use)."""
    code = "import sys, models; assert 'torch' not in sys.modules, 'models imported torch'"
    repo_root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=repo_root)
