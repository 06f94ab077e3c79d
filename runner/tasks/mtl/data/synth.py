"""Synthetic driving scenes written in exactly the Miniscapes format (SPEC §2).

The real data set cannot be downloaded, so tests, smoke runs and benchmarks use these scenes.
They go through the same ``MiniscapesFiles`` loader as real data, so the loader is always the code
that runs. Scenes are *geometric*: a pinhole camera ~1.5 m above a ground plane, a road in
perspective, side planes (buildings, fences, walls), camera-facing billboards (cars, people,
poles, signs ...), all drawn through one z-buffer. Semantic labels and depth therefore come from
the same surface per pixel: depth edges coincide with label edges, nearer objects occlude farther
ones, ground depth = f * cam_h / (y - horizon) grows toward the horizon, and sky has no depth.
Colours carry per-class texture, noise, shading and haze so the task is learnable but not trivial.

Everything is vectorised numpy on bounding boxes; each sample has its own ``numpy`` generator
seeded by (seed, split, index), so any sample can be re-rendered alone and output is
deterministic for a seed.

This module composes a street (:func:`render_scene`), shades it, and writes data sets to disk
or memory; the camera, z-buffer and drawing primitives are
:mod:`~runner.tasks.mtl.data.synth_geometry`, the objects a street holds
:mod:`~runner.tasks.mtl.data.synth_objects`.
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Dict, Tuple, Union

import numpy as np

from runner.tasks.mtl.data.errors import DataError
from runner.tasks.mtl.data.miniscapes import CLASS_ID, EXTENSIONS, IGNORE, MODALITIES, encode_depth
from runner.tasks.mtl.data.synth_geometry import Camera, Canvas, billboard
from runner.tasks.mtl.data.synth_objects import (barrier, buildings, ego_hood, ground, jitter,
                                                 layout, person, pole, sky, tree, two_wheeler,
                                                 vegetation_side, vehicle)

C = CLASS_ID
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}

# Per-class amplitude of fine noise (texture): vegetation is busy, sky and road are smooth.
_NOISE = np.full(256, 6.0, dtype=np.float32)
for _name, _amp in (("road", 5), ("sidewalk", 6), ("building", 8), ("vegetation", 22),
                    ("terrain", 14), ("sky", 2.5), ("fence", 10), ("wall", 7)):
    _NOISE[C[_name]] = _amp


def _smooth_noise(rng, h: int, w: int, cell: int, amp: float) -> np.ndarray:
    """Low-frequency noise: a coarse random grid, bilinearly upsampled (no blocky cells)."""
    grid = rng.normal(0, amp, (h // cell + 2, w // cell + 2)).astype(np.float32)
    fy, fx = (np.arange(h) + 0.5) / cell, (np.arange(w) + 0.5) / cell
    iy, ix = fy.astype(int), fx.astype(int)
    wy, wx = (fy - iy)[:, None].astype(np.float32), (fx - ix)[None, :].astype(np.float32)
    top = grid[iy][:, ix] * (1 - wx) + grid[iy][:, ix + 1] * wx
    bot = grid[iy + 1][:, ix] * (1 - wx) + grid[iy + 1][:, ix + 1] * wx
    return top * (1 - wy) + bot * wy


def render_scene(rng: np.random.Generator, height: int, width: int
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one scene -> (rgb HxWx3 uint8, semseg HxW uint8, depth HxW float32 meters, NaN
    where there is no depth: sky and the ignore-labelled ego bonnet)."""
    cam = Camera(rng, height, width)
    cv = Canvas(height, width)
    lay = layout(rng, cam)
    sky(cv, cam, rng)
    ground(cv, cam, rng, lay)
    for sign, sw in ((-1, lay["sw_l"]), (1, lay["sw_r"])):
        edge = lay["rw"] + sw
        if rng.random() < 0.7:
            buildings(cv, cam, rng, lay, sign, edge + rng.uniform(0, 3))
        else:
            vegetation_side(cv, cam, rng, lay, sign, edge + rng.uniform(0, 3))
        if rng.random() < 0.45:
            barrier(cv, cam, rng, lay, sign, edge - 0.15)
        for _ in range(rng.integers(0, 3)):          # trees on the sidewalk
            z = rng.uniform(10, 80)
            tree(cv, cam, rng, lay["off"] + sign * (edge - 0.5) + cam.t * z, z)
        z = rng.uniform(3, 25)
        while z < 120:                                 # poles with signs / lights
            pole(cv, cam, rng, lay["off"] + sign * (lay["rw"] + 0.4) + cam.t * z, z)
            z += rng.uniform(10, 40)
        for _ in range(rng.integers(0, 4)):            # pedestrians on the sidewalk
            z = rng.uniform(4, 50)
            person(cv, cam, rng, lay["off"] + sign * (lay["rw"] + rng.uniform(0.3, sw))
                    + cam.t * z, z)
        for _ in range(rng.integers(0, 4)):            # parked cars at the road edge
            z = rng.uniform(5, 70)
            vehicle(cv, cam, rng, lay["off"] + sign * (lay["rw"] - 1.1) + cam.t * z, z, "car")
        if rng.random() < 0.25:                         # parked bicycle on the sidewalk
            z = rng.uniform(4, 30)
            two_wheeler(cv, cam, rng, lay["off"] + sign * (lay["rw"] + 0.8) + cam.t * z, z,
                         motor=False, rider=False)
    if rng.random() < 0.5:                              # street's far end
        z = rng.uniform(100, 280)
        billboard(cv, cam, lay["off"] + cam.t * z, z, 60, 0, rng.uniform(10, 40), C["building"],
                   colour=jitter(rng, "building", 25) * 0.85)
    for _ in range(rng.integers(1, 5)):                 # traffic in the lanes
        z = rng.uniform(5, 90)
        lane = rng.uniform(-0.6, 0.6) * lay["rw"]
        xc = lay["off"] + lane + cam.t * z
        r = rng.random()
        if r < 0.7:
            vehicle(cv, cam, rng, xc, z, "car")
        elif r < 0.8:
            vehicle(cv, cam, rng, xc, z, "truck" if rng.random() < 0.5 else "bus")
        else:
            two_wheeler(cv, cam, rng, xc, z, motor=rng.random() < 0.4, rider=True)
    if rng.random() < 0.4:                              # crossing pedestrian
        z = rng.uniform(5, 30)
        person(cv, cam, rng, lay["off"] + rng.uniform(-1, 1) * lay["rw"] + cam.t * z, z)
    if rng.random() < 0.3:
        ego_hood(cv, cam, rng)

    # shading: scene exposure, haze with distance, low-frequency blotches, per-class fine noise
    rgb = cv.rgb * np.float32(rng.uniform(0.75, 1.15))
    finite = np.isfinite(cv.z)
    haze = np.zeros(cv.z.shape, np.float32)
    haze[finite] = 1 - np.exp(-cv.z[finite] / rng.uniform(250, 600))
    haze_col = np.array((190, 200, 210), np.float32)
    rgb = rgb * (1 - haze[..., None]) + haze_col * haze[..., None]
    rgb += _smooth_noise(rng, height, width, cell=max(4, width // 40), amp=6.0)[..., None]
    rgb += rng.normal(0, 1, (height, width, 3)).astype(np.float32) * _NOISE[cv.label][..., None]
    rgb = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)

    depth = cv.z.astype(np.float32)
    depth[(cv.label == C["sky"]) | (cv.label == IGNORE) | ~finite] = np.nan
    return rgb, cv.label.copy(), depth


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one sample: a pure function of (seed, split, index)."""
    code = _SPLIT_CODES.get(split, zlib.crc32(split.encode()))
    return np.random.default_rng([int(seed), code, int(index)])


def write_synthetic_dataset(out: Union[str, os.PathLike], n_train: int, n_val: int,
                            size: Tuple[int, int] = (64, 128), seed: int = 0,
                            n_test: int = 0) -> Dict[str, int]:
    """Write ``<out>/{train,val,test}/{rgb,semseg,depth}/<i>.{jpg,png,png}`` (splits with 0
    samples are skipped). Returns {split: count}. Refuses to write into a split directory that
    already holds files, since leftovers with higher indices would silently join the split."""
    from PIL import Image

    h, w = int(size[0]), int(size[1])
    if h < 8 or w < 8:
        raise DataError(f"{out}: image size {h}x{w} too small; expected at least 8x8 (HxW)")
    out = Path(out)
    counts = {"train": int(n_train), "val": int(n_val), "test": int(n_test)}
    for split, n in counts.items():
        if n < 0:
            raise DataError(f"{out / split}: negative sample count {n}; expected >= 0")
        d = out / split
        if n and d.exists() and any(d.iterdir()):
            raise DataError(f"{d}: already exists and is not empty; expected a new or empty "
                            f"directory (delete it to regenerate)")
    for split, n in counts.items():
        if not n:
            continue
        dirs = {m: out / split / m for m in MODALITIES}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            rgb, sem, dep = render_scene(sample_rng(seed, split, i), h, w)
            Image.fromarray(rgb, "RGB").save(dirs["rgb"] / f"{i}{EXTENSIONS['rgb']}",
                                             quality=90)
            Image.fromarray(sem, "L").save(dirs["semseg"] / f"{i}{EXTENSIONS['semseg']}")
            Image.fromarray(encode_depth(dep), "L").save(dirs["depth"] / f"{i}.png")
    return {k: v for k, v in counts.items() if v}


def synthetic_split(n: int, size: Tuple[int, int], *, split: str = "train", seed: int = 0):
    """``n`` synthetic scenes as an in-memory :class:`PackedSplit`, without touching the disk
    (benchmarks and tests that need real-looking batches but no files)."""
    from runner.tasks.mtl.data.packed import PackedSplit

    scenes = [render_scene(sample_rng(seed, split, i), *size) for i in range(n)]
    return PackedSplit.from_arrays(np.stack([s[0] for s in scenes]), np.stack([s[1] for s in scenes]),
                                   np.stack([encode_depth(s[2]) for s in scenes]))
