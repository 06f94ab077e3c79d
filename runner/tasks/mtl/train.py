"""Train one configuration: the plain loop every trial of every study runs.

Read it top to bottom like torchvision's references/segmentation/train.py. What makes it fit for
a study runner is a handful of lines each:

* **Resume exactly.** A checkpoint holds model, optimizer, scheduler, epoch, step within the
  epoch and RNG states. Batches of an epoch are a pure function of (seed, epoch), so a run
  resumed from any checkpoint, even one taken mid-epoch on Ctrl-C, computes bit-identical
  metrics on the CPU to an uninterrupted run. Where a checkpoint is kept is the caller's
  business (:class:`TrainHooks`: the mtl task's ``fit`` hands it to the trial context, which
  writes it atomically and counts the wall time and position); this module opens no file.
* **No host synchronisation per step.** Losses stay on the device and are read every
  ``log_every`` steps in one transfer; that is also where a non-finite loss is detected.
* **Fast path.** :class:`FastPath` holds the execution levers (bf16 autocast, channels_last,
  cudnn.benchmark, a fused/foreach optimizer, torch.compile, pinned host memory); ``fast_path``
  picks the ones that pay on the device (config keys ``amp``, ``channels_last``, ``compile``
  switch them off). ``bench/train_throughput.py`` measures each lever's share.

This module imports neither mlflow nor optuna: tracking, scheduling and checkpoint storage talk
to it through :class:`TrainHooks`.
"""
from __future__ import annotations

import random
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from runner.tasks.mtl.config import Config as TrainConfig
from models import build_model, count_parameters
from runner.tasks.mtl.data.batches import Batch, denormalise_depth, train_batches, val_batches
from runner.tasks.mtl.data.packed import PackedSplit
from runner.tasks.mtl.losses import multitask_loss
from runner.tasks.mtl.scoring import SegDepthMetrics

LOSS_KEYS = ("loss", "loss_semseg", "loss_depth")  # multitask_loss's keys; _train_step's order
CPU_AMP_DEFAULT = True  # bf16 autocast pays on CPUs with native bf16 (1.5x here): bench/README.md


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: the trial fails with this reason."""


class CheckpointMismatch(Exception):
    """The checkpoint handed back does not fit the model or optimizer of this config."""


class TrialInterrupted(Exception):
    """Raised after a checkpoint was saved because ``should_stop`` asked to stop."""


class CheckpointUnreadable(Exception):
    """A run directory's checkpoint cannot be resumed from: truncated, garbage, not a checkpoint,
    or one that does not fit this trial's model/optimizer (written by another version).

    Every read of a run directory's checkpoint raises this and only this, so the caller decides
    for the one trial (the worker sets the file aside and trains from scratch) instead of a
    torch error escaping and stopping every trial behind it. ``path`` is the file."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


@dataclass
class TrainHooks:
    """How the outside world observes and steers a training run. Every hook is optional (the
    defaults train without logging or checkpoints); ``runner.tasks.mtl.context_hooks`` maps them
    onto a trial's ctx.

    on_steps: per-step losses as plain floats (``{"step", *LOSS_KEYS}`` rows), delivered in
        batches every ``log_every`` steps: one host transfer per batch, none per step.
    on_epoch: the epoch's row (``epoch``, ``step``, ``lr``, mean losses, :meth:`SegDepthMetrics.compute`)
        after its evaluation, before its checkpoint (so a crash in between replays the epoch and
        the row is rewritten); may raise to stop (Optuna's prune, a lost lease).
    should_stop: polled before every step; True saves a checkpoint and raises
        :class:`TrialInterrupted`.
    save_checkpoint: keep ``state`` durably before returning (``torch.save`` it: its tensors are
        the live model's, training goes on changing them); the step rows delivered so far are
        then behind it. May raise to forbid the write (a worker that lost its lease).
    load_checkpoint: the state last saved, or None to start afresh.
    """

    on_steps: Callable[[list[dict]], None] = lambda rows: None
    on_epoch: Callable[[dict], None] = lambda row: None
    should_stop: Callable[[], bool] = lambda: False
    save_checkpoint: Callable[[dict], None] = lambda state: None
    load_checkpoint: Callable[[], Optional[dict]] = lambda: None


@dataclass
class TrainResult:
    final: dict               # the last epoch's row
    params: int
    device: str
    epochs: int
    steps: int
    history: list[dict] = field(default_factory=list)  # every epoch's row, resumed runs included


