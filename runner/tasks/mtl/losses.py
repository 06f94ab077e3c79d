"""Training losses of the course code (SPEC §4), with deep supervision.

A model returns a list of predictions per task; the loss of a task is the mean over that list
(metrics use only the last element). Depth loss is an MSE on the normalised target over valid
pixels, computed per image and then averaged over images, so that images with little valid depth
(lots of sky) weigh as much as others.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from runner.tasks.mtl.data.miniscapes import IGNORE


def semseg_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over non-ignored pixels (ignore index 255); 0 with a gradient for a
    batch that is all ignored. Sum / count instead of ``reduction="mean"`` avoids the NaN of an
    all-ignored batch without a host-synchronising check."""
    total = F.cross_entropy(logits.float(), target, ignore_index=IGNORE, reduction="sum")
    return total / (target != IGNORE).sum().clamp(min=1)


def depth_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error over valid (finite) target pixels, averaged over images that
    have any valid pixel. Returns 0 (with a gradient) when no image has valid depth."""
    pred = pred.float().flatten(1)
    target = target.flatten(1)
    valid = torch.isfinite(target)
    sq = torch.where(valid, pred - torch.where(valid, target, 0.0), 0.0) ** 2
    count = valid.sum(dim=1)
    per_image = sq.sum(dim=1) / count.clamp(min=1)
    has = (count > 0).to(per_image.dtype)
    return (per_image * has).sum() / has.sum().clamp(min=1)


def _mean(losses: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(losses).mean()


def multitask_loss(outputs: dict[str, list[torch.Tensor]], semseg_target: torch.Tensor,
                   depth_target: torch.Tensor, w_seg: float, w_depth: float) -> dict[str, torch.Tensor]:
    """Returns ``{"loss", "loss_semseg", "loss_depth"}`` as 0-dim tensors (no host sync)."""
    seg = _mean([semseg_loss(p, semseg_target) for p in outputs["semseg"]])
    dep = _mean([depth_loss(p, depth_target) for p in outputs["depth"]])
    return {"loss": w_seg * seg + w_depth * dep, "loss_semseg": seg, "loss_depth": dep}
