"""The mtl task's answers to "will it run?" and "what will it cost?" (``ablations.task``'s optional
``rehearsal_config`` and ``cost``).

Why here: only the task knows which of its keys make a training short (epochs, steps, samples),
which data and weights a config reads, and what decides the time of one step (the model, the crop,
the batch). Light to import (no torch at module level): ``ablate inspect`` asks ``cost`` for every
trial of the chain.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from runner.tasks.mtl.config import Config

SYNTHETIC = "synthetic"
#: Training steps of a rehearsal: the first warms up (allocations, kernels), the second is timed.
REHEARSAL_STEPS = 2
#: Miniscapes' training split as the report describes it (20000 train / 2500 val / 2500 test):
#: the step count of a config whose data root is not on this machine.
REPORT_TRAIN_IMAGES = 20_000
#: Images of a synthetic stand-in set; one set serves every batch size up to 8 (no re-rendering).
_SYNTHETIC_TRAIN, _SYNTHETIC_VAL = 16, 8
#: A miniature's crop side: the smallest multiple of every model's largest output stride (32) that
#: leaves 2x2 features there, so pooling branches and skip decoders see what they see at full size.
MINIATURE_SIDE = 64
#: A miniature's validation batch: whole images (a real data root's are full frames), 2 of them.
MINIATURE_VAL_IMAGES = 2


def rehearsal_config(config: Config) -> tuple[Config, list[str]]:
    """``config`` for 2 training steps and 1 validation batch, plus notes on what was replaced.

    Kept as configured: the model, the crop, the batch sizes, the optimizer, the data root when
    it exists (then only its first images are read and packed). Replaced, with a note naming the
    fix: a data root that does not exist (synthetic scenes of the crop size: the shapes the model
    trains on), ImageNet weights that are not in the torch hub cache (random init: same shapes; a
    real run downloads them where it can reach download.pytorch.org)."""
    notes: list[str] = []
    update: dict[str, Any] = {"epochs": 1, "steps_per_epoch": REHEARSAL_STEPS,
                              "train_samples": REHEARSAL_STEPS * config.batch_size,
                              "val_samples": config.val_batch_size}
    stand_in = {"synthetic_train": max(_SYNTHETIC_TRAIN, REHEARSAL_STEPS * config.batch_size),
                "synthetic_val": max(_SYNTHETIC_VAL, config.val_batch_size)}
    if config.data_root == SYNTHETIC:
        update.update(stand_in)
    elif not data_root_path(config).is_dir():
        h, w = config.crop_size
        update.update(stand_in, data_root=SYNTHETIC, synthetic_size=[h, w])
        notes.append(f"data_root {config.data_root!r} not found ({data_root_path(config)}): rehearsed on "
                     f"synthetic scenes of {h}x{w} (the crop size)")
    if config.encoder_weights == "imagenet":
        missing = _missing_imagenet_weights(config.encoder)
        if missing:
            update["encoder_weights"] = "none"
            notes.append(missing)
    return Config.model_validate({**config.flat(), **update}), notes


def miniature_config(config: Config) -> tuple[Config, list[str]]:
    """:func:`rehearsal_config` with crops of at most 64x64 and a validation batch of 2 images: the
    path of ``config`` (its model, losses, optimizer, data source and weights) in about 1/16 of the
    compute at 256x256, for a rehearsal that ran a config of the same :func:`cost` signature at the
    configured size. Synthetic scenes (as configured or standing in for a missing root) are
    rendered at most 64x64 too; a real data root is read as configured. Returns the rehearsal's
    notes and, first, one saying what was made smaller."""
    shrunk, notes = rehearsal_config(config)
    crop = [min(side, MINIATURE_SIDE) for side in shrunk.crop_size]
    val = min(shrunk.val_batch_size, MINIATURE_VAL_IMAGES)
    update: dict[str, Any] = {"crop_size": crop, "val_batch_size": val, "val_samples": val}
    what = f"miniature: {crop[0]}x{crop[1]} crops"
    if shrunk.data_root == SYNTHETIC:
        scenes = [min(side, MINIATURE_SIDE) for side in shrunk.synthetic_size]
        update["synthetic_size"] = scenes
        what += f" of {scenes[0]}x{scenes[1]} synthetic scenes"
    return (Config.model_validate({**shrunk.flat(), **update}),
            [f"{what}, validation on {val} image{'s' if val > 1 else ''}", *notes])


def _missing_imagenet_weights(encoder: str) -> Optional[str]:
    """What to do about ImageNet weights of ``encoder`` that are not on this machine (None: there)."""
    from models.weights import IMAGENET_WEIGHTS, imagenet_weights_file

    path = imagenet_weights_file(encoder)
    if os.path.isfile(path):
        return None
    return (f"ImageNet weights of {encoder} not found: put {os.path.basename(path)} into "
            f"{os.path.dirname(path)} (the torch hub cache; TORCH_HOME moves it), from "
            f"{IMAGENET_WEIGHTS[encoder].url}; rehearsed with random init")


def cost(config: Config) -> tuple[dict, Optional[int], Optional[str]]:
    """(signature, training steps, note): configs of one signature take the same time per step.

    The signature holds what the time of a step depends on: the model (its weights aside), the
    crop, the batch, the optimizer and the execution levers. Steps are epochs x steps per epoch,
    each epoch ``train images // batch`` steps (drop_last), capped by ``steps_per_epoch``. The
    train images are counted in the data root; where it is not on this machine, Miniscapes'
    20,000 are assumed (the note says so)."""
    model = config.to_model_config().model_dump(mode="json")
    model.pop("encoder_weights", None)
    signature = {"model": model, "crop_size": list(config.crop_size), "batch_size": config.batch_size,
                 "optimizer": config.optimizer, "amp": config.amp, "channels_last": config.channels_last,
                 "compile": config.compile}
    images, note = _train_images(config)
    per_epoch = images // config.batch_size
    if config.steps_per_epoch is not None:
        per_epoch = min(per_epoch, config.steps_per_epoch)
    return signature, config.epochs * per_epoch, note


def _train_images(config: Config) -> tuple[int, Optional[str]]:
    if config.data_root == SYNTHETIC:
        count, note = config.synthetic_train, None
    else:
        root = data_root_path(config)
        count = _count_images(str(root))
        note = None
        if count is None:
            count = REPORT_TRAIN_IMAGES
            note = (f"{root} not found: step counts assume Miniscapes' {REPORT_TRAIN_IMAGES:,} training "
                    "images")
    if config.train_samples is not None:
        count = min(count, config.train_samples)
    return count, note


def data_root_path(config: Config) -> Path:
    """The data root as the loader reads it (``~`` and ``$VARIABLES`` expanded)."""
    return Path(os.path.expandvars(os.path.expanduser(config.data_root)))


@lru_cache(maxsize=16)
def _count_images(root: str) -> Optional[int]:
    """Training images under ``root`` (``train/rgb``); None when there is no such directory."""
    try:
        return sum(1 for entry in os.scandir(Path(root) / "train" / "rgb") if entry.is_file())
    except OSError:
        return None
