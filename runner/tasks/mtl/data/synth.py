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
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np

from runner.tasks.mtl.data.errors import DataError
from runner.tasks.mtl.data.miniscapes import CLASS_ID, EXTENSIONS, IGNORE, MODALITIES, encode_depth

C = CLASS_ID
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}

# Base colours (RGB 0..255); each object jitters its own around these.
_BASE = {
    "road": (88, 84, 90), "sidewalk": (150, 140, 150), "building": (120, 110, 100),
    "wall": (140, 135, 120), "fence": (150, 130, 110), "pole": (130, 130, 130),
    "traffic light": (40, 40, 35), "traffic sign": (210, 190, 40), "vegetation": (70, 120, 40),
    "terrain": (140, 150, 90), "sky": (110, 160, 220), "person": (160, 40, 60),
    "rider": (200, 40, 40), "car": (30, 40, 130), "truck": (40, 70, 90), "bus": (40, 90, 110),
    "train": (60, 90, 100), "motorcycle": (60, 30, 120), "bicycle": (120, 20, 40),
}
# Per-class amplitude of fine noise (texture): vegetation is busy, sky and road are smooth.
_NOISE = np.full(256, 6.0, dtype=np.float32)
for _name, _amp in (("road", 5), ("sidewalk", 6), ("building", 8), ("vegetation", 22),
                    ("terrain", 14), ("sky", 2.5), ("fence", 10), ("wall", 7)):
    _NOISE[C[_name]] = _amp


def _jitter(rng: np.random.Generator, name: str, amount: float = 25.0) -> np.ndarray:
    return np.clip(np.asarray(_BASE[name], np.float32) + rng.normal(0, amount, 3), 0, 255)


class _Camera:
    """Pinhole camera, y down; horizon row ``yh``; road direction has lateral slope ``t``."""

    def __init__(self, rng: np.random.Generator, h: int, w: int):
        self.h, self.w = h, w
        self.f = w * rng.uniform(0.95, 1.2)
        self.cx = w / 2 + rng.normal(0, w * 0.01)
        self.yh = h * rng.uniform(0.40, 0.48)
        self.cam_h = rng.uniform(1.35, 1.65)
        self.t = rng.uniform(-0.08, 0.08)            # road yaw (lateral meters per meter ahead)
        self.u = np.arange(w, dtype=np.float64) + 0.5  # pixel centres
        self.v = np.arange(h, dtype=np.float64) + 0.5
        self.x = (self.u - self.cx) / self.f           # ray slope per column


class _Canvas:
    """z-buffer + label + colour; ``paint`` writes only where the new surface is nearer."""

    def __init__(self, h: int, w: int):
        self.z = np.full((h, w), np.inf)
        self.label = np.full((h, w), C["sky"], dtype=np.uint8)
        self.rgb = np.zeros((h, w, 3), dtype=np.float32)

    def paint(self, rows: slice, cols: slice, mask, z, label: int, colour) -> None:
        zs = self.z[rows, cols]
        z = np.broadcast_to(z, zs.shape)
        win = np.broadcast_to(mask, zs.shape) & (z < zs)
        if not win.any():
            return
        zs[win] = z[win]
        self.label[rows, cols][win] = label
        self.rgb[rows, cols][win] = np.broadcast_to(colour, zs.shape + (3,))[win]


def _frac(a):
    return a - np.floor(a)


# --- primitives ----------------------------------------------------------------------------------

