"""The built-in task: the report's multi-task network (semantic segmentation + depth).

``task: mtl`` in a study file (the default) loads this module through the ``ablate.tasks`` entry
point. What the runner calls (``ablations.task``'s contract): ``prepare(config, ctx)`` builds the
workspace's shared assets and returns the config ``fit`` gets; ``fit(config, ctx)`` trains it
through the trial context; ``count_parameters(config)`` sizes the model without training;
``final_weights(state)`` and ``data_fingerprint(config)`` say what a finished trial keeps and
which data it read; ``rehearsal_config``, ``miniature_config`` and ``cost`` (``rehearsal.py``)
shrink a config for ``ablate run --rehearse`` and describe its time for the cost preview.
"""
from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

#: What ``fit`` returns and every epoch logs, with the direction that is better. ``grader`` is the
#: course's score (clamped at 0); ``grader_unclamped`` = IoU - SI-logRMSE tells apart variants the
#: clamp makes equal.
metrics = {"grader": "max", "iou": "max", "si_logrmse": "min", "grader_unclamped": "max"}
objective = {"metric": "grader", "tie_break": ["grader_unclamped"]}
metric_labels = {"grader": "Grader", "iou": "SemSeg (IoU)", "si_logrmse": "Depth (SI-logRMSE)",
                 "grader_unclamped": "Grader, unclamped"}
#: Config keys that do not change the numbers (beyond float rounding): left out of the identity,
#: so a trial finished on a GPU is not retrained on the CPU.
execution_keys = ("device", "amp", "channels_last", "compile")
SAMPLES_FILE = "samples.png"


def __getattr__(name: str) -> Any:
    """``Config`` is imported on first use: ``ablate --help`` mounts the ``data`` commands of this
    package and must not pay for pydantic's schema building (half a second)."""
    if name == "Config":
        from runner.tasks.mtl.config import Config

        return Config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def prepare(config: Any, ctx: Any) -> Any:
    """Render the synthetic data set into ``ctx.workspace`` on first use, pack the splits' caches
    and build the offline ``synthetic-pretrained`` encoder weights; return ``config`` with the
    weights path filled in (identity hashes are taken before, so they do not change).

    Concurrency: every asset is built into a temporary file or directory and renamed into place
    (``assets``, ``pretrain``), so workers preparing the same workspace at once all end with one
    complete copy, and a crash leaves nothing half-built. A broken data set or weights file is
    ``ctx.InputError`` (the trial is handed back, exit 2)."""
    from runner.tasks.mtl.assets import prepare_splits
    from runner.tasks.mtl.pretrain import resolve_encoder_weights

    with _bad_input(ctx):
        prepare_splits(config, ctx.workspace)
        return resolve_encoder_weights(config, ctx.workspace, rehearsal=getattr(ctx, "rehearsal", False))


def fit(config: Any, ctx: Any) -> Optional[dict[str, float]]:
    """Train ``config`` (as returned by :func:`prepare`) on ``ctx.device``; resume from
    ``ctx.load_checkpoint()``. Returns the last epoch's metrics (:func:`epoch_metrics`), or None
    when ``ctx.should_stop()`` stopped it (a checkpoint is then saved: the next attempt resumes
    bit-identically on the CPU). ``TrialPruned``/``LeaseLost`` from the ctx and
    ``NonFiniteLossError`` (a failed trial) propagate; bad data and encoder weights are
    ``ctx.InputError``; a checkpoint that does not fit the model is ``ctx.CheckpointError``. At the end the prediction samples are written to ``ctx.run_dir`` and
    logged as the artifact ``samples``."""
    import torch

    from models import build_model
    from runner.tasks.mtl.assets import prepare_splits
    from runner.tasks.mtl.train import CheckpointMismatch, TrialInterrupted, train

    config = config.model_copy(update={"device": ctx.device})
    with _bad_input(ctx):
        train_split, val_split = prepare_splits(config, ctx.workspace)  # packed already: opens them
        torch.manual_seed(config.seed)
        model = build_model(config.to_model_config())
        # A rehearsal times its steps from the step rows: each row logged as its step ends.
        log_every = 1 if getattr(ctx, "rehearsal", False) else 10
        try:
            result = train(config, train_split, val_split, hooks=context_hooks(ctx), model=model,
                           log_every=log_every)
        except TrialInterrupted:
            return None
        except CheckpointMismatch as exc:  # the runner sets the file aside and starts over
            raise ctx.CheckpointError(str(exc)) from exc
    _log_samples(model, val_split, config, ctx)
    return epoch_metrics(result.final)


def final_weights(state: Mapping[str, Any]) -> dict:
    """What a finished trial keeps of its last checkpoint (``checkpoints: {keep: final}``): the
    model's weights, its config and the epoch history, without optimizer and scheduler state
    (two thirds of an Adam checkpoint), which only a resume needs."""
    return {"model": state["model"], "config": state["config"], "history": state["history"]}


