"""Benchmark: per-sample cost of decoding files vs. slicing the packed uint8 memmap.

    python bench/data_cache.py [--n 200] [--size 360x720] [--crop 256] [--batch 8]

Writes a synthetic Miniscapes set into a temp dir, packs it, then measures side by side
(a) MiniscapesFiles.read(i) + a random crop and (b) a random crop of the packed memmap (copied),
and prints both and their ratio; then a batch-level figure (train_batches on CPU, images/s).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runner.tasks.mtl.data.batches import train_batches  # noqa: E402
from runner.tasks.mtl.data.miniscapes import MiniscapesFiles  # noqa: E402
from runner.tasks.mtl.data.packed import ensure_packed  # noqa: E402
from runner.tasks.mtl.data.synth import write_synthetic_dataset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="synthetic samples written and packed")
    ap.add_argument("--size", default="360x720", help="image HxW of the synthetic set")
    ap.add_argument("--crop", type=int, default=256, help="square crop side (at most the image's)")
    ap.add_argument("--batch", type=int, default=8, help="batch size of the train_batches figure")
    args = ap.parse_args()
    h, w = (int(x) for x in args.size.lower().split("x"))
    c = min(args.crop, h, w)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        write_synthetic_dataset(Path(tmp) / "ds", args.n, 0, size=(h, w), seed=0)
        print(f"synthetic set: {args.n} x {h}x{w} written in {time.perf_counter() - t:.2f} s")
        files = MiniscapesFiles(Path(tmp) / "ds", "train")
        t = time.perf_counter()
        split = ensure_packed(files, Path(tmp) / "cache")
        print(f"packed cache built in {time.perf_counter() - t:.2f} s")
        t = time.perf_counter()
        ensure_packed(files, Path(tmp) / "cache")
        print(f"packed cache reused (fingerprint check) in {time.perf_counter() - t:.3f} s")

        rng = np.random.default_rng(0)
        idx = rng.permutation(args.n)
        offs = [(int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))) for _ in idx]

        t = time.perf_counter()
        for i, (y, x) in zip(idx, offs):
            rgb, sem, dep = files.read(int(i))
            crops = (rgb[y:y + c, x:x + c].copy(), sem[y:y + c, x:x + c].copy(),
                     dep[y:y + c, x:x + c].copy())
        files_s = (time.perf_counter() - t) / args.n

        t = time.perf_counter()
        reps = 5
        for _ in range(reps):
            for i, (y, x) in zip(idx, offs):
                crops = (np.array(split.rgb[i, y:y + c, x:x + c]),
                         np.array(split.semseg[i, y:y + c, x:x + c]),
                         np.array(split.depth[i, y:y + c, x:x + c]))
        packed_s = (time.perf_counter() - t) / (args.n * reps)
        del crops

        print(f"\nper sample, {c}x{c} crop of {h}x{w} (rgb + semseg + depth):")
        print(f"  (a) files: MiniscapesFiles.read + crop  {files_s * 1e3:8.3f} ms")
        print(f"  (b) packed memmap random crop         {packed_s * 1e3:8.3f} ms")
        print(f"  ratio (a)/(b)                          {files_s / packed_s:8.1f} x  "
              f"(target >= 10x)")

        for label, kw in (("crop only", {}), ("crop+flip+scale(0.5,2)",
                                              {"flip": True, "scale": (0.5, 2.0)})):
            t = time.perf_counter()
            n_img = 0
            for epoch in range(2):
                for b in train_batches(split, batch_size=args.batch, crop_size=c, seed=0,
                                       epoch=epoch, device="cpu", depth_unit="meters", **kw):
                    n_img += b.image.shape[0]
            dt = time.perf_counter() - t
            print(f"train_batches on CPU ({label}, batch {args.batch}): "
                  f"{n_img / dt:8.1f} images/s")


if __name__ == "__main__":
    main()
