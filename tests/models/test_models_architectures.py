"""Each architecture's wiring: outputs, deep supervision, modules present, config knobs."""
from __future__ import annotations

import pytest
import torch

from models import ModelConfig, build_model
from models.architectures import BranchedModel, DistillationModel, JointModel
from models.aspp import ASPP, PlainHead
from models.attention import SqueezeAndExcitation
from models.decoders import DeepLabV3PlusDecoder, IdentityDecoder, UpConvDecoder

# resnet18 and narrow heads/decoders keep forward passes fast; widths are knobs tested below
SMALL = ModelConfig(encoder="resnet18", encoder_output_stride=16, head_channels=64,
                    upconv_channels=32)


pytestmark = pytest.mark.usefixtures("one_thread")


def small(**overrides) -> ModelConfig:
    """SMALL with ``overrides``, unvalidated (as a config built in code may be): build_model
    checks it itself."""
    return SMALL.model_copy(update=overrides)


def run(model, h=64, w=128):
    torch.manual_seed(0)
    model.train()  # batch of 2 keeps the image-pooling BN happy in training mode
    return model(torch.randn(2, 3, h, w))


@pytest.mark.parametrize("architecture, cls, n_predictions", [
    ("joint", JointModel, 1),
    ("branched", BranchedModel, 1),
    ("distillation", DistillationModel, 2),
    ("distillation_se", DistillationModel, 2),
])
@pytest.mark.parametrize("decoder", ["deeplabv3p", "upconv_skip2x"])
def test_outputs_have_input_size_and_deep_supervision(architecture, cls, n_predictions, decoder):
    model = build_model(small(architecture=architecture, decoder=decoder))
    assert type(model) is cls
    out = run(model)
    assert set(out) == {"semseg", "depth"}
    assert len(out["semseg"]) == len(out["depth"]) == n_predictions
    assert all(p.shape == (2, 19, 64, 128) for p in out["semseg"])
    assert all(p.shape == (2, 1, 64, 128) for p in out["depth"])
    (out["semseg"][-1].mean() + out["depth"][-1].mean()).backward()
    assert model.encoder.conv1.weight.grad is not None


def test_odd_input_sizes_still_come_back_at_input_size():
    out = run(build_model(small(architecture="distillation", decoder="upconv_skip2x")), 66, 98)
    assert out["semseg"][-1].shape[-2:] == out["depth"][0].shape[-2:] == (66, 98)


def test_joint_modules_and_split():
    model = build_model(small(architecture="joint"))
    names = {name for name, _ in model.named_children()}
    assert names == {"encoder", "head", "decoder", "predictor"}  # no SE unless asked
    assert model.bottleneck_se is None
    assert (model.predictor.out_channels, model.predictor.bias is not None) == (20, True)
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        f = model.encoder(x)
        full = model.predictor(model.decoder(model.head(f.bottleneck), f))
    full = torch.nn.functional.interpolate(full, size=(64, 64), mode="bilinear",
                                           align_corners=False)
    assert torch.allclose(out["semseg"][0], full[:, :19], atol=1e-6)
    assert torch.allclose(out["depth"][0], full[:, 19:], atol=1e-6)


def test_branched_modules():
    model = build_model(small(architecture="branched"))
    for task, classes in (("seg", 19), ("depth", 1)):
        assert isinstance(getattr(model, f"head_{task}"), ASPP)
        assert isinstance(getattr(model, f"decoder_{task}"), DeepLabV3PlusDecoder)
        assert getattr(model, f"predictor_{task}").out_channels == classes
    assert model.head_seg is not model.head_depth
    assert not hasattr(model, "sa_seg")


def test_distillation_modules():
    model = build_model(small(architecture="distillation"))
    assert (model.sa_seg.conv.in_channels, model.sa_seg.conv.out_channels) == (64, 64)
    assert not hasattr(model, "se_seg")
    assert isinstance(model.decoder_seg_2, DeepLabV3PlusDecoder)
    assert model.decoder_depth_2.refine[0][0].in_channels == 64 + 48
    assert model.predictor_seg_2.out_channels == 19 and model.predictor_depth_2.out_channels == 1


