"""The training loop: determinism, exact resume through the trial context's checkpoints, failure
on a non-finite loss, and the training knobs of studies.yaml (optimizer, poly LR, loss weights,
depth unit)."""
import math
import re

import pytest
import torch

from runner.tasks.mtl.config import Config as TrainConfig
from runner.orchestrate.context import read_checkpoint
from runner.tasks.mtl import context_hooks, epoch_metrics
from runner.tasks.mtl import train as train_module
from runner.tasks.mtl.data.synth import synthetic_split
from runner.tasks.mtl.train import (FastPath, NonFiniteLossError, TrainHooks, TrialInterrupted, make_optimizer,
                                    poly_lambda, train)

TINY = dict(encoder="resnet18", head="plain", decoder="none", synthetic_size=(64, 64), crop_size=(32, 64),
            batch_size=2, val_batch_size=4, epochs=2, steps_per_epoch=3, optimizer="adam", lr=1e-3)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def splits():
    return synthetic_split(8, (64, 64), split="train"), synthetic_split(4, (64, 64), split="val")


def test_same_config_and_seed_give_identical_metrics(splits):
    cfg = TrainConfig(**TINY)
    a = train(cfg, *splits)
    b = train(cfg, *splits)
    assert a.history == b.history
    assert a.steps == 6 and a.epochs == 2 and len(a.history) == 2


