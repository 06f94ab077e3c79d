"""Metrics and losses against values worked out by hand (SPEC §3, §4)."""
import math

import numpy as np
import pytest
import torch

from runner.tasks.mtl.losses import depth_loss, multitask_loss, semseg_loss
from runner.tasks.mtl.scoring import SegDepthMetrics, grader, si_logrmse_per_image

NAN = float("nan")


def one_hot_logits(ids: torch.Tensor, classes: int = 19) -> torch.Tensor:
    return torch.nn.functional.one_hot(ids, classes).permute(0, 3, 1, 2).float()


def test_iou_over_all_19_classes_with_absent_classes_and_ignore():
    gt = torch.tensor([[[0, 0], [1, 255]]])
    pred = torch.tensor([[[0, 1], [1, 1]]])  # the ignored pixel's prediction must not count
    m = SegDepthMetrics()
    m.update(one_hot_logits(pred), gt, torch.full((1, 1, 2, 2), 10.0), torch.full((1, 1, 2, 2), 10.0))
    per_class = m.iou_per_class()
    # class 0: TP 1, FN 1 -> 50; class 1: TP 1, FP 1 -> 50; 17 absent classes count as 0.
    assert per_class[0] == pytest.approx(50.0) and per_class[1] == pytest.approx(50.0)
    assert per_class[2:] == [0.0] * 17
    assert m.compute()["iou"] == pytest.approx(100.0 / 19)


def test_confusion_is_accumulated_over_the_dataset_not_averaged_per_image():
    m = SegDepthMetrics()
    depth = torch.full((1, 1, 1, 2), 10.0)
    m.update(one_hot_logits(torch.tensor([[[0, 0]]])), torch.tensor([[[0, 0]]]), depth, depth)
    m.update(one_hot_logits(torch.tensor([[[0, 0]]])), torch.tensor([[[0, 1]]]), depth, depth)
    # Dataset: class 0 TP 3 FP 1 -> 75; class 1 TP 0 FN 1 -> 0. Per-image mean would differ.
    assert m.iou_per_class()[:2] == pytest.approx([75.0, 0.0])


def test_confusion_equals_a_masked_bincount_over_several_batches():
    gen = torch.Generator().manual_seed(0)
    m = SegDepthMetrics()
    expected = torch.zeros(19 * 19, dtype=torch.int64)
    depth = torch.full((2, 1, 8, 8), 10.0)
    for _ in range(3):
        gt = torch.randint(0, 19, (2, 8, 8), generator=gen)
        gt[torch.rand(2, 8, 8, generator=gen) < 0.3] = 255
        pred = torch.randint(0, 19, (2, 8, 8), generator=gen)
        m.update(one_hot_logits(pred), gt, depth, depth)
        keep = gt != 255
        expected += torch.bincount(gt[keep] * 19 + pred[keep], minlength=19 * 19)
    assert torch.equal(m.confusion, expected.view(19, 19))


def test_si_logrmse_by_hand_with_clamp_and_image_without_valid_depth():
    gt = torch.tensor([[[[10.0, 20.0]]], [[[NAN, NAN]]], [[[4.0, 8.0]]]])
    pred = torch.tensor([[[[10.0, 10.0]]], [[[5.0, 5.0]]], [[[1.0, 1.0]]]])  # 1 m clamps to 4 m
    values, valid = si_logrmse_per_image(pred, gt)
    assert valid.tolist() == [True, False, True]
    half_ln2 = 100 * math.log(2) / 2  # d = [0, ln 2]: sqrt(ln2^2/2 - ln2^2/4) = ln2 / 2
    assert values[0].item() == pytest.approx(half_ln2, rel=1e-6)
    assert values[2].item() == pytest.approx(half_ln2, rel=1e-6)
    m = SegDepthMetrics()
    seg = torch.zeros(3, 1, 2, dtype=torch.long)
    m.update(one_hot_logits(seg), seg, pred, gt)
    result = m.compute()
    assert result["depth_images"] == 2  # the all-invalid image is not averaged in
    assert result["si_logrmse"] == pytest.approx(half_ln2, rel=1e-6)
    # class 0 everywhere, all right: IoU 100/19 (clamped to 0 in the grader); the tie-break is
    # IoU - SI-logRMSE, unclamped
    assert result["grader"] == pytest.approx(50.0 - half_ln2, rel=1e-9)
    assert result["grader_unclamped"] == pytest.approx(100.0 / 19 - half_ln2, rel=1e-9)


def test_si_logrmse_is_scale_invariant():
    gt = torch.tensor([[[[10.0, 20.0, 40.0]]]])
    values, _ = si_logrmse_per_image(gt * 2, gt)
    assert values.item() == pytest.approx(0.0, abs=1e-3)


