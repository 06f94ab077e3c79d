import numpy as np
import pytest
from PIL import Image

from runner.tasks.mtl.data.errors import DataError
from runner.tasks.mtl.data.miniscapes import (CLASS_NAMES, DEPTH_LUT, IGNORE, MiniscapesFiles, decode_depth,
                                    encode_depth)
from ablations.errors import InputError


def test_constants():
    assert len(CLASS_NAMES) == 19 and CLASS_NAMES[0] == "road" and CLASS_NAMES[10] == "sky"
    assert CLASS_NAMES[13] == "car" and CLASS_NAMES[18] == "bicycle" and IGNORE == 255
    assert issubclass(DataError, InputError) and DataError.exit_code == 2
    assert DEPTH_LUT.shape == (256,) and DEPTH_LUT.dtype == np.float32


def test_depth_exact_points():
    d = decode_depth(np.array([0, 1, 255], np.uint8))
    assert np.isnan(d[0])
    assert d[1] == pytest.approx(300.0, rel=1e-6) and d[2] == pytest.approx(4.0, rel=1e-6)
    assert encode_depth(np.array([300.0, 4.0, np.nan])).tolist() == [1, 255, 0]


def test_depth_round_trip():
    v = np.arange(256, dtype=np.uint8)
    assert (encode_depth(decode_depth(v)) == v).all()
    m = np.geomspace(4, 300, 1000)
    back = decode_depth(encode_depth(m))
    assert (back >= m * (1 - 1e-6)).all()  # truncation: decoded depth is never nearer
    assert np.nanmax(np.abs(1 / back - 1 / m)) <= (1 / 4 - 1 / 300) / 254 + 1e-7


def test_encode_out_of_range_policy():
    v = encode_depth(np.array([-1.0, 0.0, 2.0, 301.0, np.inf]))
    assert v.tolist() == [0, 0, 255, 0, 0]


def test_read_ok(synth_root):
    f = MiniscapesFiles(synth_root, "train")
    assert len(f) == 24
    rgb, sem, dep = f.read(0)
    assert rgb.shape == (64, 128, 3) and sem.shape == dep.shape == (64, 128)
    assert rgb.dtype == sem.dtype == dep.dtype == np.uint8


def _err(fn, *names):
    with pytest.raises(DataError) as e:
        fn()
    for n in names:
        assert n in str(e.value), str(e.value)
    return str(e.value)


def test_missing_root_and_split(tmp_path, synth_root):
    _err(lambda: MiniscapesFiles(tmp_path / "nope", "train"), str(tmp_path / "nope"))
    _err(lambda: MiniscapesFiles(synth_root, "test"), str(synth_root / "test"))


def test_missing_file(root_copy):
    (root_copy / "train/depth/5.png").unlink()
    _err(lambda: MiniscapesFiles(root_copy, "train"), "5.png")
    f = MiniscapesFiles(root_copy, "val")
    (root_copy / "val/semseg/2.png").unlink()  # removed after listing
    _err(lambda: f.read(2), str(root_copy / "val/semseg/2.png"), "missing")


def test_count_mismatch(root_copy):
    (root_copy / "train/rgb/23.jpg").unlink()
    _err(lambda: MiniscapesFiles(root_copy, "train"), str(root_copy / "train"), "count")


def test_truncated_png(root_copy):
    p = root_copy / "train/semseg/3.png"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    _err(lambda: MiniscapesFiles(root_copy, "train").read(3), str(p))


def test_truncated_jpeg(root_copy):
    p = root_copy / "train/rgb/4.jpg"
    p.write_bytes(p.read_bytes()[:100])
    _err(lambda: MiniscapesFiles(root_copy, "train").read(4), str(p))


def test_wrong_mode(root_copy):
    p = root_copy / "train/semseg/1.png"
    Image.new("RGB", (128, 64)).save(p)
    msg = _err(lambda: MiniscapesFiles(root_copy, "train").read(1), str(p), "RGB")
    assert "expected" in msg


def test_bad_label(root_copy):
    p = root_copy / "train/semseg/2.png"
    a = np.zeros((64, 128), np.uint8)
    a[5, 5] = 77
    Image.fromarray(a, "L").save(p)
    _err(lambda: MiniscapesFiles(root_copy, "train").read(2), str(p), "77")


def test_size_mismatch(root_copy):
    p = root_copy / "train/depth/6.png"
    Image.fromarray(np.ones((32, 128), np.uint8), "L").save(p)
    _err(lambda: MiniscapesFiles(root_copy, "train").read(6), str(p), "128x64")


def test_palette_png_accepted(root_copy):
    p = root_copy / "train/semseg/0.png"
    sem = np.asarray(Image.open(p))
    im = Image.fromarray(sem, "P")
    im.putpalette([c for v in range(256) for c in (v, v, v)])
    im.save(p)
    assert Image.open(p).mode == "P"
    assert (MiniscapesFiles(root_copy, "train").read(0)[1] == sem).all()