def _billboard(cv: _Canvas, cam: _Camera, xc: float, z: float, half_w: float, h0: float,
               h1: float, label: int, shape: Optional[Callable] = None, colour=None) -> None:
    """A camera-facing planar object at constant depth z, lateral centre xc (camera frame),
    spanning heights h0..h1 above the ground. ``shape(a, b)`` / ``colour(a, b)`` get a in -1..1
    (left..right) and b in 0..1 (bottom..top), broadcastable (1, w) and (h, 1)."""
    if z <= 0.3:
        return
    s = cam.f / z
    u0, u1 = cam.cx + s * (xc - half_w), cam.cx + s * (xc + half_w)
    v0, v1 = cam.yh + s * (cam.cam_h - h1), cam.yh + s * (cam.cam_h - h0)
    c0, c1 = max(int(np.floor(u0)), 0), min(int(np.ceil(u1)), cam.w)
    r0, r1 = max(int(np.floor(v0)), 0), min(int(np.ceil(v1)), cam.h)
    if c0 >= c1 or r0 >= r1:
        return
    u, v = cam.u[c0:c1], cam.v[r0:r1]
    a = ((u - cam.cx) / s - xc) / half_w
    b = ((cam.cam_h - (v - cam.yh) / s) - h0) / (h1 - h0)
    a, b = a[None, :], b[:, None]
    inside = (np.abs(a) <= 1) & (b >= 0) & (b <= 1)
    if shape is not None:
        inside = inside & shape(a, b)
    col = colour(a, b) if callable(colour) else np.asarray(colour, np.float32)
    cv.paint(slice(r0, r1), slice(c0, c1), inside, z, label, col)


def _side_plane(cv: _Canvas, cam: _Camera, xp: float, z0: float, z1: float, h0: float,
                h1: float, label: int, colour) -> None:
    """A vertical plane parallel to the road at lateral offset xp (road frame), between depths
    z0..z1 and heights h0..h1. Depth varies along it with the column (it recedes in perspective).
    ``colour(along_z, height)`` gets (h, w) arrays, or is a constant colour."""
    denom = cam.x - cam.t
    with np.errstate(divide="ignore", invalid="ignore"):
        zc = np.where(denom * xp > 0, xp / denom, np.inf)
    cols = np.nonzero((zc >= z0) & (zc <= z1))[0]
    if cols.size == 0:
        return
    c0, c1 = cols[0], cols[-1] + 1
    zc = zc[c0:c1][None, :]
    hgt = cam.cam_h - (cam.v[:, None] - cam.yh) * zc / cam.f
    mask = (hgt >= h0) & (hgt <= h1) & np.isfinite(zc)
    rows = np.nonzero(mask.any(axis=1))[0]
    if rows.size == 0:
        return
    r0, r1 = rows[0], rows[-1] + 1
    mask, hgt = mask[r0:r1], hgt[r0:r1]
    z = np.broadcast_to(zc, mask.shape)
    col = colour(z, hgt) if callable(colour) else np.asarray(colour, np.float32)
    cv.paint(slice(r0, r1), slice(c0, c1), mask, z, label, col)


# --- scene parts ---------------------------------------------------------------------------------

def _sky(cv: _Canvas, cam: _Camera, rng) -> None:
    top = _jitter(rng, "sky", 20)
    bottom = np.clip(top + rng.uniform(40, 90), 0, 255)
    t = np.clip(cam.v / max(cam.yh, 1.0), 0, 1)[:, None, None]
    cv.rgb[:] = top * (1 - t) + bottom * t