@dataclass(frozen=True)
class FastPath:
    """Execution levers of the training step. None of them changes what is computed beyond float
    rounding; all off is the plain eager fp32 NCHW step."""

    amp_dtype: Optional[torch.dtype] = None  # autocast dtype of the forward pass (bf16), None: fp32
    channels_last: bool = False      # NHWC weights and inputs (tensor-core friendly convolutions)
    cudnn_benchmark: bool = False    # let cuDNN time its algorithms per shape (CUDA)
    fused_optimizer: bool = False    # one fused kernel (CUDA) / foreach multi-tensor ops (CPU)
    compile: bool = False            # torch.compile the model
    pin_memory: bool = False         # page-locked host batches, non-blocking copies (CUDA)

    def autocast(self, device: torch.device) -> Callable:
        if self.amp_dtype is None:
            return nullcontext
        return lambda: torch.autocast(device.type, dtype=self.amp_dtype)


def cpu_bf16_pays() -> bool:
    """bf16 autocast pays on a CPU only with native bf16 matrix instructions (AVX512-BF16/AMX);
    elsewhere it is emulated and slower than fp32."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def fast_path(config: TrainConfig, device: torch.device) -> FastPath:
    """The levers that pay on ``device``, as measured by bench/train_throughput.py."""
    on_cuda = device.type == "cuda"
    return FastPath(
        amp_dtype=torch.bfloat16 if config.amp and (on_cuda or CPU_AMP_DEFAULT and cpu_bf16_pays()) else None,
        channels_last=config.channels_last and on_cuda,
        cudnn_benchmark=on_cuda,
        fused_optimizer=on_cuda,
        compile=config.compile,
        pin_memory=on_cuda)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def poly_lambda(epochs: int, power: float) -> Callable[[int], float]:
    """The course's poly schedule (1 - epoch/epochs)^power, stepped once per epoch."""
    return lambda epoch: max(0.0, 1.0 - epoch / epochs) ** power


def make_optimizer(config: TrainConfig, model: torch.nn.Module, device: torch.device,
                   fused_optimizer: Optional[bool] = None) -> torch.optim.Optimizer:
    """SGD or Adam; ``fused_optimizer`` (default: on CUDA only) picks the fused kernel on CUDA and
    foreach multi-tensor ops on a CPU: the same update rule with fewer launches / Python loops."""
    if fused_optimizer is None:
        fused_optimizer = device.type == "cuda"
    fused = {}
    if fused_optimizer:
        fused = {"fused": True} if device.type == "cuda" else {"foreach": True}
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, **fused)
    # Adam with plain L2 weight decay, as the course code used (not AdamW).
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, **fused)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@torch.no_grad()
def evaluate(model: torch.nn.Module, val: PackedSplit, config: TrainConfig, device: torch.device,
             fast: FastPath) -> dict:
    """Dataset-level metrics of the final prediction of each task (deep supervision ignored),
    run with the levers of ``fast`` (autocast, channels_last inputs, pinned host batches)."""
    autocast = fast.autocast(device)
    model.eval()
    metrics = SegDepthMetrics(device=device)
    for batch in val_batches(val, batch_size=config.val_batch_size, device=device,
                             depth_unit=config.depth_unit, pin_memory=fast.pin_memory,
                             channels_last=fast.channels_last):
        with autocast():
            outputs = model(batch.image)
        depth_m = denormalise_depth(outputs["depth"][-1].float(), config.depth_unit)
        metrics.update(outputs["semseg"][-1].float(), batch.semseg, depth_m, batch.depth_meters)
    model.train()
    return metrics.compute()


