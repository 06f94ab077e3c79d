"""Miniscapes on disk (SPEC §2): constants, the depth code, and a strict per-file reader.

The reader is deliberately strict: every problem (missing file, truncated file, wrong image mode,
unknown label, size mismatch) becomes a ``DataError`` naming the file and what was expected, so
that a bad data set fails while the packed cache is built -- before any training starts -- and
never as an obscure tensor-shape error hours into a run.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np

from runner.tasks.mtl.data.errors import DataError

# --- constants -----------------------------------------------------------------------------------

#: Class names in Cityscapes train-id order; the semseg PNG stores the index into this tuple.
CLASS_NAMES: Tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
NUM_CLASSES = len(CLASS_NAMES)  # 19
CLASS_ID: Dict[str, int] = {name: i for i, name in enumerate(CLASS_NAMES)}
IGNORE = 255

DEPTH_MIN = 4.0    # meters, v = 255
DEPTH_MAX = 300.0  # meters, v = 1 (v = 0 encodes invalid: sky / out of range)

#: ImageNet statistics, applied to RGB in 0..255 (so multiplied by 255).
RGB_MEAN = (0.485 * 255.0, 0.456 * 255.0, 0.406 * 255.0)
RGB_STD = (0.229 * 255.0, 0.224 * 255.0, 0.225 * 255.0)

DEPTH_MEAN_M = 27.0727
DEPTH_STD_M = 29.1264
DEPTH_LOG_MEAN = 2.8936   # ln(meters)
DEPTH_LOG_STD = 0.8661

MODALITIES = ("rgb", "semseg", "depth")
EXTENSIONS = {"rgb": ".jpg", "semseg": ".png", "depth": ".png"}

# --- depth code ----------------------------------------------------------------------------------

_DISP_SPAN = 1.0 / DEPTH_MIN - 1.0 / DEPTH_MAX


def _make_lut() -> np.ndarray:
    v = np.arange(256, dtype=np.float64)
    disparity = _DISP_SPAN * (v - 1.0) / 254.0 + 1.0 / DEPTH_MAX
    with np.errstate(divide="ignore"):
        lut = (1.0 / disparity).astype(np.float32)
    lut[0] = np.nan
    lut.setflags(write=False)
    return lut


#: ``DEPTH_LUT[v]`` = meters for the encoded value v (NaN for v = 0). 256 float32 entries.
DEPTH_LUT: np.ndarray = _make_lut()


def decode_depth(v: np.ndarray) -> np.ndarray:
    """Encoded uint8 depth -> float32 meters (NaN where v = 0), by table lookup."""
    v = np.asarray(v)
    if v.dtype != np.uint8:
        raise TypeError(f"decode_depth expects uint8, got {v.dtype}")
    return DEPTH_LUT[v]


def encode_depth(meters: np.ndarray) -> np.ndarray:
    """float meters -> uint8 code with the SPEC's truncating formula.

    Policy for values outside 4..300 m:
      * NaN, +-inf, <= 0 and anything farther than 300 m -> 0 (invalid), like sky in the real data;
      * 0 < d < 4 m (nearer than the sensor range) is clamped to 4 m (v = 255): a near surface is a
        real measurement that saturates, not a missing one.
    The truncation gets a 1e-4 nudge (far below one code step) so that
    ``encode_depth(decode_depth(v)) == v`` holds for every v despite float32 rounding of the
    table (without it 1 + 254 * x can land at k - 1e-6 and truncate to k - 1).
    """
    d = np.asarray(meters, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        valid = np.isfinite(d) & (d > 0) & (d <= DEPTH_MAX)
        dc = np.where(valid, np.maximum(d, DEPTH_MIN), DEPTH_MAX)
        v = 1.0 + 254.0 * (1.0 / dc - 1.0 / DEPTH_MAX) / _DISP_SPAN
    v = np.floor(v + 1e-4)
    v = np.clip(v, 1, 255)
    return np.where(valid, v, 0).astype(np.uint8)


# --- files ---------------------------------------------------------------------------------------

_VALID_LABEL = np.zeros(256, dtype=bool)
_VALID_LABEL[:NUM_CLASSES] = True
_VALID_LABEL[IGNORE] = True

_NAME = re.compile(r"^(\d+)(\.[A-Za-z]+)$")


def file_error(path: Path, exc: OSError, what: str = "a readable file") -> DataError:
    """The DataError for an OSError met reading ``path``: missing, a broken symbolic link, a
    symbolic link loop, unreadable, truncated (PIL raises OSError for a truncated image)."""
    if isinstance(exc, FileNotFoundError):
        if path.is_symlink():
            return DataError(f"{path}: broken symbolic link (to {os.readlink(path)}, which does "
                             f"not exist); expected {what}")
        return DataError(f"{path}: file missing; expected {what}")
    if exc.errno is None:  # PIL's own OSErrors: truncated, unidentified image
        return DataError(f"{path}: cannot decode ({exc}); expected {what}")
    return DataError(f"{path}: cannot read ({exc.strerror}); expected {what}")


def stat_file(path: Path) -> os.stat_result:
    """``os.stat(path)``; any OSError is a DataError naming the file (see :func:`file_error`)."""
    try:
        return path.stat()
    except OSError as exc:
        raise file_error(path, exc) from None


class MiniscapesFiles:
    """One split of a Miniscapes directory: ``<root>/<split>/{rgb,semseg,depth}/<i>.{jpg,png,png}``.

    The constructor only lists directories (cheap, no decoding) and checks that the three
    modalities hold exactly the indices 0..N-1; ``read(i)`` decodes and validates one sample.
    Every exception met while listing or reading is a ``DataError`` naming the file: a data set
    problem is bad input (exit 2, the trial handed back), never a failed trial.
    """

    def __init__(self, root: Union[str, os.PathLike], split: str):
        self.root = Path(root)
        self.split = split
        try:
            self._list()
        except OSError as exc:  # unreadable directory, symlink loop, ...
            raise DataError(f"{exc.filename or self.root}: cannot list ({exc.strerror or exc}); "
                            "expected a readable Miniscapes directory") from None

    def _list(self) -> None:
        split = self.split
        if not self.root.is_dir():
            raise DataError(f"{self.root}: data set root not found; expected a directory "
                            f"with <split>/rgb, <split>/semseg, <split>/depth")
        self.split_dir = self.root / split
        if not self.split_dir.is_dir():
            present = sorted(p.name for p in self.root.iterdir() if p.is_dir())
            raise DataError(f"{self.split_dir}: split '{split}' not found; expected a directory "
                            f"(present: {', '.join(present) or 'none'})")
        counts = {}
        for mod in MODALITIES:
            d = self.split_dir / mod
            if not d.is_dir():
                raise DataError(f"{d}: modality directory missing; expected {mod}/<i>"
                                f"{EXTENSIONS[mod]} files")
            idx = self._indices(d, EXTENSIONS[mod])
            n = len(idx)
            if n == 0:
                raise DataError(f"{d}: no samples; expected files 0{EXTENSIONS[mod]} .. "
                                f"N-1{EXTENSIONS[mod]}")
            if idx[-1] != n - 1:
                missing = next(i for i in range(n) if i != idx[i])
                raise DataError(f"{d / (str(missing) + EXTENSIONS[mod])}: missing; expected "
                                f"indices 0..N-1 without gaps ({n} files, highest index "
                                f"{idx[-1]})")
            counts[mod] = n
        if len(set(counts.values())) != 1:
            detail = ", ".join(f"{m}: {c}" for m, c in counts.items())
            raise DataError(f"{self.split_dir}: modalities disagree in sample count ({detail}); "
                            f"expected the same N in rgb, semseg and depth")
        self.n = counts["rgb"]

    @staticmethod
    def _indices(d: Path, ext: str) -> List[int]:
        out = []
        with os.scandir(d) as it:
            for e in it:
                m = _NAME.match(e.name)
                if m and m.group(2).lower() == ext:
                    if m.group(2) != ext:  # 3.JPG: found here, then missing as 3.jpg
                        raise DataError(f"{d / e.name}: extension '{m.group(2)}'; expected "
                                        f"'{ext}' (file names are case-sensitive: rename it to "
                                        f"{m.group(1)}{ext})")
                    out.append(int(m.group(1)))
        out.sort()
        if len(out) != len(set(out)):  # e.g. 1.png and 01.png
            raise DataError(f"{d}: duplicate sample indices (zero-padded names?); expected "
                            f"exactly one file <i>{ext} per index")
        return out

    def __len__(self) -> int:
        return self.n

    def path(self, modality: str, i: int) -> Path:
        return self.split_dir / modality / f"{i}{EXTENSIONS[modality]}"

    def read(self, i: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decode sample i -> (rgb HxWx3 uint8, semseg HxW uint8, depth HxW uint8 raw code)."""
        if not 0 <= i < self.n:
            raise IndexError(f"sample {i} out of range 0..{self.n - 1} in {self.split_dir}")
        rgb = self._load(self.path("rgb", i), ("RGB",), "an RGB JPEG")
        sem = self._load(self.path("semseg", i), ("L", "P"), "an 8-bit ('L' or 'P') PNG")
        dep = self._load(self.path("depth", i), ("L", "P"), "an 8-bit ('L' or 'P') PNG")
        h, w = rgb.shape[:2]
        for mod, arr in (("semseg", sem), ("depth", dep)):
            if arr.shape != (h, w):
                raise DataError(f"{self.path(mod, i)}: size {arr.shape[1]}x{arr.shape[0]} (WxH); "
                                f"expected {w}x{h} like {self.path('rgb', i).name}")
        bad = ~_VALID_LABEL[sem]
        if bad.any():
            values = np.unique(sem[bad])[:8].tolist()
            raise DataError(f"{self.path('semseg', i)}: label values {values} out of range; "
                            f"expected class ids 0..{NUM_CLASSES - 1} or {IGNORE} (ignore)")
        return rgb, sem, dep

    @staticmethod
    def _load(path: Path, modes: Tuple[str, ...], what: str) -> np.ndarray:
        from PIL import Image  # local: keeps `import runner.tasks.mtl.data` cheap

        try:
            with Image.open(path) as im:
                im.load()  # force a full decode: truncation shows up here, not at open()
                if im.mode not in modes:
                    raise DataError(f"{path}: image mode '{im.mode}'; expected {what}")
                # for 'P' the raw palette indices are the values (labels / depth codes)
                arr = np.asarray(im)
        except DataError:
            raise
        except OSError as e:
            raise file_error(path, e, what) from None
        except Exception as e:  # noqa: BLE001 - PIL: corrupt, unidentified, over its pixel limit
            raise DataError(f"{path}: cannot decode ({e}); expected {what}") from None
        if arr.dtype != np.uint8:
            raise DataError(f"{path}: pixel type {arr.dtype}; expected {what}")
        return arr
