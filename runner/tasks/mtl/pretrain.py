"""Offline stand-in for ImageNet weights: a short supervised pretraining of the encoder.

The report's pretraining study compares a random encoder with ImageNet weights. Where ImageNet
weights cannot be downloaded (this project's CI, air-gapped clusters), the smoke profile uses
``encoder_weights: synthetic-pretrained`` instead: ablate pretrains the encoder once per
workspace on a *separate* synthetic set (its own seed, so no validation image is seen) with an
image-level task, multi-label "which classes are present", the same kind of supervision as
ImageNet classification. The weights file is then an ordinary local weights path, loaded by the
same code path as any user-supplied file, so the study still compares random with pretrained.
"""
from __future__ import annotations

import io
from pathlib import Path

import torch
import torch.nn.functional as F

from runner.tasks.mtl.config import Config as TrainConfig
from runner.atomic import write_bytes_atomic

SYNTHETIC_PRETRAINED = "synthetic-pretrained"
PRETRAIN_SEED = 10_000  # synthetic scenes never used for training or validation of a trial


def resolve_encoder_weights(config: TrainConfig, workspace: Path, rehearsal: bool = False) -> TrainConfig:
    """Return ``config`` with ``synthetic-pretrained`` replaced by the path of the weights file
    (built on first use). Identity hashes are taken before this, so they stay stable.

    ``rehearsal``: the pretraining runs 2 steps (the same code, minutes less) into a file of its
    own name, so that such weights never stand in for real ones."""
    if config.encoder_weights != SYNTHETIC_PRETRAINED:
        return config
    h, w = config.synthetic_size
    path = Path(workspace) / "weights" / f"{config.encoder}-synthetic-{h}x{w}{'-rehearsal' if rehearsal else ''}.pt"
    if not path.exists():
        shrunk = {"images": 32, "steps": 2} if rehearsal else {}
        pretrain_encoder(config.encoder, path, workspace, size=(h, w), **shrunk)
    return config.model_copy(update={"encoder_weights": str(path)})


def pretrain_encoder(encoder_name: str, out: Path, workspace: Path, *, size: tuple[int, int],
                     images: int = 192, steps: int = 120, batch_size: int = 16) -> Path:
    """Train ``encoder_name`` + a linear head on class presence; save the encoder's state dict."""
    from models.encoder import ResNetEncoder
    from runner.tasks.mtl.assets import dataset_root
    from runner.tasks.mtl.data.batches import train_batches
    from runner.tasks.mtl.data.miniscapes import IGNORE, NUM_CLASSES, MiniscapesFiles
    from runner.tasks.mtl.data.packed import ensure_packed

    data_cfg = TrainConfig(synthetic_train=images, synthetic_val=1, synthetic_size=size,
                           synthetic_seed=PRETRAIN_SEED)
    root = dataset_root(data_cfg, workspace)
    split = ensure_packed(MiniscapesFiles(root, "train"), Path(workspace) / "cache" / root.name / "train")

    torch.manual_seed(PRETRAIN_SEED)
    encoder = ResNetEncoder(encoder_name, output_stride=32)
    classifier = torch.nn.Linear(encoder.bottleneck_channels, NUM_CLASSES)
    optimizer = torch.optim.Adam(list(encoder.parameters()) + list(classifier.parameters()), lr=1e-3)
    crop = (size[0] // 32 * 32, size[1] // 32 * 32)
    done, epoch = 0, 0
    encoder.train()
    while done < steps:
        for batch in train_batches(split, batch_size=batch_size, crop_size=crop, seed=PRETRAIN_SEED,
                                   epoch=epoch, device=torch.device("cpu"), depth_unit="meters", flip=True):
            # multi-label target: 1 for each class present in the image, in one scatter; ignored
            # pixels land in an extra column that is dropped
            labels = torch.where(batch.semseg == IGNORE, NUM_CLASSES, batch.semseg).flatten(1)
            present = torch.zeros(len(labels), NUM_CLASSES + 1).scatter_(1, labels, 1.0)
            present = present[:, :NUM_CLASSES]
            logits = classifier(encoder(batch.image).bottleneck.mean(dim=(2, 3)))
            loss = F.binary_cross_entropy_with_logits(logits, present)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            if done >= steps:
                break
        epoch += 1
    buffer = io.BytesIO()
    torch.save(encoder.state_dict(), buffer)
    return write_bytes_atomic(out, buffer.getvalue())  # a crash never leaves a half file