def test_distillation_se_modules_with_upconv():
    model = build_model(small(architecture="distillation_se", decoder="upconv_skip2x",
                              upconv_channels=64))
    # SA over both tasks' 1/2-resolution features (2F -> F), SE residual of F channels
    assert (model.sa_seg.conv.in_channels, model.sa_seg.conv.out_channels) == (128, 64)
    assert isinstance(model.se_depth, SqueezeAndExcitation) and model.se_depth.fc1.in_features == 64
    # second decoders take the first stage's F channels
    assert isinstance(model.decoder_seg_2, UpConvDecoder)
    assert model.decoder_seg_2.deeplab.refine[0][0].in_channels == 64 + 48
    assert model.decoder_seg_2.skip2_fuse is not None


@pytest.mark.parametrize("architecture", ["distillation", "distillation_se"])
def test_second_stage_sees_the_other_task(architecture):
    """Changing only one task's branch changes the other task's second prediction only."""
    model = build_model(small(architecture=architecture)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        model.head_depth.project[0].weight.mul_(3.0)
        mid = model(x)
        model.head_seg.project[0].weight.mul_(3.0)
        after = model(x)
    assert torch.equal(before["semseg"][0], mid["semseg"][0])
    assert not torch.allclose(before["semseg"][1], mid["semseg"][1])
    assert torch.equal(mid["depth"][0], after["depth"][0])
    assert not torch.allclose(mid["depth"][1], after["depth"][1])


def test_plain_head_without_decoder_is_the_pre_aspp_baseline():
    model = build_model(small(head="plain", decoder="none"))
    assert isinstance(model.head, PlainHead) and isinstance(model.decoder, IdentityDecoder)
    assert not any(isinstance(m, ASPP) for m in model.modules())
    assert model.predictor.in_channels == 64
    assert run(model)["semseg"][0].shape == (2, 19, 64, 128)


def test_bottleneck_se_is_applied():
    model = build_model(small(bottleneck_se=True)).eval()
    assert isinstance(model.bottleneck_se, SqueezeAndExcitation)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)["semseg"][0]
        model.bottleneck_se.fc2.bias.fill_(-20.0)  # gate ~0: the bottleneck is switched off
        after = model(x)["semseg"][0]
    assert not torch.allclose(before, after)


def test_knobs_reach_the_modules():
    model = build_model(small(architecture="branched", num_classes=5, head_channels=48,
                              aspp_rates=(2, 4), decoder="upconv", upconv_channels=24))
    assert len(model.head_seg.branches) == 4 and model.head_seg.out_channels == 48
    assert model.decoder_seg.deeplab.refine[0][0].in_channels == 48 + 48
    assert model.decoder_seg.out_channels == 24 and model.predictor_seg.in_channels == 24
    assert run(model)["semseg"][0].shape == (2, 5, 64, 128)


def test_resnet50_widths_reach_head_and_decoder():
    model = build_model(small(encoder="resnet50", head="plain"))
    assert model.head[0].in_channels == 2048
    assert model.decoder.skip_reduce[0].in_channels == 256
    assert run(model, 64, 64)["depth"][0].shape == (2, 1, 64, 64)


def test_output_stride_reaches_the_model():
    for stride, hw in ((32, (2, 2)), (8, (8, 8))):
        model = build_model(small(encoder_output_stride=stride)).eval()
        with torch.no_grad():
            assert model.encoder(torch.randn(1, 3, 64, 64)).bottleneck.shape[-2:] == hw


@pytest.mark.parametrize("overrides", [
    dict(architecture="cascade"), dict(decoder="fpn"), dict(head="psp"),
    dict(encoder="vgg16"), dict(encoder_output_stride=4), dict(aspp_rates=(0, 6)),
    dict(num_classes=0), dict(head_channels=0), dict(upconv_channels=0),
    dict(encoder_weights=""),
])
def test_invalid_config_is_a_value_error_naming_the_field(overrides):
    with pytest.raises(ValueError, match=next(iter(overrides))):
        build_model(small(**overrides))


@pytest.mark.parametrize("overrides", [
    dict(architecture="cascade"), dict(decoder="fpn"), dict(head="psp"),
    dict(encoder="vgg16"), dict(encoder_output_stride=4), dict(aspp_rates=(0, 6)),
    dict(num_classes=0), dict(head_channels=0), dict(upconv_channels=0), dict(head_channels=4097),
    dict(encoder_weights=""), dict(head_channels="64"), dict(dropout=0.1),
])
def test_model_config_refuses_what_build_model_cannot_build(overrides):
    """ModelConfig is the one declaration of the model knobs (the mtl task's Config inherits it):
    a bad value, a coerced type or an unknown knob is refused where the config is made."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=next(iter(overrides))):
        ModelConfig(**{**SMALL.model_dump(), **overrides})
