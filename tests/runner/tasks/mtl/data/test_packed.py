import os

import numpy as np
import pytest
from PIL import Image

import runner.tasks.mtl.data.packed as packed
from runner.tasks.mtl.data.errors import DataError
from runner.tasks.mtl.data.miniscapes import MiniscapesFiles
from runner.tasks.mtl.data.packed import PackedSplit, ensure_packed


def test_equals_files_and_reused(synth_root, tmp_path, monkeypatch):
    files = MiniscapesFiles(synth_root, "train")
    ps = ensure_packed(files, tmp_path / "cache")
    assert len(ps) == 24 and (ps.height, ps.width) == (64, 128)
    for i in range(len(files)):
        rgb, sem, dep = files.read(i)
        assert (ps.rgb[i] == rgb).all() and (ps.semseg[i] == sem).all()
        assert (ps.depth[i] == dep).all()
    assert ps.meta["split"] == "train" and ps.meta["n"] == 24
    assert isinstance(ps.rgb, np.memmap)
    reopened = PackedSplit.open(ps.path)
    assert (reopened.depth[:] == ps.depth[:]).all()

    def boom(*a, **k):
        raise AssertionError("rebuilt")
    monkeypatch.setattr(packed, "_build", boom)
    again = ensure_packed(MiniscapesFiles(synth_root, "train"), tmp_path / "cache")
    assert again.path == ps.path


def test_limit(synth_root, tmp_path):
    ps = ensure_packed(MiniscapesFiles(synth_root, "val"), tmp_path, limit=4)
    assert len(ps) == 4


def test_rebuilt_when_file_changes(root_copy, tmp_path):
    files = MiniscapesFiles(root_copy, "val")
    ps = ensure_packed(files, tmp_path / "c")
    p = root_copy / "val/semseg/1.png"
    Image.fromarray(np.full((64, 128), 13, np.uint8), "L").save(p)
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    ps2 = ensure_packed(MiniscapesFiles(root_copy, "val"), tmp_path / "c")
    assert (ps2.semseg[1] == 13).all() and ps2.meta["fingerprint"] != ps.meta["fingerprint"]


def test_interrupted_build_not_used(root_copy, tmp_path, monkeypatch):
    files = MiniscapesFiles(root_copy, "val")
    calls = {"n": 0}
    real_read = files.read

    def flaky(i):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # a crash mid-build
        return real_read(i)
    monkeypatch.setattr(files, "read", flaky)
    with pytest.raises(KeyboardInterrupt):
        ensure_packed(files, tmp_path / "c", workers=1)
    leftovers = list((tmp_path / "c").iterdir())
    assert all(p.suffix == ".lock" for p in leftovers), leftovers
    monkeypatch.setattr(files, "read", real_read)
    ps = ensure_packed(files, tmp_path / "c")
    assert (ps.rgb[5] == real_read(5)[0]).all()


def test_stale_tmp_dir_is_ignored_and_cleaned(synth_root, tmp_path):
    files = MiniscapesFiles(synth_root, "val")
    name = packed.cache_name(files)
    half = tmp_path / f".{name}.tmp-999-deadbeef"
    half.mkdir(parents=True)
    (half / "rgb.npy").write_bytes(b"garbage")
    ps = ensure_packed(files, tmp_path)
    assert not half.exists() and len(ps) == 6


def test_bad_file_surfaces_at_build(root_copy, tmp_path):
    p = root_copy / "train/semseg/7.png"
    a = np.zeros((64, 128), np.uint8)
    a[0, 0] = 77
    Image.fromarray(a, "L").save(p)
    with pytest.raises(DataError, match="7.png"):
        ensure_packed(MiniscapesFiles(root_copy, "train"), tmp_path / "c")
    assert [x.name for x in (tmp_path / "c").iterdir() if not x.name.endswith(".lock")] == []


def test_split_size_mismatch(root_copy, tmp_path):
    for mod, mode, shape in (("rgb", "RGB", (32, 64, 3)), ("semseg", "L", (32, 64)),
                             ("depth", "L", (32, 64))):
        ext = ".jpg" if mod == "rgb" else ".png"
        Image.fromarray(np.zeros(shape, np.uint8), mode).save(root_copy / f"val/{mod}/3{ext}")
    with pytest.raises(DataError, match=r"val/rgb/3\.jpg.*128x64"):
        ensure_packed(MiniscapesFiles(root_copy, "val"), tmp_path)


def test_open_incomplete(tmp_path):
    with pytest.raises(DataError, match="meta.json"):
        PackedSplit.open(tmp_path)


@pytest.mark.parametrize("meta", ['[1, 2]', '{"format": "ablate-packed-v1", "n": 2}'])
def test_open_meta_of_another_shape(tmp_path, meta):
    """meta.json that is JSON but not packed metadata: a DataError naming it, not a KeyError."""
    (tmp_path / "meta.json").write_text(meta)
    with pytest.raises(DataError, match="meta.json"):
        PackedSplit.open(tmp_path)