def data_fingerprint(config: Any) -> Optional[str]:
    """What identifies the data set ``config`` reads (recorded with each run): for a synthetic set,
    the generator's parameters (it renders the same images from them); for a Miniscapes root,
    sha256 over every file's relative path, size and modification time, walked once per root and
    process (None when the root is missing: such a trial stops on bad input anyway)."""
    if config.data_root == "synthetic":
        h, w = config.synthetic_size
        return (f"synthetic-{h}x{w}-train{config.synthetic_train}-val{config.synthetic_val}"
                f"-seed{config.synthetic_seed}")
    root = Path(os.path.expandvars(os.path.expanduser(config.data_root))).resolve()
    if root not in _FINGERPRINTS:
        if not root.is_dir():
            return None
        digest = hashlib.sha256()
        for folder, _dirs, files in sorted(os.walk(root)):
            for name in sorted(files):
                path = Path(folder, name)
                stat = path.stat()
                digest.update(f"{path.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        _FINGERPRINTS[root] = f"files-{digest.hexdigest()[:16]}"
    return _FINGERPRINTS[root]


_FINGERPRINTS: dict[Path, str] = {}


def count_parameters(config: Any) -> int:
    """Trainable parameters of ``config``'s model, built on the ``meta`` device (no memory, no
    weight init: milliseconds) with ``encoder_weights: none`` (weights never change the count,
    and loading them would read files)."""
    import torch

    from models import build_model, count_parameters as count

    model_config = config.model_copy(update={"encoder_weights": "none"}).to_model_config()
    with torch.device("meta"):
        return count(build_model(model_config))


def rehearsal_config(config: Any) -> tuple[Any, list[str]]:
    """``ablate run --rehearse``: see :func:`runner.tasks.mtl.rehearsal.rehearsal_config`."""
    from runner.tasks.mtl.rehearsal import rehearsal_config as shrink

    return shrink(config)


def miniature_config(config: Any) -> tuple[Any, list[str]]:
    """``ablate run --rehearse`` of a config whose size was rehearsed already: see
    :func:`runner.tasks.mtl.rehearsal.miniature_config`."""
    from runner.tasks.mtl.rehearsal import miniature_config as miniature

    return miniature(config)


def cost(config: Any) -> tuple[dict, Optional[int], Optional[str]]:
    """The cost preview's work of ``config``: see :func:`runner.tasks.mtl.rehearsal.cost`."""
    from runner.tasks.mtl.rehearsal import cost as work

    return work(config)


def epoch_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """An epoch row of ``train`` as the flat float metrics the ctx records: the declared ``metrics``,
    ``lr``, the epoch's mean losses ``epoch_loss*`` (under ``loss*`` they would share a step with
    that step's own loss: two values at one step of one series) and ``iou_<class>`` per class
    (spaces as ``_``)."""
    from runner.tasks.mtl.data.miniscapes import CLASS_NAMES
    from runner.tasks.mtl.train import LOSS_KEYS

    values = {name: float(row[name]) for name in (*metrics, "lr")}
    values.update({f"epoch_{name}": float(row[name]) for name in LOSS_KEYS})
    values.update({f"iou_{name.replace(' ', '_')}": float(value)
                   for name, value in zip(CLASS_NAMES, row["iou_per_class"], strict=True)})
    return values


def context_hooks(ctx: Any):
    """``train``'s hooks on a trial context: steps to ``log_step``, epochs to ``log_epoch`` (flat
    metrics), stop and checkpoints to the ctx (which counts the wall time and the position)."""
    from runner.tasks.mtl.train import LOSS_KEYS, TrainHooks

    def on_steps(rows: list[dict]) -> None:
        for row in rows:
            ctx.log_step(row["step"], **{name: row[name] for name in LOSS_KEYS})

    return TrainHooks(on_steps=on_steps,
                      on_epoch=lambda row: ctx.log_epoch(row["epoch"], epoch_metrics(row)),
                      should_stop=ctx.should_stop, save_checkpoint=ctx.save_checkpoint,
                      load_checkpoint=ctx.load_checkpoint)


def _log_samples(model, val_split, config, ctx) -> None:
    """Sample predictions are a picture to judge a run by eye, not a result: a file that cannot be
    written (disk full) is a warning, not a failed trial that trained to the end."""
    import logging

    from runner.tasks.mtl.samples import save_prediction_samples

    try:
        path = save_prediction_samples(model, val_split, config, ctx.run_dir / SAMPLES_FILE)
    except OSError as exc:
        logging.getLogger(__name__).warning("prediction samples not saved: %s", exc)
        return
    ctx.log_artifact(path, "samples")


@contextmanager
def _bad_input(ctx) -> Iterator[None]:
    """A broken data set (``DataError``) or encoder weights file (``EncoderWeightsError``, a
    plain ValueError: ``models`` knows nothing of ablate) is the user's input, not a failed
    trial: raised as ``ctx.InputError`` with the same one-line message naming the file."""
    from models.weights import EncoderWeightsError
    from runner.tasks.mtl.data.errors import DataError

    try:
        yield
    except (DataError, EncoderWeightsError) as exc:
        raise ctx.InputError(str(exc)) from exc
