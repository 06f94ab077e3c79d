import numpy as np
import pytest
import torch

from runner.tasks.mtl.data.batches import (Batch, denormalise_depth, normalise_depth, num_train_steps,
                                 train_batches, val_batches)
from runner.tasks.mtl.data.errors import DataError
from runner.tasks.mtl.data.miniscapes import DEPTH_LUT, RGB_MEAN, RGB_STD
from runner.tasks.mtl.data.packed import PackedSplit


@pytest.fixture(scope="module")
def split():
    rng = np.random.default_rng(0)
    n, h, w = 10, 72, 100
    rgb = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    sem = rng.integers(0, 19, (n, h, w), dtype=np.uint8)
    sem[:, :5] = 255
    dep = rng.integers(0, 256, (n, h, w), dtype=np.uint8)
    dep[:, 0] = 0
    return PackedSplit.from_arrays(rgb, sem, dep)


def _kw(**over):
    kw = dict(batch_size=3, crop_size=(32, 48), seed=7, epoch=0, device="cpu",
              depth_unit="meters")
    kw.update(over)
    return kw


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for t, u in zip(x, y):
            assert torch.equal(torch.nan_to_num(t, 1e9), torch.nan_to_num(u, 1e9))


def test_shapes_and_values(split):
    batches = list(train_batches(split, **_kw()))
    assert len(batches) == num_train_steps(split, 3) == 3  # drop_last: 10 // 3
    b = batches[0]
    assert isinstance(b, Batch)
    assert b.image.shape == (3, 3, 32, 48) and b.image.dtype == torch.float32
    assert b.semseg.shape == (3, 32, 48) and b.semseg.dtype == torch.int64
    assert b.depth.shape == b.depth_meters.shape == (3, 1, 32, 48)
    # raw values: reconstruct from the normalised tensors and find the crop in the source
    raw = (b.image * torch.tensor(RGB_STD).view(1, 3, 1, 1)
           + torch.tensor(RGB_MEAN).view(1, 3, 1, 1)).round().to(torch.uint8)
    order = np.random.default_rng([7, 0]).permutation(10)
    i = order[0]
    img = torch.from_numpy(np.asarray(split.rgb[i])).permute(2, 0, 1)
    found = [(y, x) for y in range(72 - 31) for x in range(100 - 47)
             if torch.equal(img[:, y:y + 32, x:x + 48], raw[0])]
    assert len(found) == 1
    y, x = found[0]
    assert torch.equal(b.semseg[0], torch.from_numpy(split.semseg[i, y:y + 32, x:x + 48]).long())
    m = torch.from_numpy(DEPTH_LUT[split.depth[i, y:y + 32, x:x + 48]])
    assert torch.equal(torch.isnan(b.depth_meters[0, 0]), torch.isnan(m))
    assert torch.allclose(torch.nan_to_num(b.depth_meters[0, 0]), torch.nan_to_num(m))
    assert torch.allclose(torch.nan_to_num(b.depth), torch.nan_to_num((b.depth_meters - 27.0727)
                                                                      / 29.1264))
    assert torch.isnan(b.depth[0]).sum() == (split.depth[i, y:y + 32, x:x + 48] == 0).sum()


def test_determinism_epochs_and_resume(split):
    kw = _kw(flip=True, scale=(0.8, 1.5))
    a = list(train_batches(split, **kw))
    _same(a, list(train_batches(split, **kw)))
    c = list(train_batches(split, **_kw(flip=True, scale=(0.8, 1.5), epoch=1)))
    assert not torch.equal(a[0].image, c[0].image)
    _same(a[2:], list(train_batches(split, **kw, start_step=2)))
    _same(a[1:2], list(train_batches(split, **kw, start_step=1, max_steps=2)))
    assert num_train_steps(split, 3, max_steps=2) == 2


def test_flip_and_scale_keep_labels_valid(split):
    for b in train_batches(split, **_kw(flip=True, scale=(0.5, 2.0))):
        assert b.image.shape == (3, 3, 32, 48)
        vals = set(torch.unique(b.semseg).tolist())
        assert vals <= set(range(19)) | {255}
        finite = b.depth_meters[torch.isfinite(b.depth_meters)]
        assert set(np.round(finite.numpy(), 3).tolist()) <= set(np.round(DEPTH_LUT[1:], 3))


def test_crop_too_large_and_small_split(split):
    with pytest.raises(DataError, match="crop"):
        next(train_batches(split, **_kw(crop_size=(80, 48))))
    with pytest.raises(DataError, match="batch_size"):
        num_train_steps(split, 11)


def test_val_batches(split):
    bs = list(val_batches(split, batch_size=4, device="cpu", depth_unit="log"))
    assert [b.image.shape[0] for b in bs] == [4, 4, 2]
    assert bs[0].image.shape[2:] == (64, 96) and bs[0].semseg.shape == (4, 64, 96)
    assert torch.equal(bs[2].semseg[1], torch.from_numpy(split.semseg[9, :64, :96]).long())


def test_channels_last_batches_have_the_same_values_in_nhwc_memory(split):
    kw = _kw(flip=True, scale=(0.5, 2.0), depth_unit="log")
    plain = list(train_batches(split, **kw))
    nhwc = list(train_batches(split, **kw, channels_last=True))
    assert all(b.image.is_contiguous() for b in plain)
    assert all(b.image.is_contiguous(memory_format=torch.channels_last) for b in nhwc)
    _same(plain, nhwc)
    val_plain = list(val_batches(split, batch_size=4, device="cpu", depth_unit="log"))
    val_nhwc = list(val_batches(split, batch_size=4, device="cpu", depth_unit="log", channels_last=True))
    assert all(b.image.is_contiguous(memory_format=torch.channels_last) for b in val_nhwc)
    _same(val_plain, val_nhwc)


def test_log_unit_round_trip():
    m = torch.tensor([4.0, 10.0, 27.0, 300.0, float("nan")])
    for unit in ("meters", "log"):
        n = normalise_depth(m, unit)
        assert torch.isnan(n[-1])
        assert torch.allclose(denormalise_depth(n, unit)[:-1], m[:-1], rtol=1e-5)
    assert normalise_depth(torch.tensor([np.exp(2.8936)]), "log").abs().item() < 1e-5
    with pytest.raises(ValueError):
        normalise_depth(m, "feet")