def _ground(cv: _Canvas, cam: _Camera, rng, lay) -> None:
    r0 = int(np.searchsorted(cam.v, cam.yh, side="right"))  # first row below the horizon
    if r0 >= cam.h:
        return
    z = cam.f * cam.cam_h / (cam.v[r0:, None] - cam.yh)           # (rows, 1)
    xr = z * (cam.x[None, :] - cam.t) - lay["off"]                  # lateral, road frame
    z = np.broadcast_to(z, xr.shape)
    ax = np.abs(xr)
    label = np.full(xr.shape, C["terrain"], np.uint8)
    sw_w = np.where(xr < 0, lay["sw_l"], lay["sw_r"])
    label[ax < lay["rw"] + sw_w] = C["sidewalk"]
    label[ax < lay["rw"]] = C["road"]
    cols = {k: _jitter(rng, k, 12) for k in ("road", "sidewalk", "terrain")}
    rgb = np.empty(xr.shape + (3,), np.float32)
    for k in cols:
        rgb[label == C[k]] = cols[k]
    # lane markings (still 'road', as in Cityscapes): dashed centre line, solid edge lines
    road = label == C["road"]
    centre = road & (np.abs(xr) < 0.08) & (_frac(z / 9.0) < 0.5)
    edge = road & (ax > lay["rw"] - 0.25) & (ax < lay["rw"] - 0.1)
    rgb[centre | edge] = (215, 215, 205)
    # sidewalk tiles and terrain patches
    side = label == C["sidewalk"]
    tile = ((np.floor(xr / 0.6) + np.floor(z / 0.6)) % 2)[side]
    rgb[side] += (tile * 14 - 7)[:, None]
    ter = label == C["terrain"]
    patch = np.sin(xr[ter] * 0.7) * np.sin(z[ter] * 0.3) * 18
    rgb[ter] += patch[:, None]
    # darker toward the camera's feet (fake shading)
    rgb *= (0.85 + 0.15 * np.exp(-z / 30.0))[..., None]
    # the ground is drawn first (right after the sky), so it simply replaces those rows
    cv.z[r0:] = z
    cv.label[r0:] = label
    cv.rgb[r0:] = rgb


def _facade(rng, base) -> Callable:
    win_col = np.clip(rng.normal(60, 15, 3), 0, 255).astype(np.float32) + (0, 5, 20)
    bay, storey = rng.uniform(2.5, 4.5), rng.uniform(2.8, 3.6)
    has_windows = rng.random() < 0.85

    def colour(along, hgt):
        out = np.broadcast_to(base, along.shape + (3,)).copy()
        out *= (0.9 + 0.1 * np.cos(hgt * 0.2))[..., None]
        if has_windows:
            w = ((_frac(along / bay) > 0.3) & (_frac(along / bay) < 0.75)
                 & (_frac(hgt / storey) > 0.35) & (_frac(hgt / storey) < 0.85) & (hgt > 2.5))
            out[w] = win_col
        return out

    return colour


def _buildings(cv, cam, rng, lay, sign: int, xp: float) -> None:
    z = rng.uniform(2, 20)
    while z < 180:
        length = rng.uniform(8, 35)
        height = rng.uniform(6, 30)
        base = _jitter(rng, "building", 30)
        _side_plane(cv, cam, sign * xp, z, z + length, 0, height, C["building"],
                    _facade(rng, base))
        # the block's camera-facing end wall, a little darker (other light direction)
        depth = rng.uniform(8, 20)
        xa = lay["off"] + sign * xp + cam.t * z
        _billboard(cv, cam, xa + sign * depth / 2, z, depth / 2, 0, height, C["building"],
                   colour=base * 0.8)
        z += length + (rng.uniform(3, 12) if rng.random() < 0.3 else 0.0)


def _tree(cv, cam, rng, xc, z) -> None:
    r = rng.uniform(1.5, 3.5)
    hc = rng.uniform(3.5, 6.5)
    leaf = _jitter(rng, "vegetation", 18)
    trunk = np.array((80, 60, 40), np.float32)
    _billboard(cv, cam, xc, z, r, hc - r, hc + r, C["vegetation"],
               shape=lambda a, b: a ** 2 + ((b - 0.5) * 2) ** 2 <= 1,
               colour=lambda a, b: leaf * (0.8 + 0.25 * b - 0.1 * a ** 2)[..., None]
               * np.ones(3, np.float32))
    _billboard(cv, cam, xc, z + 0.01, 0.18, 0, hc, C["vegetation"], colour=trunk)


