"""Batches from a ``PackedSplit``: uint8 crops on the host, everything else on the device.

Why this shape:
  * Crops are sliced from the uint8 memory map with numpy, so only the crop is ever copied (a
    256x256 crop of a 360x720 image touches ~1/4 of it), and the host->device transfer moves
    uint8 (4x less than float32).
  * float conversion, ImageNet normalisation and depth decoding (a 256-entry lookup table living
    on the device) run on the device, where they are nearly free.
  * The host arrays are NHWC, so the normalised image comes out channels_last-strided for free;
    ``channels_last=True`` keeps it that way (what a channels_last model wants), otherwise it is
    copied to plain NCHW. The values are the same either way.
  * The batches of an epoch are a pure function of (seed, epoch): the sample order comes from a
    generator seeded by (seed, epoch) and each sample's augmentation from one seeded by
    (seed, epoch, sample index). ``start_step=k`` therefore yields exactly batches k.. of the
    uninterrupted sequence, which is what exact resume from a checkpoint needs.

Augmentation semantics (train):
  * crop: a (h, w) window at a uniformly random offset. A crop larger than the image raises
    ``DataError`` (no padding: padding would silently feed the model fake borders).
  * scale (lo, hi): a factor s ~ U(lo, hi) means "resize the image by s, then crop (h, w)". It is
    computed without resizing the whole image: the source window of size (h/s, w/s) is picked at
    a random offset and resampled to (h, w) -- bilinear for rgb, nearest for semseg and depth
    (labels and depth codes must not be blended). If s is so small that the window would exceed
    the image, the window is clamped to the image (the effective scale is then the smallest that
    still fills the crop).
  * flip: horizontal flip with probability 0.5.
"""
from __future__ import annotations

from typing import Dict, Iterator, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from runner.tasks.mtl.data.errors import DataError
from runner.tasks.mtl.data.miniscapes import (DEPTH_LOG_MEAN, DEPTH_LOG_STD, DEPTH_LUT, DEPTH_MEAN_M,
                                    DEPTH_STD_M, RGB_MEAN, RGB_STD)
from runner.tasks.mtl.data.packed import PackedSplit

DEPTH_UNITS = ("meters", "log")
Device = Union[str, torch.device]


class Batch(NamedTuple):
    image: torch.Tensor         # B x 3 x h x w float32, (x - mean*255) / (std*255); NCHW, or
                                # channels_last memory format when the batches were asked for it
    semseg: torch.Tensor        # B x h x w int64, 255 = ignore
    depth: torch.Tensor         # B x 1 x h x w float32 normalised target in depth_unit, NaN invalid
    depth_meters: torch.Tensor  # B x 1 x h x w float32 meters, NaN where invalid (for metrics)


def _check_unit(unit: str) -> None:
    if unit not in DEPTH_UNITS:
        raise ValueError(f"depth unit {unit!r}; expected one of {', '.join(DEPTH_UNITS)}")


def normalise_depth(meters: torch.Tensor, unit: str) -> torch.Tensor:
    """Meters -> z-scored target: ``meters`` uses the meter stats, ``log`` z-scores ln(meters).
    NaN (invalid) stays NaN."""
    _check_unit(unit)
    if unit == "meters":
        return (meters - DEPTH_MEAN_M) / DEPTH_STD_M
    return (torch.log(meters) - DEPTH_LOG_MEAN) / DEPTH_LOG_STD


def denormalise_depth(pred: torch.Tensor, unit: str) -> torch.Tensor:
    """Inverse of ``normalise_depth``: a prediction in ``unit`` back to meters."""
    _check_unit(unit)
    if unit == "meters":
        return pred * DEPTH_STD_M + DEPTH_MEAN_M
    return torch.exp(pred * DEPTH_LOG_STD + DEPTH_LOG_MEAN)