@pytest.mark.parametrize("stop_after_steps", [2, 3, 4])  # mid-epoch, epoch boundary, next epoch
def test_resume_from_checkpoint_is_bit_identical(tmp_path, splits, make_ctx, stop_after_steps):
    """A trial stopped through the ctx (Ctrl-C, a lost lease) and resumed by a new attempt from
    the checkpoint the ctx wrote computes exactly the uninterrupted run's metrics on the CPU, and
    the two attempts together log each step and epoch once."""
    cfg = TrainConfig(**TINY)
    reference = train(cfg, *splits)

    first = make_ctx(tmp_path / "run", stop_after=stop_after_steps)
    with pytest.raises(TrialInterrupted):
        train(cfg, *splits, hooks=context_hooks(first))
    saved = read_checkpoint(tmp_path / "run")
    state = saved.state
    assert state["global_step"] == stop_after_steps
    assert {"model", "optimizer", "scheduler", "epoch", "step_in_epoch", "rng"} <= set(state)
    # the ctx's meta: completed epochs and step; every step row up to it recorded before it
    assert (saved.position.epoch, saved.position.step) == (stop_after_steps // 3, stop_after_steps)
    assert [step for step, _ in first.recorder.steps] == list(range(1, stop_after_steps + 1))

    second = make_ctx(tmp_path / "run")
    resumed = train(cfg, *splits, hooks=context_hooks(second))
    assert second.recorder.live[0] == stop_after_steps + 1  # nothing before the checkpoint is redone
    assert resumed.history == reference.history
    assert resumed.final == reference.final
    logged = first.recorder.epochs + second.recorder.epochs
    assert logged == [(row["epoch"], row["step"], epoch_metrics(row)) for row in reference.history]


def test_finished_run_returns_its_result_without_training(tmp_path, splits, make_ctx):
    cfg = TrainConfig(**TINY)
    first = train(cfg, *splits, hooks=context_hooks(make_ctx(tmp_path / "r")))
    again_ctx = make_ctx(tmp_path / "r")
    again = train(cfg, *splits, hooks=context_hooks(again_ctx))
    assert again_ctx.recorder.live == [] and again_ctx.recorder.epochs == []
    assert again.final == first.final and again.history == first.history


def test_batches_are_drawn_in_the_layout_and_memory_of_the_fast_path(splits, monkeypatch):
    """channels_last batches come out of the data pipeline NHWC (the step's conversion is then a
    no-op, not a copy back); evaluation draws its batches with the same levers."""
    seen = []
    for name in ("train_batches", "val_batches"):
        real = getattr(train_module, name)
        monkeypatch.setattr(train_module, name, lambda *a, _real=real, _name=name, **kw: seen.append(
            (_name, kw["channels_last"], kw["pin_memory"])) or _real(*a, **kw))
    cfg = TrainConfig(**{**TINY, "epochs": 1, "steps_per_epoch": 1})
    train(cfg, *splits, fast=FastPath())
    train(cfg, *splits, fast=FastPath(channels_last=True, pin_memory=True))
    assert seen == [("train_batches", False, False), ("val_batches", False, False),
                    ("train_batches", True, True), ("val_batches", True, True)]


def test_non_finite_loss_stops_with_a_clear_error(splits):
    cfg = TrainConfig(**{**TINY, "optimizer": "sgd", "lr": 1e12, "epochs": 3, "steps_per_epoch": 4})
    with pytest.raises(NonFiniteLossError, match="non-finite loss .*lr=1000000000000") as failure:
        train(cfg, *splits, log_every=1)
    assert re.match(r"non-finite loss at step \d+ \(loss=\S+, semseg=\S+, depth=\S+\); lower the learning rate",
                    str(failure.value)), str(failure.value)


def test_hooks_receive_steps_in_batches_and_epochs_before_checkpoints(splits):
    events = []
    hooks = TrainHooks(on_steps=lambda rows: events.append(("steps", [r["step"] for r in rows])),
                       on_epoch=lambda row: events.append(("epoch", row["epoch"])),
                       save_checkpoint=lambda state: events.append(
                           ("checkpoint", state["epoch"], state["global_step"], state["step_in_epoch"])))
    train(TrainConfig(**TINY), *splits, hooks=hooks, log_every=2)
    assert events == [("steps", [1, 2]), ("steps", [3]), ("epoch", 1), ("checkpoint", 1, 3, 0),
                      ("steps", [4, 5]), ("steps", [6]), ("epoch", 2), ("checkpoint", 2, 6, 0)]


def test_poly_schedule_is_stepped_per_epoch(splits):
    lrs = []
    cfg = TrainConfig(**{**TINY, "epochs": 3, "steps_per_epoch": 1, "lr": 0.1, "poly_power": 0.9})
    train(cfg, *splits, hooks=TrainHooks(on_epoch=lambda row: lrs.append(row["lr"])))
    assert lrs == pytest.approx([0.1 * poly_lambda(3, 0.9)(e) for e in range(3)])
    assert lrs[1] == pytest.approx(0.1 * (1 - 1 / 3) ** 0.9)


def test_optimizer_knob_builds_the_course_optimizers():
    model = torch.nn.Linear(2, 2)
    sgd = make_optimizer(TrainConfig(optimizer="sgd", lr=0.03), model, torch.device("cpu"))
    adam = make_optimizer(TrainConfig(optimizer="adam", lr=1e-4), model, torch.device("cpu"))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9
    assert sgd.defaults["weight_decay"] == 1e-4 and sgd.defaults["lr"] == 0.03
    assert type(adam) is torch.optim.Adam and adam.defaults["weight_decay"] == 1e-4  # L2, not AdamW


def test_loss_weights_and_depth_unit_change_training(splits):
    base = train(TrainConfig(**TINY), *splits)
    seg_heavy = train(TrainConfig(**{**TINY, "loss_weight_seg": 0.9, "loss_weight_depth": 0.1}), *splits)
    log_depth = train(TrainConfig(**{**TINY, "depth_unit": "log"}), *splits)
    first = lambda r: r.history[0]  # noqa: E731
    # Same first-step losses per task are impossible to share once the total's weights differ.
    assert first(seg_heavy)["loss"] != pytest.approx(first(base)["loss"])
    assert first(log_depth)["loss_depth"] != pytest.approx(first(base)["loss_depth"])
    assert all(math.isfinite(r.final["si_logrmse"]) for r in (base, seg_heavy, log_depth))
