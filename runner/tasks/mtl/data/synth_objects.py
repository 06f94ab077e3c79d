"""What a synthetic street holds: sky, ground (road, lane markings, sidewalks, terrain),
buildings, vegetation, fences and walls, poles with signs and lights, people, two-wheelers,
vehicles and the ego vehicle's bonnet, each with its label, shape and colours.

Why a module: :func:`runner.tasks.mtl.data.synth.render_scene` composes a street from these
objects; each draws itself through :mod:`~runner.tasks.mtl.data.synth_geometry`'s primitives and
takes its randomness from the sample's generator in a fixed order, so a sample renders the same
every time for its (seed, split, index).
"""
from __future__ import annotations

from typing import Callable, Dict

import numpy as np

from runner.tasks.mtl.data.miniscapes import CLASS_ID, IGNORE
from runner.tasks.mtl.data.synth_geometry import Camera, Canvas, billboard, frac, side_plane

C = CLASS_ID

# Base colours (RGB 0..255); each object jitters its own around these.
_BASE = {
    "road": (88, 84, 90), "sidewalk": (150, 140, 150), "building": (120, 110, 100),
    "wall": (140, 135, 120), "fence": (150, 130, 110), "pole": (130, 130, 130),
    "traffic light": (40, 40, 35), "traffic sign": (210, 190, 40), "vegetation": (70, 120, 40),
    "terrain": (140, 150, 90), "sky": (110, 160, 220), "person": (160, 40, 60),
    "rider": (200, 40, 40), "car": (30, 40, 130), "truck": (40, 70, 90), "bus": (40, 90, 110),
    "train": (60, 90, 100), "motorcycle": (60, 30, 120), "bicycle": (120, 20, 40),
}


def jitter(rng: np.random.Generator, name: str, amount: float = 25.0) -> np.ndarray:
    """The class's base colour, varied per object (no two cars the same blue)."""
    return np.clip(np.asarray(_BASE[name], np.float32) + rng.normal(0, amount, 3), 0, 255)


def sky(cv: Canvas, cam: Camera, rng) -> None:
    top = jitter(rng, "sky", 20)
    bottom = np.clip(top + rng.uniform(40, 90), 0, 255)
    t = np.clip(cam.v / max(cam.yh, 1.0), 0, 1)[:, None, None]
    cv.rgb[:] = top * (1 - t) + bottom * t


def ground(cv: Canvas, cam: Camera, rng, lay) -> None:
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
    cols = {k: jitter(rng, k, 12) for k in ("road", "sidewalk", "terrain")}
    rgb = np.empty(xr.shape + (3,), np.float32)
    for k in cols:
        rgb[label == C[k]] = cols[k]
    # lane markings (still 'road', as in Cityscapes): dashed centre line, solid edge lines
    road = label == C["road"]
    centre = road & (np.abs(xr) < 0.08) & (frac(z / 9.0) < 0.5)
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
            w = ((frac(along / bay) > 0.3) & (frac(along / bay) < 0.75)
                 & (frac(hgt / storey) > 0.35) & (frac(hgt / storey) < 0.85) & (hgt > 2.5))
            out[w] = win_col
        return out

    return colour


def buildings(cv, cam, rng, lay, sign: int, xp: float) -> None:
    z = rng.uniform(2, 20)
    while z < 180:
        length = rng.uniform(8, 35)
        height = rng.uniform(6, 30)
        base = jitter(rng, "building", 30)
        side_plane(cv, cam, sign * xp, z, z + length, 0, height, C["building"],
                    _facade(rng, base))
        # the block's camera-facing end wall, a little darker (other light direction)
        depth = rng.uniform(8, 20)
        xa = lay["off"] + sign * xp + cam.t * z
        billboard(cv, cam, xa + sign * depth / 2, z, depth / 2, 0, height, C["building"],
                   colour=base * 0.8)
        z += length + (rng.uniform(3, 12) if rng.random() < 0.3 else 0.0)


def tree(cv, cam, rng, xc, z) -> None:
    r = rng.uniform(1.5, 3.5)
    hc = rng.uniform(3.5, 6.5)
    leaf = jitter(rng, "vegetation", 18)
    trunk = np.array((80, 60, 40), np.float32)
    billboard(cv, cam, xc, z, r, hc - r, hc + r, C["vegetation"],
               shape=lambda a, b: a ** 2 + ((b - 0.5) * 2) ** 2 <= 1,
               colour=lambda a, b: leaf * (0.8 + 0.25 * b - 0.1 * a ** 2)[..., None]
               * np.ones(3, np.float32))
    billboard(cv, cam, xc, z + 0.01, 0.18, 0, hc, C["vegetation"], colour=trunk)


def vegetation_side(cv, cam, rng, lay, sign: int, xp: float) -> None:
    hedge = jitter(rng, "vegetation", 15)
    if rng.random() < 0.6:
        side_plane(cv, cam, sign * xp, 1, 200, 0, rng.uniform(1, 2.5), C["vegetation"],
                    lambda along, hgt: hedge * (0.8 + 0.2 * np.sin(along * 1.3))[..., None])
    z = rng.uniform(8, 16)
    while z < 150:
        xc = lay["off"] + sign * (xp + rng.uniform(-1, 4)) + cam.t * z
        tree(cv, cam, rng, xc, z)
        z += rng.uniform(6, 18)