_DEVICE_CONSTS: Dict[str, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _consts(device: torch.device):
    key = str(device)
    if key not in _DEVICE_CONSTS:
        mean = torch.tensor(RGB_MEAN, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        std = torch.tensor(RGB_STD, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        lut = torch.from_numpy(DEPTH_LUT.copy()).to(device)
        _DEVICE_CONSTS[key] = (mean, std, lut)
    return _DEVICE_CONSTS[key]


def _to_device(rgb: np.ndarray, sem: np.ndarray, dep: np.ndarray, device: Device,
               depth_unit: str, pin_memory: bool, channels_last: bool = False) -> Batch:
    """uint8 host arrays (B,h,w,3), (B,h,w), (B,h,w) -> Batch on ``device``; the image in
    channels_last memory format if asked (no copy: the permuted NHWC data already is), else NCHW."""
    device = torch.device(device)
    pin = pin_memory and device.type == "cuda"
    moved = []
    for a in (rgb, sem, dep):
        t = torch.from_numpy(a)
        if pin:
            t = t.pin_memory()
        moved.append(t.to(device, non_blocking=True))
    rgb_t, sem_t, dep_t = moved
    mean, std, lut = _consts(device)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    image = ((rgb_t.permute(0, 3, 1, 2).float() - mean) / std).contiguous(memory_format=layout)
    meters = lut[dep_t.long()].unsqueeze(1)
    return Batch(image, sem_t.long(), normalise_depth(meters, depth_unit), meters)


def _seed(x: int) -> int:
    return int(x) % (2 ** 64)  # SeedSequence wants non-negative entropy


def num_train_steps(split: PackedSplit, batch_size: int, max_steps: Optional[int] = None) -> int:
    """Steps per epoch with drop_last, capped by ``max_steps``."""
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size}; expected >= 1")
    steps = len(split) // batch_size
    if steps == 0:
        raise DataError(f"{split.path or 'packed split'}: {len(split)} samples, fewer than "
                        f"batch_size {batch_size}; expected at least one full batch")
    return steps if max_steps is None else max(0, min(steps, int(max_steps)))


def _pair(x: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(x, (int, np.integer)):
        return int(x), int(x)
    h, w = x
    return int(h), int(w)


def _resample_rgb(region: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(region)).permute(2, 0, 1)[None].float()
    t = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)
    return t[0].permute(1, 2, 0).round_().clamp_(0, 255).to(torch.uint8).numpy()


def train_batches(split: PackedSplit, *, batch_size: int, crop_size, seed: int, epoch: int,
                  device: Device, depth_unit: str, flip: bool = False,
                  scale: Optional[Tuple[float, float]] = None, start_step: int = 0,
                  max_steps: Optional[int] = None, pin_memory: bool = False,
                  channels_last: bool = False) -> Iterator[Batch]:
    """Batches ``start_step .. num_train_steps(split, batch_size, max_steps) - 1`` of one epoch.

    Order: permutation from ``default_rng((seed, epoch))``; drop_last. Per-sample augmentation
    from ``default_rng((seed, epoch, sample_index))`` (see the module docstring).
    ``channels_last``: images in channels_last memory format (same values)."""
    _check_unit(depth_unit)
    ch, cw = _pair(crop_size)
    H, W = split.height, split.width
    if scale is None and (ch > H or cw > W):
        raise DataError(f"{split.path or 'packed split'}: crop {ch}x{cw} (HxW) larger than the "
                        f"images {H}x{W}; expected a crop that fits (or use scale)")
    if scale is not None:
        lo, hi = float(scale[0]), float(scale[1])
        if not 0 < lo <= hi:
            raise ValueError(f"scale {scale}; expected 0 < lo <= hi")
    steps = num_train_steps(split, batch_size, max_steps)
    order = np.random.default_rng([_seed(seed), _seed(epoch)]).permutation(len(split))
    for step in range(max(0, int(start_step)), steps):
        idx = order[step * batch_size:(step + 1) * batch_size]
        rgb = np.empty((batch_size, ch, cw, 3), np.uint8)
        sem = np.empty((batch_size, ch, cw), np.uint8)
        dep = np.empty((batch_size, ch, cw), np.uint8)
        for k, i in enumerate(idx):
            rng = np.random.default_rng([_seed(seed), _seed(epoch), int(i)])
            if scale is None:
                rh, rw = ch, cw
            else:
                s = rng.uniform(lo, hi)
                rh = min(H, max(1, int(round(ch / s))))
                rw = min(W, max(1, int(round(cw / s))))
            y0 = int(rng.integers(0, H - rh + 1))
            x0 = int(rng.integers(0, W - rw + 1))
            flipped = bool(flip) and rng.random() < 0.5
            if (rh, rw) == (ch, cw):
                r = split.rgb[i, y0:y0 + ch, x0:x0 + cw]
                s_ = split.semseg[i, y0:y0 + ch, x0:x0 + cw]
                d = split.depth[i, y0:y0 + ch, x0:x0 + cw]
            else:
                r = _resample_rgb(split.rgb[i, y0:y0 + rh, x0:x0 + rw], (ch, cw))
                # nearest: source row/col (within the window) of each output pixel's centre
                rows = ((np.arange(ch) + 0.5) * rh / ch).astype(np.intp)
                cols = ((np.arange(cw) + 0.5) * rw / cw).astype(np.intp)
                s_ = split.semseg[i, y0:y0 + rh, x0:x0 + rw][np.ix_(rows, cols)]
                d = split.depth[i, y0:y0 + rh, x0:x0 + rw][np.ix_(rows, cols)]
            if flipped:
                r, s_, d = r[:, ::-1], s_[:, ::-1], d[:, ::-1]
            rgb[k], sem[k], dep[k] = r, s_, d
        yield _to_device(rgb, sem, dep, device, depth_unit, pin_memory, channels_last)


def val_batches(split: PackedSplit, *, batch_size: int, device: Device, depth_unit: str,
                pin_memory: bool = False, channels_last: bool = False) -> Iterator[Batch]:
    """Whole images in order, cropped top-left to multiples of 32 in both dimensions (the
    encoder's output stride), no resize; the last batch may be smaller. ``pin_memory`` and
    ``channels_last`` as in :func:`train_batches`."""
    _check_unit(depth_unit)
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size}; expected >= 1")
    h, w = split.height // 32 * 32, split.width // 32 * 32
    if h == 0 or w == 0:
        raise DataError(f"{split.path or 'packed split'}: images {split.height}x{split.width} "
                        f"smaller than 32 in a dimension; expected at least 32x32")
    for s in range(0, len(split), batch_size):
        e = min(s + batch_size, len(split))
        # np.array copies: the memmap is read-only and torch wants writable memory
        yield _to_device(np.array(split.rgb[s:e, :h, :w]), np.array(split.semseg[s:e, :h, :w]),
                         np.array(split.depth[s:e, :h, :w]),
                         device, depth_unit, pin_memory, channels_last)
