"""What a trial needs from the workspace before it can train: its data set and encoder weights.

Everything lands inside the workspace (``data/``, ``cache/``, ``weights/``) so deleting the
workspace is a full reset. Each asset is built into a temporary directory or file and renamed
into place when complete; several workers racing to build the same asset all end with the same
complete copy, and a crash leaves nothing half-built that a later run would trust.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from runner.tasks.mtl.config import Config as TrainConfig
from runner.tasks.mtl.data.errors import DataError
from runner.tasks.mtl.data.miniscapes import MiniscapesFiles
from runner.tasks.mtl.data.packed import PackedSplit, ensure_packed

SYNTHETIC = "synthetic"


def dataset_root(config: TrainConfig, workspace: Path) -> Path:
    """The Miniscapes root of ``config``; a synthetic set is rendered into the workspace once."""
    if config.data_root != SYNTHETIC:
        root = Path(os.path.expandvars(os.path.expanduser(config.data_root)))
        if not root.is_dir():
            raise DataError(f"{root}: data set directory not found (config key data_root = "
                            f"{config.data_root!r}; expected <root>/train|val/rgb|semseg|depth)")
        return root
    h, w = config.synthetic_size
    name = f"synthetic-{h}x{w}-train{config.synthetic_train}-val{config.synthetic_val}-seed{config.synthetic_seed}"
    root = Path(workspace) / "data" / name
    if not root.is_dir():
        from runner.tasks.mtl.data.synth import write_synthetic_dataset

        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root.parent))
        try:
            write_synthetic_dataset(tmp, config.synthetic_train, config.synthetic_val, size=(h, w),
                                    seed=config.synthetic_seed)
            try:
                os.rename(tmp, root)
            except OSError:
                if not root.is_dir():  # another worker won the race: its copy is identical
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _cache_dir(workspace: Path, root: Path, split: str, limit: int | None) -> Path:
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    return Path(workspace) / "cache" / f"{root.name}-{key}" / (split if limit is None else f"{split}-first{limit}")


def prepare_splits(config: TrainConfig, workspace: Path) -> tuple[PackedSplit, PackedSplit]:
    """Packed train and val splits for ``config`` (decoded once, then memory-mapped)."""
    root = dataset_root(config, workspace)
    splits = []
    for split, limit in (("train", config.train_samples), ("val", config.val_samples)):
        files = MiniscapesFiles(root, split)
        splits.append(ensure_packed(files, _cache_dir(workspace, root, split, limit), limit=limit))
    return splits[0], splits[1]