def _vegetation_side(cv, cam, rng, lay, sign: int, xp: float) -> None:
    hedge = _jitter(rng, "vegetation", 15)
    if rng.random() < 0.6:
        _side_plane(cv, cam, sign * xp, 1, 200, 0, rng.uniform(1, 2.5), C["vegetation"],
                    lambda along, hgt: hedge * (0.8 + 0.2 * np.sin(along * 1.3))[..., None])
    z = rng.uniform(8, 16)
    while z < 150:
        xc = lay["off"] + sign * (xp + rng.uniform(-1, 4)) + cam.t * z
        _tree(cv, cam, rng, xc, z)
        z += rng.uniform(6, 18)


def _barrier(cv, cam, rng, lay, sign, xp) -> None:
    """Fence or wall segment along the sidewalk's outer edge."""
    z0 = rng.uniform(2, 40)
    z1 = z0 + rng.uniform(10, 60)
    if rng.random() < 0.5:
        base = _jitter(rng, "fence", 20)
        period = rng.uniform(0.2, 0.5)
        _side_plane(cv, cam, sign * xp, z0, z1, 0, rng.uniform(0.9, 1.6), C["fence"],
                    lambda along, hgt: base * (0.7 + 0.3 * (_frac(along / period) < 0.5))
                    [..., None])
    else:
        base = _jitter(rng, "wall", 20)
        _side_plane(cv, cam, sign * xp, z0, z1, 0, rng.uniform(1.0, 2.5), C["wall"],
                    lambda along, hgt: base * (0.9 + 0.1 * (hgt > 0.3))[..., None])


def _pole(cv, cam, rng, xc, z) -> None:
    height = rng.uniform(4, 9)
    grey = _jitter(rng, "pole", 15)
    _billboard(cv, cam, xc, z, rng.uniform(0.07, 0.13), 0, height, C["pole"], colour=grey)
    kind = rng.random()
    if kind < 0.45:   # traffic sign: disc or rectangle plate
        hs = rng.uniform(2.2, 3.2)
        r = rng.uniform(0.3, 0.45)
        plate = np.array([(200, 30, 30), (30, 70, 180), (230, 200, 40)][rng.integers(3)],
                         np.float32)
        round_ = rng.random() < 0.6
        _billboard(cv, cam, xc, z - 0.05, r, hs - r, hs + r, C["traffic sign"],
                   shape=(lambda a, b: a ** 2 + ((b - 0.5) * 2) ** 2 <= 1) if round_ else None,
                   colour=lambda a, b: np.where(((a ** 2 + ((b - .5) * 2) ** 2) < 0.45)[..., None],
                                                (235, 235, 235), plate).astype(np.float32))
    elif kind < 0.8:  # traffic light box with three lamps
        hl = min(height - 0.5, rng.uniform(3.0, 5.0))
        lit = rng.integers(3)
        lamps = np.array([(230, 40, 30), (240, 190, 30), (40, 220, 90)], np.float32)

        def colour(a, b):
            out = np.broadcast_to(np.float32(35), np.broadcast(a, b).shape + (3,)).copy()
            for k in range(3):
                bc = 1 - (k + 0.5) / 3
                m = (a ** 2 + ((b - bc) * 6) ** 2) < 0.4
                out[m] = lamps[k] if k == lit else lamps[k] * 0.3
            return out
        _billboard(cv, cam, xc, z - 0.05, 0.18, hl - 0.45, hl + 0.45, C["traffic light"],
                   colour=colour)


def _person_shape(a, b):
    head = (a / 0.35) ** 2 + ((b - 0.92) / 0.08) ** 2 <= 1
    torso = (b >= 0.45) & (b < 0.85) & (np.abs(a) < 0.85 - 0.2 * (b - 0.45))
    legs = (b < 0.47) & (np.abs(a) > 0.08) & (np.abs(a) < 0.55)
    return head | torso | legs