def si_logrmse_reference(pred: np.ndarray, gt: np.ndarray) -> list[float]:
    """An independent float64 SI-logRMSE per image (two-pass variance, numpy): NaN for an image
    without a valid pixel (finite and > 0); the prediction clamped to [4, 300] m first."""
    out = []
    for p, g in zip(pred.reshape(len(pred), -1).astype(np.float64), gt.reshape(len(gt), -1).astype(np.float64)):
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(g) & (g > 0)
        if not valid.any():
            out.append(float("nan"))
            continue
        d = np.log(g[valid]) - np.log(np.clip(p[valid], 4.0, 300.0))
        out.append(100.0 * float(np.sqrt(np.mean((d - d.mean()) ** 2))))
    return out


@pytest.mark.parametrize("shape", [(1, 1, 3, 5), (3, 1, 17, 33), (4, 1, 64, 128), (2, 256, 512)])
def test_si_logrmse_matches_a_float64_reference_to_1e9(shape):
    """Issue #9 item 7: per-image statistics in float64, as exact as the course's own code (its
    values match a float64 computation). Random float32 inputs: predictions inside and outside
    the clamp, invalid ground truth (NaN, 0, negative, inf) and one image with none valid."""
    rng = np.random.default_rng(sum(shape))
    pred = rng.uniform(1.0, 400.0, shape).astype(np.float32)
    gt = rng.uniform(2.0, 120.0, shape).astype(np.float32)
    invalid = rng.random(shape) < 0.2
    gt[invalid] = rng.choice(np.array([np.nan, 0.0, -5.0, np.inf], dtype=np.float32), size=int(invalid.sum()))
    gt[-1] = np.nan if shape[0] > 1 else gt[-1]
    values, has_depth = si_logrmse_per_image(torch.from_numpy(pred), torch.from_numpy(gt))
    expected = si_logrmse_reference(pred, gt)
    assert has_depth.tolist() == [not math.isnan(e) for e in expected]
    got = [v for v, ok in zip(values.tolist(), has_depth.tolist()) if ok]
    assert got == pytest.approx([e for e in expected if not math.isnan(e)], abs=1e-9, rel=0)


@pytest.mark.parametrize("iou,si,expected", [(70.0, 20.0, 50.0), (40.0, 20.0, 30.0), (70.0, 60.0, 20.0),
                                             (40.0, 60.0, 0.0)])
def test_grader_clamps_each_task_at_zero(iou, si, expected):
    assert grader(iou, si) == pytest.approx(expected)


def test_semseg_loss_ignores_255_and_handles_all_ignored():
    logits = torch.randn(2, 19, 3, 3, requires_grad=True)
    target = torch.randint(0, 19, (2, 3, 3))
    target[0, 0, 0] = 255
    expected = torch.nn.functional.cross_entropy(logits, target, ignore_index=255)
    assert semseg_loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    empty = semseg_loss(logits, torch.full_like(target, 255))
    assert empty.item() == 0.0
    empty.backward()  # still differentiable


def test_depth_loss_is_per_image_mse_over_valid_pixels_averaged_over_images():
    pred = torch.tensor([[[[1.0, 3.0]]], [[[0.0, 0.0]]], [[[5.0, 5.0]]]])
    target = torch.tensor([[[[0.0, 0.0]]], [[[2.0, NAN]]], [[[NAN, NAN]]]])
    # image 0: (1 + 9) / 2 = 5; image 1: 4 / 1 = 4; image 2 has no valid pixel and is skipped.
    assert depth_loss(pred, target).item() == pytest.approx(4.5)


def test_multitask_loss_weights_and_deep_supervision_mean():
    target_seg = torch.randint(0, 19, (1, 2, 2))
    target_depth = torch.zeros(1, 1, 2, 2)
    first, last = torch.randn(1, 19, 2, 2), torch.randn(1, 19, 2, 2)
    d1, d2 = torch.ones(1, 1, 2, 2), torch.full((1, 1, 2, 2), 3.0)
    out = multitask_loss({"semseg": [first, last], "depth": [d1, d2]}, target_seg, target_depth, 0.6, 0.4)
    seg = (semseg_loss(first, target_seg) + semseg_loss(last, target_seg)) / 2
    dep = (1.0 + 9.0) / 2
    assert out["loss_semseg"].item() == pytest.approx(seg.item(), rel=1e-6)
    assert out["loss_depth"].item() == pytest.approx(dep)
    assert out["loss"].item() == pytest.approx(0.6 * seg.item() + 0.4 * dep, rel=1e-6)