def train(config: TrainConfig, train_split: PackedSplit, val_split: PackedSplit, *,
          hooks: Optional[TrainHooks] = None, log_every: int = 10,
          model: Optional[torch.nn.Module] = None, fast: Optional[FastPath] = None) -> TrainResult:
    """Train ``config`` on the packed splits, resuming from ``hooks.load_checkpoint()``.

    ``model`` lets a caller pass an already built module of this config; ``fast`` overrides the
    levers ``fast_path(config, device)`` would pick (benchmarks, the optimized-step tests).
    A state whose epoch is the last one returns its result without training.
    """
    hooks = hooks or TrainHooks()
    device = resolve_device(config.device)
    fast = fast or fast_path(config, device)
    if fast.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True

    seed_everything(config.seed)
    if model is None:
        model = build_model(config.to_model_config())
    params = count_parameters(model)
    model.to(device)
    if fast.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(config, model, device, fast.fused_optimizer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lambda(config.epochs, config.poly_power))
    forward = torch.compile(model) if fast.compile else model
    autocast = fast.autocast(device)

    epoch, step_in_epoch, global_step = 0, 0, 0
    history: list[dict] = []
    epoch_loss_sum = torch.zeros(len(LOSS_KEYS), device=device)  # running sums of this epoch
    state = hooks.load_checkpoint()
    if state is not None:
        try:  # a readable file that does not fit this model/optimizer (another version wrote it)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            epoch, step_in_epoch, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
            history = state["history"]
            epoch_loss_sum = state["epoch_loss_sum"].to(device)
            _set_rng_state(state["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointMismatch(f"does not fit this model ({type(exc).__name__}: "
                                     f"{' '.join(str(exc).split())[:200]})") from exc

    def checkpoint() -> None:
        hooks.save_checkpoint({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "epoch": epoch, "step_in_epoch": step_in_epoch,
            "global_step": global_step, "history": history, "epoch_loss_sum": epoch_loss_sum.cpu(),
            "rng": _rng_state(), "config": config.model_dump(mode="json")})

    model.train()
    while epoch < config.epochs:
        pending: list[tuple[int, torch.Tensor]] = []

        def drain() -> None:
            """One host transfer for the buffered steps; fails the trial on a non-finite loss."""
            if not pending:
                return
            values = torch.stack([losses for _, losses in pending]).tolist()
            rows = [{"step": step, **dict(zip(LOSS_KEYS, losses))}
                    for (step, _), losses in zip(pending, values)]
            finite = np.isfinite(values).all(axis=1)
            if not finite.all():
                bad = rows[int(np.argmin(finite))]
                detail = ", ".join(f"{k.removeprefix('loss_')}={bad[k]}" for k in LOSS_KEYS)
                raise NonFiniteLossError(
                    f"non-finite loss at step {bad['step']} ({detail}); "
                    f"lower the learning rate ({config.optimizer} lr={config.lr})")
            pending.clear()
            hooks.on_steps(rows)

        batches = train_batches(
            train_split, batch_size=config.batch_size, crop_size=config.crop_size, seed=config.seed,
            epoch=epoch, device=device, depth_unit=config.depth_unit, flip=config.augment_flip,
            scale=config.augment_scale, start_step=step_in_epoch, max_steps=config.steps_per_epoch,
            pin_memory=fast.pin_memory, channels_last=fast.channels_last)
        for batch in batches:
            if hooks.should_stop():
                drain()
                checkpoint()
                raise TrialInterrupted(f"interrupted at epoch {epoch}, step {global_step}")
            losses = _train_step(forward, optimizer, batch, config, autocast, fast.channels_last)
            step_in_epoch += 1
            global_step += 1
            epoch_loss_sum += losses
            pending.append((global_step, losses))
            if len(pending) >= log_every:
                drain()
        drain()

        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        metrics = evaluate(forward, val_split, config, device, fast)
        mean_losses = dict(zip(LOSS_KEYS, (epoch_loss_sum / max(step_in_epoch, 1)).tolist()))
        epoch += 1
        step_in_epoch = 0
        epoch_loss_sum = torch.zeros(len(LOSS_KEYS), device=device)
        if not all(np.isfinite(list(mean_losses.values()))):
            raise NonFiniteLossError(f"non-finite mean loss in epoch {epoch}: {mean_losses}")
        row = {"epoch": epoch, "step": global_step, "lr": lr, **mean_losses, **metrics}
        history.append(row)
        hooks.on_epoch(row)
        checkpoint()

    return TrainResult(final=history[-1], params=params, device=str(device), epochs=epoch,
                       steps=global_step, history=history)


def _train_step(model, optimizer, batch: Batch, config: TrainConfig, autocast,
                channels_last: bool) -> torch.Tensor:
    """One optimisation step; returns the losses in ``LOSS_KEYS`` order, stacked on the device.

    With ``channels_last`` the image is made channels_last: a no-op for batches drawn with
    ``channels_last=True`` (as ``train`` draws them), a copy for plain NCHW batches."""
    image = batch.image.contiguous(memory_format=torch.channels_last) if channels_last else batch.image
    with autocast():
        outputs = model(image)
    losses = multitask_loss(outputs, batch.semseg, batch.depth, config.loss_weight_seg,
                            config.loss_weight_depth)
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    optimizer.step()
    return torch.stack([losses[k] for k in LOSS_KEYS]).detach()
