"""Encoder weights: ``none``, torchvision's ImageNet weights, or a local state-dict file.

Why this is separate from the encoder: it is the only place in ``models/`` that touches files
(and, for ``imagenet``, possibly the network), and the only place that can fail because of the
user's environment. Every such failure becomes :class:`EncoderWeightsError` whose message names
the exact file needed and where to put it, so an offline machine can be fixed by copying one
file. It is a plain ``ValueError``: ``models`` imports nothing of ablate, and the task that builds
the model (``runner.tasks.mtl``) turns it into its bad-input error (exit code 2).

ImageNet weights are looked up where torchvision itself caches them,
``<torch.hub.get_dir()>/checkpoints/<basename of the weights URL>``; the hub directory honours
``TORCH_HOME``. Loading is strict on the encoder's keys; a classifier (``fc.*``) is dropped.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, ResNet34_Weights, ResNet50_Weights

# The course code used torchvision's ``pretrained=True``, i.e. the V1 weights.
IMAGENET_WEIGHTS = {
    "resnet18": ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": ResNet50_Weights.IMAGENET1K_V1,
}


class EncoderWeightsError(ValueError):
    """Encoder weights cannot be found or do not fit the encoder: the user's input is wrong."""


def imagenet_weights_file(encoder_name: str) -> str:
    """Where torchvision's ImageNet weights for ``encoder_name`` live in the torch hub cache."""
    weights = IMAGENET_WEIGHTS[encoder_name]
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))


def _download_imagenet(encoder_name: str) -> Mapping[str, Any]:
    """torchvision's own download; it writes into the same hub cache file when it succeeds."""
    return IMAGENET_WEIGHTS[encoder_name].get_state_dict(progress=False)


def _torch_load(path: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickle with code, directory ...
        raise EncoderWeightsError(
            f"encoder weights file '{path}' could not be read as a PyTorch state dict: {exc}") from exc


def load_imagenet_state_dict(encoder_name: str) -> Mapping[str, Any]:
    """Read torchvision's ImageNet weights from the hub cache, downloading them if allowed."""
    path = imagenet_weights_file(encoder_name)
    if os.path.isfile(path):
        return _torch_load(path)
    try:
        return _download_imagenet(encoder_name)
    except Exception as exc:  # offline, proxy, disk full ...: all mean "put the file there"
        url = IMAGENET_WEIGHTS[encoder_name].url
        raise EncoderWeightsError(
            f"encoder_weights 'imagenet' needs torchvision's ImageNet weights for {encoder_name}: "
            f"file '{os.path.basename(path)}' in directory '{os.path.dirname(path)}' "
            f"(the torch hub cache, moved by TORCH_HOME). It is not there and downloading "
            f"{url} failed ({type(exc).__name__}: {exc}). Copy that file into that directory "
            f"or use encoder_weights: none.") from exc


def load_state_dict_file(path: str) -> Mapping[str, Any]:
    """Read a local state dict: a plain ResNet state dict, or a dict with key ``state_dict``."""
    if not os.path.isfile(path):
        raise EncoderWeightsError(
            f"encoder weights file '{path}' does not exist (encoder_weights must be 'none', "
            f"'imagenet' or the path of a ResNet state-dict file)")
    obj = _torch_load(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise EncoderWeightsError(
            f"encoder weights file '{path}' does not hold a state dict (a mapping of parameter "
            f"names to tensors, optionally under the key 'state_dict')")
    return obj


def _short(keys: list[str], limit: int = 5) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def apply_state_dict(encoder: nn.Module, state: Mapping[str, Any], source: str) -> None:
    """Load ``state`` into ``encoder`` strictly, dropping ``fc.*``; explain any mismatch."""
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = encoder.state_dict()
    # old torchvision checkpoints carry no BN counters; BatchNorm fills them in itself
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in own)
    wrong_shape = sorted(k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or wrong_shape:
        problems = []
        if missing:
            problems.append(f"missing keys: {_short(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {_short(unexpected)}")
        if wrong_shape:
            problems.append("wrong shapes: " + _short(
                [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in wrong_shape]))
        name = getattr(encoder, "name", "ResNet")
        raise EncoderWeightsError(
            f"encoder weights {source} do not fit the {name} encoder (expected a torchvision "
            f"{name} state dict, 'fc.*' keys optional): " + "; ".join(problems))
    encoder.load_state_dict(state, strict=True)


def load_encoder_weights(encoder: nn.Module, encoder_weights: str) -> None:
    """Apply ``encoder_weights`` (``none``, ``imagenet`` or a file path) to a ResNetEncoder."""
    if encoder_weights == "none":
        return
    if encoder_weights == "imagenet":
        apply_state_dict(encoder, load_imagenet_state_dict(encoder.name),
                         f"file '{imagenet_weights_file(encoder.name)}'")
    else:
        apply_state_dict(encoder, load_state_dict_file(encoder_weights),
                         f"file '{encoder_weights}'")
