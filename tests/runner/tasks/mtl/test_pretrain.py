"""The offline ImageNet stand-in (runner.tasks.mtl.pretrain): a tiny pretraining writes encoder weights that
load through the ordinary encoder-weights path, and a workspace builds them only once."""
import pytest
import torch

from runner.tasks.mtl.config import Config as TrainConfig
from models.encoder import ResNetEncoder
from models.weights import load_encoder_weights
from runner.tasks.mtl import pretrain
from runner.tasks.mtl.pretrain import PRETRAIN_SEED, SYNTHETIC_PRETRAINED, pretrain_encoder, resolve_encoder_weights

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(size=(64, 64), images=8, steps=2, batch_size=4)


def _initial_encoder() -> ResNetEncoder:
    """The encoder exactly as pretraining initialises it (same seed), before any step."""
    torch.manual_seed(PRETRAIN_SEED)
    return ResNetEncoder("resnet18", output_stride=32)


def test_pretrained_file_loads_as_encoder_weights_and_differs_from_the_init(tmp_path):
    out = tmp_path / "weights" / "resnet18.pt"
    assert pretrain_encoder("resnet18", out, tmp_path, **TINY) == out
    assert out.is_file() and not list(out.parent.glob("*.tmp*"))  # written atomically
    init = _initial_encoder()
    loaded = ResNetEncoder("resnet18")
    load_encoder_weights(loaded, str(out))  # the loader a trial uses for a weights path
    saved = torch.load(out, map_location="cpu", weights_only=True)
    assert set(saved) == set(loaded.state_dict())
    assert all(torch.equal(v, saved[k]) for k, v in loaded.state_dict().items())
    changed = [k for k, v in init.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, saved[k])]
    assert "conv1.weight" in changed and any(k.startswith("layer4.") for k in changed)


def test_resolve_builds_the_weights_once_per_workspace(tmp_path, monkeypatch):
    calls = []

    def tiny_pretrain(encoder_name, out, workspace, *, size):
        calls.append(out)
        return pretrain_encoder(encoder_name, out, workspace, **{**TINY, "size": size})

    monkeypatch.setattr(pretrain, "pretrain_encoder", tiny_pretrain)
    config = TrainConfig(encoder="resnet18", encoder_weights=SYNTHETIC_PRETRAINED, synthetic_size=(64, 64))
    first = resolve_encoder_weights(config, tmp_path)
    path = tmp_path / "weights" / "resnet18-synthetic-64x64.pt"
    assert first.encoder_weights == str(path) and path.is_file() and calls == [path]
    assert first.model_copy(update={"encoder_weights": config.encoder_weights}) == config
    stamp = path.stat().st_mtime_ns
    second = resolve_encoder_weights(config, tmp_path)
    assert second.encoder_weights == str(path)
    assert calls == [path] and path.stat().st_mtime_ns == stamp  # reused, not retrained
    plain = config.model_copy(update={"encoder_weights": "none"})
    assert resolve_encoder_weights(plain, tmp_path) is plain
