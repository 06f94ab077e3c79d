"""Packed uint8 cache of one split: three memory-mapped ``.npy`` arrays plus ``meta.json``.

Why: decoding a JPEG and two PNGs per sample per step costs far more than the training step on
small crops. Packing once turns every sample into a slice of a memory map (the OS page cache does
the rest) and, because packing decodes every file through ``MiniscapesFiles.read``, any broken
file is reported before training starts.

Layout of a cache directory (``PackedSplit.open(dir)``)::

    rgb.npy     uint8 (N, H, W, 3)
    semseg.npy  uint8 (N, H, W)      class ids, 255 = ignore
    depth.npy   uint8 (N, H, W)      raw depth code (decode with miniscapes.DEPTH_LUT)
    meta.json   {"format", "source", "split", "n", "height", "width", "limit", "fingerprint"}

``ensure_packed(files, cache_dir)`` keeps one such directory per (source root, split, limit) under
``cache_dir``, named ``<split>-<hash of the source root>[-first<limit>]``. It is built in a
temporary sibling directory and renamed into place only once complete (meta.json written last),
so a crash or a data error never leaves a half cache that would later be used. A
``flock`` on ``<name>.lock`` keeps parallel workers from building the same cache twice.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np

from runner.tasks.mtl.data.errors import DataError
from runner.tasks.mtl.data.miniscapes import MiniscapesFiles, stat_file

FORMAT = "ablate-packed-v1"
_ARRAYS = ("rgb", "semseg", "depth")


class PackedSplit:
    """Memory-mapped uint8 arrays of one split (read-only). ``len()`` is the sample count."""

    def __init__(self, rgb: np.ndarray, semseg: np.ndarray, depth: np.ndarray,
                 meta: Optional[dict] = None, path: Optional[Path] = None):
        if rgb.ndim != 4 or rgb.shape[-1] != 3 or semseg.shape != rgb.shape[:3] \
                or depth.shape != rgb.shape[:3]:
            raise DataError(f"{path or '<arrays>'}: inconsistent packed shapes rgb {rgb.shape}, "
                            f"semseg {semseg.shape}, depth {depth.shape}; expected (N,H,W,3), "
                            f"(N,H,W), (N,H,W)")
        self.rgb, self.semseg, self.depth = rgb, semseg, depth
        self.meta = dict(meta or {})
        self.path = path

    @classmethod
    def from_arrays(cls, rgb, semseg, depth) -> "PackedSplit":
        """In-memory split (tests, tiny experiments): same interface, no files."""
        return cls(np.ascontiguousarray(rgb, np.uint8), np.ascontiguousarray(semseg, np.uint8),
                   np.ascontiguousarray(depth, np.uint8), {"source": None})

    @classmethod
    def open(cls, directory: Union[str, os.PathLike]) -> "PackedSplit":
        d = Path(directory)
        meta_path = d / "meta.json"
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise DataError(f"{meta_path}: missing; expected a complete packed cache "
                            f"(built by ensure_packed)") from None
        except (OSError, ValueError) as e:
            raise DataError(f"{meta_path}: unreadable ({e}); expected JSON metadata") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else meta
            raise DataError(f"{meta_path}: format {found!r}; expected {FORMAT!r}")
        if not all(isinstance(meta.get(k), int) for k in ("n", "height", "width")):
            raise DataError(f"{meta_path}: no integer n, height and width; expected the metadata "
                            "ensure_packed writes")
        arrays = {}
        for name in _ARRAYS:
            p = d / f"{name}.npy"
            try:
                arrays[name] = np.load(p, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise DataError(f"{p}: cannot open ({e}); expected a uint8 .npy array") from None
            if arrays[name].dtype != np.uint8 or arrays[name].shape[:3] != \
                    (meta["n"], meta["height"], meta["width"]):
                raise DataError(f"{p}: {arrays[name].dtype} {arrays[name].shape}; expected uint8 "
                                f"({meta['n']}, {meta['height']}, {meta['width']}, ...)")
        return cls(arrays["rgb"], arrays["semseg"], arrays["depth"], meta, d)

    def __len__(self) -> int:
        return self.rgb.shape[0]

    @property
    def height(self) -> int:
        return self.rgb.shape[1]

    @property
    def width(self) -> int:
        return self.rgb.shape[2]

    def __repr__(self) -> str:
        return f"PackedSplit(n={len(self)}, size={self.height}x{self.width}, path={self.path})"


def fingerprint(files: MiniscapesFiles, limit: Optional[int] = None) -> str:
    """Hash of (count, name, size, mtime_ns) of the source files: any replaced, touched or
    added/removed file changes it, without reading file contents."""
    n = len(files) if limit is None else min(limit, len(files))
    h = hashlib.sha256(f"{n}\n".encode())
    for i in range(n):
        for mod in _ARRAYS:
            p = files.path(mod, i)
            st = stat_file(p)
            h.update(f"{mod}/{p.name} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_name(files: MiniscapesFiles, limit: Optional[int] = None) -> str:
    root = hashlib.sha1(str(files.root.resolve()).encode()).hexdigest()[:10]
    return f"{files.split}-{root}" + (f"-first{limit}" if limit is not None else "")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: no cross-process lock
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _try_open(final: Path, fp: str) -> Optional[PackedSplit]:
    if not (final / "meta.json").is_file():
        return None
    try:
        split = PackedSplit.open(final)
    except DataError:
        return None
    return split if split.meta.get("fingerprint") == fp else None


def ensure_packed(files: MiniscapesFiles, cache_dir: Union[str, os.PathLike],
                  limit: Optional[int] = None, workers: Optional[int] = None) -> PackedSplit:
    """Return the packed cache of ``files`` (first ``limit`` samples), building it if missing or
    stale (fingerprint differs). Decoding errors and size mismatches raise ``DataError``."""
    if limit is not None and limit < 1:
        raise DataError(f"{files.split_dir}: limit {limit}; expected a positive sample count")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    name = cache_name(files, limit)
    final = cache_dir / name
    fp = fingerprint(files, limit)
    hit = _try_open(final, fp)
    if hit is not None:
        return hit
    with _locked(cache_dir / f"{name}.lock"):
        hit = _try_open(final, fp)  # someone else may have built it while we waited
        if hit is not None:
            return hit
        for stale in cache_dir.glob(f".{name}.tmp-*"):  # leftovers of crashed builds
            shutil.rmtree(stale, ignore_errors=True)
        tmp = cache_dir / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            _build(files, tmp, fp, limit, workers)
            if final.exists():  # stale cache: move aside, then swap in the new one
                trash = cache_dir / f".{name}.old-{uuid.uuid4().hex[:8]}"
                final.rename(trash)
                shutil.rmtree(trash, ignore_errors=True)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return PackedSplit.open(final)


def _build(files: MiniscapesFiles, out: Path, fp: str, limit: Optional[int],
           workers: Optional[int]) -> None:
    n = len(files) if limit is None else min(limit, len(files))
    rgb0, _, _ = files.read(0)
    h, w = rgb0.shape[:2]
    mm = {
        "rgb": np.lib.format.open_memmap(out / "rgb.npy", "w+", np.uint8, (n, h, w, 3)),
        "semseg": np.lib.format.open_memmap(out / "semseg.npy", "w+", np.uint8, (n, h, w)),
        "depth": np.lib.format.open_memmap(out / "depth.npy", "w+", np.uint8, (n, h, w)),
    }
    workers = workers or min(8, os.cpu_count() or 1)
    # PIL releases the GIL while decoding, so threads overlap decoding; map keeps index order,
    # so the first mismatching file (in index order) is the one reported.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, n, 256):  # chunks bound the decoded samples held in memory
            idx = range(start, min(start + 256, n))
            for i, sample in zip(idx, pool.map(files.read, idx)):
                rgb = sample[0]
                if rgb.shape[:2] != (h, w):
                    raise DataError(f"{files.path('rgb', i)}: size {rgb.shape[1]}x"
                                    f"{rgb.shape[0]} (WxH); expected {w}x{h} like "
                                    f"{files.path('rgb', 0).name} -- all images of a split "
                                    f"must share one size")
                for name, arr in zip(_ARRAYS, sample):
                    mm[name][i] = arr
    for arr in mm.values():
        arr.flush()
    del mm
    meta = {"format": FORMAT, "source": str(files.root.resolve()), "split": files.split,
            "n": n, "height": h, "width": w, "limit": limit, "fingerprint": fp}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))  # written last: marks complete