def _person_colour(rng):
    shirt, trousers = _jitter(rng, "person", 60), np.clip(rng.normal(60, 25, 3), 0, 255)
    skin = np.array((200, 160, 130), np.float32) * rng.uniform(0.6, 1.05)

    def colour(a, b):
        b = np.broadcast_to(b, np.broadcast(a, b).shape)
        out = np.where((b > 0.84)[..., None], skin, np.where((b > 0.46)[..., None], shirt,
                                                             trousers))
        return out.astype(np.float32)
    return colour


def _person(cv, cam, rng, xc, z) -> None:
    hgt = rng.uniform(1.55, 1.9)
    _billboard(cv, cam, xc, z, 0.27, 0, hgt, C["person"], _person_shape, _person_colour(rng))


def _two_wheeler(cv, cam, rng, xc, z, motor: bool, rider: bool) -> None:
    label = C["motorcycle"] if motor else C["bicycle"]
    frame = _jitter(rng, "motorcycle" if motor else "bicycle", 40)

    def shape(a, b):
        wheel_r = 0.3
        ring = lambda ac: np.abs(np.hypot((a - ac) / wheel_r, (b - 0.35) / 0.35) - 0.85) < 0.2
        wheels = ring(-0.65) | ring(0.65)
        if motor:
            body = (b > 0.3) & (b < 0.8) & (np.abs(a) < 0.55)
        else:
            body = ((np.abs(b - 0.62) < 0.07) & (np.abs(a) < 0.5)) | \
                   ((np.abs(a - (b - 0.35) * 0.6) < 0.07) & (b > 0.3) & (b < 0.95))
        return wheels | body

    _billboard(cv, cam, xc, z, 0.85, 0, 1.05, label, shape,
               colour=lambda a, b: np.where((b < 0.7)[..., None] & (np.abs(a) > 0.45)[..., None],
                                            np.float32(30), frame).astype(np.float32))
    if rider:
        _billboard(cv, cam, xc, z - 0.05, 0.27, 0.75, 1.75, C["rider"],
                   lambda a, b: _person_shape(a, b) & (b > 0.3),
                   _person_colour(rng))


def _vehicle(cv, cam, rng, xc, z, kind: str) -> None:
    body = _jitter(rng, kind, 70) if kind == "car" else _jitter(rng, kind, 35)
    glass = np.array((45, 55, 70), np.float32)
    if kind == "car":
        half_w, height = rng.uniform(0.85, 1.0), rng.uniform(1.4, 1.6)

        def shape(a, b):
            lower = b < 0.6
            cabin = (np.abs(a) < 0.85 - 0.5 * (b - 0.6))
            return lower | cabin

        def colour(a, b):
            a, b = np.broadcast_arrays(a, b)
            out = np.broadcast_to(body, a.shape + (3,)).copy()
            out[(b > 0.62) & (b < 0.92) & (np.abs(a) < 0.7 - 0.5 * (b - 0.6))] = glass
            out[(b < 0.18) & (np.abs(a) > 0.55)] = 25                            # tyres
            out[(b > 0.35) & (b < 0.45) & (np.abs(a) > 0.7)] = (200, 30, 30)     # rear lights
            out *= (0.75 + 0.3 * b)[..., None]
            return out
    else:
        half_w, height = 1.25, rng.uniform(3.0, 3.8)

        def shape(a, b):
            return np.ones(np.broadcast(a, b).shape, bool)

        def colour(a, b):
            a, b = np.broadcast_arrays(a, b)
            out = np.broadcast_to(body, a.shape + (3,)).copy()
            if kind == "bus":
                out[(b > 0.55) & (b < 0.85) & (np.abs(a) < 0.9)] = glass
            out[(b < 0.08) & (np.abs(a) > 0.6)] = 25
            out *= (0.8 + 0.2 * b)[..., None]
            return out
    _billboard(cv, cam, xc, z, half_w, 0, height, C[kind], shape, colour)


def _layout(rng, cam) -> Dict[str, float]:
    rw = rng.uniform(3.5, 7.5)
    return {"off": rng.uniform(-1.5, 1.5) - 0.3 * rw, "rw": rw,
            "sw_l": rng.uniform(1.5, 4.5), "sw_r": rng.uniform(1.5, 4.5)}


