"""The synthetic scenes' geometry: a pinhole camera, a z-buffered canvas, and the two drawing
primitives every object of :mod:`~runner.tasks.mtl.data.synth_objects` is made of.

Why a module: labels and depth must come from the same surface per pixel (depth edges on label
edges, nearer objects occluding farther ones); that holds because every surface is drawn through
:meth:`Canvas.paint`, which keeps a pixel only where the new surface is nearer. Both primitives
work on the bounding box of what they draw, vectorised in numpy.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from runner.tasks.mtl.data.miniscapes import CLASS_ID


class Camera:
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


class Canvas:
    """z-buffer + label + colour; ``paint`` writes only where the new surface is nearer."""

    def __init__(self, h: int, w: int):
        self.z = np.full((h, w), np.inf)
        self.label = np.full((h, w), CLASS_ID["sky"], dtype=np.uint8)
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


def frac(a):
    return a - np.floor(a)


def billboard(cv: Canvas, cam: Camera, xc: float, z: float, half_w: float, h0: float,
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


def side_plane(cv: Canvas, cam: Camera, xp: float, z0: float, z1: float, h0: float,
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