def barrier(cv, cam, rng, lay, sign, xp) -> None:
    """Fence or wall segment along the sidewalk's outer edge."""
    z0 = rng.uniform(2, 40)
    z1 = z0 + rng.uniform(10, 60)
    if rng.random() < 0.5:
        base = jitter(rng, "fence", 20)
        period = rng.uniform(0.2, 0.5)
        side_plane(cv, cam, sign * xp, z0, z1, 0, rng.uniform(0.9, 1.6), C["fence"],
                    lambda along, hgt: base * (0.7 + 0.3 * (frac(along / period) < 0.5))
                    [..., None])
    else:
        base = jitter(rng, "wall", 20)
        side_plane(cv, cam, sign * xp, z0, z1, 0, rng.uniform(1.0, 2.5), C["wall"],
                    lambda along, hgt: base * (0.9 + 0.1 * (hgt > 0.3))[..., None])


def pole(cv, cam, rng, xc, z) -> None:
    height = rng.uniform(4, 9)
    grey = jitter(rng, "pole", 15)
    billboard(cv, cam, xc, z, rng.uniform(0.07, 0.13), 0, height, C["pole"], colour=grey)
    kind = rng.random()
    if kind < 0.45:   # traffic sign: disc or rectangle plate
        hs = rng.uniform(2.2, 3.2)
        r = rng.uniform(0.3, 0.45)
        plate = np.array([(200, 30, 30), (30, 70, 180), (230, 200, 40)][rng.integers(3)],
                         np.float32)
        round_ = rng.random() < 0.6
        billboard(cv, cam, xc, z - 0.05, r, hs - r, hs + r, C["traffic sign"],
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
        billboard(cv, cam, xc, z - 0.05, 0.18, hl - 0.45, hl + 0.45, C["traffic light"],
                   colour=colour)


def _person_shape(a, b):
    head = (a / 0.35) ** 2 + ((b - 0.92) / 0.08) ** 2 <= 1
    torso = (b >= 0.45) & (b < 0.85) & (np.abs(a) < 0.85 - 0.2 * (b - 0.45))
    legs = (b < 0.47) & (np.abs(a) > 0.08) & (np.abs(a) < 0.55)
    return head | torso | legs


def _person_colour(rng):
    shirt, trousers = jitter(rng, "person", 60), np.clip(rng.normal(60, 25, 3), 0, 255)
    skin = np.array((200, 160, 130), np.float32) * rng.uniform(0.6, 1.05)

    def colour(a, b):
        b = np.broadcast_to(b, np.broadcast(a, b).shape)
        out = np.where((b > 0.84)[..., None], skin, np.where((b > 0.46)[..., None], shirt,
                                                             trousers))
        return out.astype(np.float32)
    return colour


def person(cv, cam, rng, xc, z) -> None:
    hgt = rng.uniform(1.55, 1.9)
    billboard(cv, cam, xc, z, 0.27, 0, hgt, C["person"], _person_shape, _person_colour(rng))


def two_wheeler(cv, cam, rng, xc, z, motor: bool, rider: bool) -> None:
    label = C["motorcycle"] if motor else C["bicycle"]
    frame = jitter(rng, "motorcycle" if motor else "bicycle", 40)

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

    billboard(cv, cam, xc, z, 0.85, 0, 1.05, label, shape,
               colour=lambda a, b: np.where((b < 0.7)[..., None] & (np.abs(a) > 0.45)[..., None],
                                            np.float32(30), frame).astype(np.float32))
    if rider:
        billboard(cv, cam, xc, z - 0.05, 0.27, 0.75, 1.75, C["rider"],
                   lambda a, b: _person_shape(a, b) & (b > 0.3),
                   _person_colour(rng))


def vehicle(cv, cam, rng, xc, z, kind: str) -> None:
    body = jitter(rng, kind, 70) if kind == "car" else jitter(rng, kind, 35)
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
    billboard(cv, cam, xc, z, half_w, 0, height, C[kind], shape, colour)


def layout(rng, cam) -> Dict[str, float]:
    rw = rng.uniform(3.5, 7.5)
    return {"off": rng.uniform(-1.5, 1.5) - 0.3 * rw, "rw": rw,
            "sw_l": rng.uniform(1.5, 4.5), "sw_r": rng.uniform(1.5, 4.5)}


def ego_hood(cv, cam, rng) -> None:
    """Sometimes the ego vehicle's bonnet at the bottom: label ignore (255), no depth."""
    top = cam.h * (1 - rng.uniform(0.05, 0.1))
    curve = top + (cam.h * 0.04) * ((cam.u - cam.w / 2) / (cam.w / 2)) ** 2
    mask = cam.v[:, None] > curve[None, :]
    cv.paint(slice(0, cam.h), slice(0, cam.w), mask, 0.0, IGNORE,
             np.clip(rng.normal(40, 15, 3), 0, 255).astype(np.float32))