def _ego_hood(cv, cam, rng) -> None:
    """Sometimes the ego vehicle's bonnet at the bottom: label ignore (255), no depth."""
    top = cam.h * (1 - rng.uniform(0.05, 0.1))
    curve = top + (cam.h * 0.04) * ((cam.u - cam.w / 2) / (cam.w / 2)) ** 2
    mask = cam.v[:, None] > curve[None, :]
    cv.paint(slice(0, cam.h), slice(0, cam.w), mask, 0.0, IGNORE,
             np.clip(rng.normal(40, 15, 3), 0, 255).astype(np.float32))


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
    cam = _Camera(rng, height, width)
    cv = _Canvas(height, width)
    lay = _layout(rng, cam)
    _sky(cv, cam, rng)
    _ground(cv, cam, rng, lay)
    for sign, sw in ((-1, lay["sw_l"]), (1, lay["sw_r"])):
        edge = lay["rw"] + sw
        if rng.random() < 0.7:
            _buildings(cv, cam, rng, lay, sign, edge + rng.uniform(0, 3))
        else:
            _vegetation_side(cv, cam, rng, lay, sign, edge + rng.uniform(0, 3))
        if rng.random() < 0.45:
            _barrier(cv, cam, rng, lay, sign, edge - 0.15)
        for _ in range(rng.integers(0, 3)):          # trees on the sidewalk
            z = rng.uniform(10, 80)
            _tree(cv, cam, rng, lay["off"] + sign * (edge - 0.5) + cam.t * z, z)
        z = rng.uniform(3, 25)
        while z < 120:                                 # poles with signs / lights
            _pole(cv, cam, rng, lay["off"] + sign * (lay["rw"] + 0.4) + cam.t * z, z)
            z += rng.uniform(10, 40)
        for _ in range(rng.integers(0, 4)):            # pedestrians on the sidewalk
            z = rng.uniform(4, 50)
            _person(cv, cam, rng, lay["off"] + sign * (lay["rw"] + rng.uniform(0.3, sw))
                    + cam.t * z, z)
        for _ in range(rng.integers(0, 4)):            # parked cars at the road edge
            z = rng.uniform(5, 70)
            _vehicle(cv, cam, rng, lay["off"] + sign * (lay["rw"] - 1.1) + cam.t * z, z, "car")
        if rng.random() < 0.25:                         # parked bicycle on the sidewalk
            z = rng.uniform(4, 30)
            _two_wheeler(cv, cam, rng, lay["off"] + sign * (lay["rw"] + 0.8) + cam.t * z, z,
                         motor=False, rider=False)
    if rng.random() < 0.5:                              # street's far end
        z = rng.uniform(100, 280)
        _billboard(cv, cam, lay["off"] + cam.t * z, z, 60, 0, rng.uniform(10, 40), C["building"],
                   colour=_jitter(rng, "building", 25) * 0.85)
    for _ in range(rng.integers(1, 5)):                 # traffic in the lanes
        z = rng.uniform(5, 90)
        lane = rng.uniform(-0.6, 0.6) * lay["rw"]
        xc = lay["off"] + lane + cam.t * z
        r = rng.random()
        if r < 0.7:
            _vehicle(cv, cam, rng, xc, z, "car")
        elif r < 0.8:
            _vehicle(cv, cam, rng, xc, z, "truck" if rng.random() < 0.5 else "bus")
        else:
            _two_wheeler(cv, cam, rng, xc, z, motor=rng.random() < 0.4, rider=True)
    if rng.random() < 0.4:                              # crossing pedestrian
        z = rng.uniform(5, 30)
        _person(cv, cam, rng, lay["off"] + rng.uniform(-1, 1) * lay["rw"] + cam.t * z, z)
    if rng.random() < 0.3:
        _ego_hood(cv, cam, rng)

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
