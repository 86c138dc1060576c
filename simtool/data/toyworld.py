"""Procedural 3-D "toy world": turntable videos of shape-family objects.

The world is organised as rooms × categories × objects × frames:

* a **category** is a 3-D shape family (``"torus"``, ``"mushroom"``, ``"table"`` ...), each
  defined by a signed-distance function (SDF) with a handful of proportion parameters;
* an **object** is one member of a family: its parameters are scaled (±30 %), it is stretched
  anisotropically (±15 % per axis), set on the turntable with a slight tilt (6–16°), and it
  gets its own base colour and a surface texture (plain, stripes, checker, dots or gradient)
  that is evaluated in object coordinates, so the texture turns with the object. Every object
  is re-centred and scaled to fit a sphere of radius 0.86 in a view of half-width 1, so it
  spans roughly 50–80 % of the frame;
* a **frame** is one turntable viewpoint: the object spins about the vertical axis (yaw
  ``k * 360 / frames_per_object`` degrees plus a random per-object phase) in front of a fixed
  orthographic camera that looks down at 25°; the tilt and the anisotropy make every turn
  visible, even for solids of revolution;
* a **room** is a group of ``categories_per_room`` categories. By default every room shares one
  neutral background (a soft grey wall gradient over a darker floor), so rooms can only be told
  apart from co-occurrence; with ``room_backgrounds=True`` each room gets its own hue. With
  ``background="none"`` every frame is rendered on one plain grey instead (the world's
  "background-removed" twin): the same objects, views and rooms, since no random draw depends on
  the background; only the pixels the object does not fully cover differ.

Images are rendered by sphere tracing the SDF with torch on the CPU (float32), vectorised over
every pixel of a batch of frames at once: rays are clipped to a bounding sphere and to the
object's bounding box, marched for at most ``_STEPS`` steps (finished rays are dropped every
few steps), shaded with Lambert + ambient from a fixed light using finite-difference normals,
and silhouette pixels are re-traced with 2×2 supersampling. Batches run in worker threads with
single-threaded torch ops. Every random choice comes from ``numpy.random.default_rng(seed)``,
so the same spec and seed give byte-identical images (on the same machine and torch build),
whatever the number of threads. The default spec (16 categories × 60 objects × 4 frames at
64×64) renders in a few seconds on two CPU cores.
"""

from __future__ import annotations

import colorsys
import math
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from simtool.errors import UserError


class WorldParams(Protocol):
    """What the renderer reads from a world description (``simtool.specs.data.ToyWorldSpec`` has it)."""

    n_rooms: int
    categories_per_room: int
    objects_per_category: int
    frames_per_object: int
    image_size: int
    room_backgrounds: bool
    hue_spread: float
    background: str  # "scene" (wall and floor) or "none" (plain grey); optional, "scene" when absent

Tensor = torch.Tensor

# ----------------------------------------------------------------------------------------------
# Camera, light and tracing constants (world units; the view spans [-_VIEW, _VIEW]²).
# ----------------------------------------------------------------------------------------------
_ELEVATION = math.radians(25.0)
_VIEW = 1.0
_RADIUS = 0.86  # every object is normalised to fit a sphere of this radius around the origin
_STEPS = 44
_HIT_EPS = 0.02  # hit tolerance, in pixels
_LAST_EPS = 0.1  # tolerance for rays still marching after the last step, in pixels
_AMBIENT = 0.32
_DIFFUSE = 0.68
_LIGHT = np.array([-0.45, 0.75, 0.55]) / np.linalg.norm([-0.45, 0.75, 0.55])
_MAX_RAYS = 1 << 19  # primary rays per batch (bounds memory for large images)
_PARAM_JITTER = 0.3
_ANISO_JITTER = 0.15
_MIN_ANISO = 0.08  # minimum |stretch_x / stretch_z - 1|, so every turn is visible
_TILT_DEGREES = (6.0, 16.0)
_ANTIALIAS = True  # 2×2 supersampling of silhouette pixels

# ----------------------------------------------------------------------------------------------
# SDF building blocks. Every function works on 1-D float32 tensors (one entry per ray) and
# accepts python floats or per-ray tensors as sizes.
# ----------------------------------------------------------------------------------------------


def _relu(a: Tensor) -> Tensor:
    return torch.clamp_min(a, 0.0)


def _hyp(a: Tensor, b: Tensor) -> Tensor:
    """sqrt(a² + b²) (faster than torch.hypot on the CPU)."""
    return torch.sqrt(torch.addcmul(a * a, b, b))


def _len3(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    return torch.sqrt(torch.addcmul(torch.addcmul(a * a, b, b), c, c))


def _vmax(*xs: Tensor) -> Tensor:
    out = xs[0]
    for x in xs[1:]:
        out = torch.maximum(out, x)
    return out


def _vmin(*xs: Tensor) -> Tensor:
    out = xs[0]
    for x in xs[1:]:
        out = torch.minimum(out, x)
    return out


def _clamp(x: Tensor, lo, hi) -> Tensor:
    lo = lo if isinstance(lo, Tensor) else torch.full_like(x, lo)
    hi = hi if isinstance(hi, Tensor) else torch.full_like(x, hi)
    return torch.minimum(torch.maximum(x, lo), hi)


def _box2(x: Tensor, y: Tensor, bx, by) -> Tensor:
    """Exact distance to a 2-D box of half sizes (bx, by) centred at the origin."""
    qx = x.abs() - bx
    qy = y.abs() - by
    return _hyp(_relu(qx), _relu(qy)) + torch.clamp_max(torch.maximum(qx, qy), 0.0)


def _box3(x: Tensor, y: Tensor, z: Tensor, bx, by, bz) -> Tensor:
    """Exact distance to a 3-D box of half sizes (bx, by, bz) centred at the origin."""
    qx = x.abs() - bx
    qy = y.abs() - by
    qz = z.abs() - bz
    outside = _len3(_relu(qx), _relu(qy), _relu(qz))
    return outside + torch.clamp_max(_vmax(qx, qy, qz), 0.0)


def _extrude(d2: Tensor, w: Tensor, h) -> Tensor:
    """Extrude a 2-D distance ``d2`` along the axis ``w`` to half thickness ``h``."""
    dw = w.abs() - h
    return _hyp(_relu(d2), _relu(dw)) + torch.clamp_max(torch.maximum(d2, dw), 0.0)


def _side(r: Tensor, y: Tensor, r0, y0, r1, y1) -> Tensor:
    """Signed distance in the (radius, height) plane to the line from (r0, y0) to (r1, y1),
    positive on the side away from the axis (for r1 < r0 with y1 > y0: a cone's slanted side)."""
    ey = y1 - y0
    er = r1 - r0
    nr, ny = ey, -er  # outward normal (rotate the edge by -90°)
    norm = (nr * nr + ny * ny) ** 0.5
    return ((r - r0) * nr + (y - y0) * ny) / norm


def _cone(rho: Tensor, y: Tensor, y_base, r_base, height) -> Tensor:
    """Solid cone with its base disc (radius r_base) at y_base and its apex height above it."""
    side = _side(rho, y, r_base, y_base, 0.0 * r_base, y_base + height)
    return torch.maximum(side, y_base - y)


def _smin(a: Tensor, b: Tensor, k: float) -> Tensor:
    """Smooth union (polynomial blend of width k)."""
    h = torch.clamp(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return torch.lerp(b, a, h) - k * h * (1.0 - h)


def _polar_fold(u: Tensor, v: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Fold the (u, v) plane into one of n angular sectors around +u, mirrored to v >= 0."""
    sector = 2.0 * math.pi / n
    a = torch.atan2(v, u)
    a = torch.remainder(a + 0.5 * sector, sector) - 0.5 * sector
    a = a.abs()
    rho = _hyp(u, v)
    return rho * torch.cos(a), rho * torch.sin(a)


# ----------------------------------------------------------------------------------------------
# Shape families: canonical SDFs, y is up, roughly unit sized. ``P`` is a list of per-ray
# parameter tensors (family defaults scaled per object). Placement does not matter: every object
# is re-centred and re-scaled from a sampled bounding box.
# ----------------------------------------------------------------------------------------------


def _f_sphere(x, y, z, P):
    return _len3(x, y, z) - P[0]


def _f_box(x, y, z, P):
    r = 0.06
    return _box3(x, y, z, P[0] - r, P[1] - r, P[2] - r) - r


def _f_cylinder(x, y, z, P):
    return _box2(_hyp(x, z), y, P[0], P[1])


def _f_cone(x, y, z, P):
    r, h = P
    return _cone(_hyp(x, z), y, -h, r, 2.0 * h)


def _f_torus(x, y, z, P):
    return _hyp(_hyp(x, z) - P[0], y) - P[1]


def _f_capsule(x, y, z, P):
    r, h = P
    return _len3(x - _clamp(x, -h, h), y, z) - r


def _f_octahedron(x, y, z, P):
    return (x.abs() + y.abs() + z.abs() - P[0]) * 0.57735027


def _f_hex_prism(x, y, z, P):
    a, length = P
    az, ay = z.abs(), y.abs()
    d2 = torch.maximum(az, 0.5 * az + 0.8660254 * ay) - a
    return _extrude(d2, x, length)


def _f_cross(x, y, z, P):
    a, w = P
    return _vmin(_box3(x, y, z, a, w, w), _box3(x, y, z, w, a, w), _box3(x, y, z, w, w, a))


def _f_mushroom(x, y, z, P):
    cap_r, stem_r, stem_h = P
    cap = torch.maximum(_len3(x, y + 0.25, z) - cap_r, -y)
    stem = _box2(_hyp(x, z), y + 0.5 * (stem_h - 0.05), stem_r, 0.5 * (stem_h + 0.05))
    return torch.minimum(cap, stem)


def _f_dumbbell(x, y, z, P):
    ball_r, half_len, bar_r = P
    balls = _len3(x.abs() - half_len, y, z) - ball_r
    bar = _len3(x - _clamp(x, -half_len, half_len), y, z) - bar_r
    return torch.minimum(balls, bar)


def _f_ring(x, y, z, P):
    return _hyp(_hyp(x, y) - P[0], z) - P[1]


def _f_pyramid(x, y, z, P):
    b, h = P
    yb = -0.5
    sx = _side(x.abs(), y, b, yb, 0.0 * b, yb + h)
    sz = _side(z.abs(), y, b, yb, 0.0 * b, yb + h)
    return _vmax(sx, sz, yb - y)


def _f_star_prism(x, y, z, P):
    outer, ratio, thick = P
    u, v = _polar_fold(y, x, 5)  # one tip points up
    inner = outer * ratio
    c, s = math.cos(math.pi / 5), math.sin(math.pi / 5)
    ix, iy = inner * c, inner * s
    nx, ny = iy, outer - ix  # outward normal of the edge tip -> inner vertex
    d2 = ((u - outer) * nx + v * ny) / torch.sqrt(nx * nx + ny * ny)
    return _extrude(d2, z, thick)


def _f_tri_prism(x, y, z, P):
    inr, length = P
    d2 = torch.maximum(-y, 0.8660254 * z.abs() + 0.5 * y) - inr
    return _extrude(d2, x, length)


def _f_bowl(x, y, z, P):
    r, thick, cut = P
    shell = (_len3(x, y, z) - r).abs() - thick
    return torch.maximum(shell, y - cut)


def _f_stairs(x, y, z, P):
    width, depth, rise = P
    out = None
    for i in range(3):
        x0 = -1.5 * depth + i * depth
        hx = 0.5 * (1.5 * depth - x0)
        cx = 0.5 * (1.5 * depth + x0)
        hy = 0.5 * (i + 1) * rise
        d = _box3(x - cx, y - hy, z, hx, hy, width)
        out = d if out is None else torch.minimum(out, d)
    return out


def _f_arch(x, y, z, P):
    w, h, d, r = P
    block = _box3(x, y, z, w, h, d)
    y0 = h - r - 0.2 * h
    opening = torch.minimum(_hyp(x, y - y0) - r, _box2(x, y - (y0 - h), r, h))
    return torch.maximum(block, -opening)


def _f_lens(x, y, z, P):
    disc_r, half_t = P
    big_r = (disc_r * disc_r + half_t * half_t) / (2.0 * half_t)
    off = big_r - half_t
    return torch.maximum(_len3(x, y, z - off) - big_r, _len3(x, y, z + off) - big_r)


def _f_egg(x, y, z, P):
    r_low, r_high = P
    return _smin(_len3(x, y + 0.2, z) - r_low, _len3(x, y - 0.32, z) - r_high, 0.35)


def _f_table(x, y, z, P):
    tw, td, h, leg_r = P
    top = _box3(x, y - h, z, tw, 0.06, td)
    rho = _hyp(x.abs() - (tw - 0.12), z.abs() - (td - 0.12))
    legs = _box2(rho, y, leg_r, h)
    return torch.minimum(top, legs)


def _f_bottle(x, y, z, P):
    body_r, body_h, neck_r, neck_h = P
    rho = _hyp(x, z)
    yb = -0.8 + body_h
    body = _box2(rho, y - yb, body_r - 0.05, body_h - 0.05) - 0.05
    yn = -0.8 + 2.0 * body_h + neck_h
    neck = _box2(rho, y - yn, neck_r, neck_h)
    return _smin(body, neck, 0.12)


def _f_snowman(x, y, z, P):
    r1, r2, r3 = P
    y1 = -0.6
    y2 = y1 + 0.85 * (r1 + r2)
    y3 = y2 + 0.85 * (r2 + r3)
    balls = _vmin(_len3(x, y - y1, z) - r1, _len3(x, y - y2, z) - r2, _len3(x, y - y3, z) - r3)
    nose = _len3(x, y - y3, z - _clamp(z, 0.0 * r3, r3 + 0.2)) - 0.045
    return torch.minimum(balls, nose)


def _f_pipe_l(x, y, z, P):
    r, down, across = P
    vertical = _len3(x, y - _clamp(y, -down, 0.0 * down), z)
    horizontal = _len3(x - _clamp(x, 0.0 * across, across), y, z)
    return torch.minimum(vertical, horizontal) - r


def _f_chair(x, y, z, P):
    half_w, back_h, leg_r = P
    seat = _box3(x, y, z, half_w, 0.06, half_w)
    rho = _hyp(x.abs() - (half_w - 0.08), z.abs() - (half_w - 0.08))
    legs = _box2(rho, y + 0.35, leg_r, 0.35)
    back = _box3(x, y - 0.5 * back_h, z + half_w - 0.05, half_w, 0.5 * back_h, 0.05)
    return _vmin(seat, legs, back)


def _f_hourglass(x, y, z, P):
    r, h, neck = P
    rho = _hyp(x, z)
    ay = y.abs()
    body = torch.maximum(-_side(rho, ay, r, h, neck, 0.0 * h), ay - h)
    plates = _box2(rho, ay - h - 0.04, r + 0.1, 0.04)
    return torch.minimum(body, plates)


def _f_cup(x, y, z, P):
    r, h, wall, handle_r = P
    rho = _hyp(x, z)
    outer = _box2(rho, y, r, h)
    inner = _box2(rho, y - wall, r - wall, h)
    body = torch.maximum(outer, -inner)
    handle = _hyp(_hyp(x - r, y) - handle_r, z) - 0.06
    handle = torch.maximum(handle, r - 0.03 - x)
    return torch.minimum(body, handle)


def _f_house(x, y, z, P):
    w, h, d, roof = P
    body = _box3(x, y, z, w, h, d)
    eave = w + 0.1
    roof2 = torch.maximum(_side(x.abs(), y, eave, h, 0.0 * eave, h + roof), h - y)
    roof3 = _extrude(roof2, z, d + 0.1)
    chimney = _box3(x - 0.5 * w, y - (h + 0.6 * roof), z + 0.3 * d, 0.08, 0.22, 0.08)
    return _vmin(body, roof3, chimney)


def _f_rocket(x, y, z, P):
    r, h, nose, fin = P
    rho = _hyp(x, z)
    body = _box2(rho, y, r, h)
    cone = _cone(rho, y, h, r, nose)
    ax, az = x.abs(), z.abs()
    fin_a = _box3(ax - r - 0.5 * fin, y + h - 0.15, z, 0.5 * fin, 0.2, 0.03)
    fin_b = _box3(az - r - 0.5 * fin, y + h - 0.15, x, 0.5 * fin, 0.2, 0.03)
    return _vmin(body, cone, fin_a, fin_b)


def _f_hammer(x, y, z, P):
    handle_h, handle_r, head_l, head_s = P
    handle = _box2(_hyp(x, z), y, handle_r, handle_h)
    head = _box3(x, y - handle_h, z, head_l, head_s, head_s)
    return torch.minimum(handle, head)


def _f_tree(x, y, z, P):
    trunk_r, crown_r, crown_h = P
    rho = _hyp(x, z)
    trunk = _box2(rho, y + 0.65, trunk_r, 0.25)
    low = _cone(rho, y, -0.45, crown_r, crown_h)
    high = _cone(rho, y, -0.45 + 0.5 * crown_h, 0.75 * crown_r, 0.8 * crown_h)
    return _vmin(trunk, low, high)


def _f_frame(x, y, z, P):
    b, e = P
    ax, ay, az = x.abs(), y.abs(), z.abs()
    return _vmin(
        _box3(ax, ay - b, az - b, b + e, e, e),
        _box3(ax - b, ay, az - b, e, b + e, e),
        _box3(ax - b, ay - b, az, e, e, b + e),
    )


def _f_gear(x, y, z, P):
    r, tooth, thick, hole = P
    u, v = _polar_fold(x, y, 10)
    rho = _hyp(x, y)
    disc = rho - r
    teeth = _box2(u - r, v, tooth, 0.09)
    d2 = torch.maximum(torch.minimum(disc, teeth), hole - rho)
    return _extrude(d2, z, thick)


def _f_arrow(x, y, z, P):
    shaft_half, shaft_w, head_w, head_l = P
    shaft = _box2(x - (0.2 - shaft_half), y, shaft_half, shaft_w)
    head = torch.maximum(0.2 - x, _side(y.abs(), x, head_w, 0.2, 0.0 * head_w, 0.2 + head_l))
    return _extrude(torch.minimum(shaft, head), z, 0.1)


def _f_goblet(x, y, z, P):
    base_r, cup_r, stem_r = P
    rho = _hyp(x, z)
    base = _box2(rho, y + 0.8, base_r, 0.035)
    stem = _box2(rho, y + 0.45, stem_r, 0.35)
    cup_c = -0.1 + cup_r
    shell = (_len3(x, y - cup_c, z) - cup_r).abs() - 0.035
    cup = torch.maximum(shell, y - (cup_c + 0.6 * cup_r))
    return _vmin(base, stem, cup)


def _f_pawn(x, y, z, P):
    base_r, neck_r, head_r = P
    rho = _hyp(x, z)
    base = _box2(rho, y + 0.72, base_r - 0.04, 0.06) - 0.04
    body = torch.maximum(_side(rho, y, 0.8 * base_r, -0.66, neck_r, 0.2),
                         _box2(rho, y + 0.23, 2.0, 0.43))
    collar = _box2(rho, y - 0.2, neck_r + 0.1, 0.035)
    head = _len3(x, y - 0.2 - 0.8 * head_r, z) - head_r
    return _vmin(_smin(base, body, 0.08), collar, head)


@dataclass(frozen=True)
class _Family:
    sdf: Callable[[Tensor, Tensor, Tensor, list], Tensor]
    params: tuple[float, ...]
    lipschitz: float = 1.0  # multiplier that keeps the step a lower bound of the true distance


_FAMILY_TABLE: dict[str, _Family] = {
    "sphere": _Family(_f_sphere, (0.8,)),
    "box": _Family(_f_box, (0.7, 0.55, 0.45)),
    "cylinder": _Family(_f_cylinder, (0.42, 0.75)),
    "cone": _Family(_f_cone, (0.7, 0.6)),
    "torus": _Family(_f_torus, (0.65, 0.25)),
    "capsule": _Family(_f_capsule, (0.33, 0.55)),
    "octahedron": _Family(_f_octahedron, (0.95,)),
    "hex_prism": _Family(_f_hex_prism, (0.42, 0.7)),
    "cross": _Family(_f_cross, (0.85, 0.2)),
    "mushroom": _Family(_f_mushroom, (0.8, 0.22, 0.55)),
    "dumbbell": _Family(_f_dumbbell, (0.33, 0.6, 0.1)),
    "ring": _Family(_f_ring, (0.75, 0.09)),
    "pyramid": _Family(_f_pyramid, (0.8, 1.25)),
    "star_prism": _Family(_f_star_prism, (0.95, 0.45, 0.14), 0.9),
    "tri_prism": _Family(_f_tri_prism, (0.4, 0.75)),
    "bowl": _Family(_f_bowl, (0.85, 0.07, 0.1)),
    "stairs": _Family(_f_stairs, (0.6, 0.5, 0.4)),
    "arch": _Family(_f_arch, (0.9, 0.75, 0.3, 0.4)),
    "lens": _Family(_f_lens, (0.72, 0.22)),
    "egg": _Family(_f_egg, (0.55, 0.36)),
    "table": _Family(_f_table, (0.85, 0.6, 0.5, 0.06)),
    "bottle": _Family(_f_bottle, (0.38, 0.45, 0.12, 0.3)),
    "snowman": _Family(_f_snowman, (0.45, 0.33, 0.22)),
    "pipe_L": _Family(_f_pipe_l, (0.2, 0.9, 0.9)),
    "chair": _Family(_f_chair, (0.5, 0.8, 0.05)),
    "hourglass": _Family(_f_hourglass, (0.5, 0.7, 0.08)),
    "cup": _Family(_f_cup, (0.5, 0.55, 0.07, 0.28)),
    "house": _Family(_f_house, (0.6, 0.4, 0.5, 0.45)),
    "rocket": _Family(_f_rocket, (0.22, 0.5, 0.4, 0.28)),
    "hammer": _Family(_f_hammer, (0.75, 0.06, 0.5, 0.14)),
    "tree": _Family(_f_tree, (0.1, 0.6, 0.75)),
    "frame": _Family(_f_frame, (0.65, 0.07)),
    "gear": _Family(_f_gear, (0.62, 0.13, 0.12, 0.18), 0.9),
    "arrow": _Family(_f_arrow, (0.55, 0.12, 0.38, 0.5)),
    "goblet": _Family(_f_goblet, (0.35, 0.4, 0.05)),
    "pawn": _Family(_f_pawn, (0.45, 0.15, 0.27)),
}

FAMILIES: list[str] = list(_FAMILY_TABLE)
"""Names of the shape families; a world's categories are a seeded random subset of these."""


# ----------------------------------------------------------------------------------------------
# Public result type.
# ----------------------------------------------------------------------------------------------


@dataclass
class ToyWorld:
    """A rendered toy world. N = C * objects_per_category * frames_per_object rows, ordered by
    category, then object, then frame; C = n_rooms * categories_per_room.

    Attributes:
        images: uint8 (N, S, S, 3) RGB frames, S = spec.image_size.
        category: int64 (N,) category id in 0..C-1.
        object: int64 (N,) global object id in 0..C*objects_per_category-1; object ``o`` belongs
            to category ``o // objects_per_category``.
        frame: int64 (N,) turntable frame index in 0..frames_per_object-1.
        category_names: length-C list, the shape family of each category.
        room_of_category: int64 (C,) room of each category (``c // categories_per_room``).
        objects: the generating parameters of every object (index = global object id), as drawn
            for rendering: ``category`` int64 (O,) its shape family; ``proportions`` float64
            (O, 4), the factors (0.7..1.3) that scale the family's default proportion parameters,
            NaN-padded past the family's own count; ``stretch`` (O, 3), the anisotropic scale per
            axis (0.85..1.15); ``hue`` (O,) in turns [0, 1); ``saturation`` and ``value`` (O,); ``texture``
            int64 (O,) an index into :data:`TEXTURES`; ``n_params`` int64 (O,) the family's count of
            proportion parameters. (The toy triplets' latent similarity is defined on these, see
            :mod:`simtool.data.toy_triplets`.)
    """

    images: np.ndarray
    category: np.ndarray
    object: np.ndarray
    frame: np.ndarray
    category_names: list[str]
    room_of_category: np.ndarray
    objects: Optional[dict] = None


# ----------------------------------------------------------------------------------------------
# Random object description.
# ----------------------------------------------------------------------------------------------

_TEXTURES = ("plain", "stripes", "checker", "dots", "gradient")
TEXTURES = _TEXTURES
_MAX_PARAMS = 4  # the most proportion parameters of any family


def _hsv(h: float, s: float, v: float) -> list[float]:
    return list(colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))))


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """(3, 3) rotation by ``angle`` radians about the unit vector ``axis`` (Rodrigues)."""
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + math.sin(angle) * k + (1.0 - math.cos(angle)) * (k @ k)


def _sample_objects(rng: np.random.Generator, fam: _Family, n: int, family_hue: float = 0.0,
                    hue_spread: float = 1.0) -> dict[str, np.ndarray]:
    """Draw ``n`` objects of one family: proportions, stretch, pose phase, colours, texture.

    An object's hue (in turns) lies within ``family_hue ± hue_spread/2``; ``hue_spread=1`` allows any hue."""
    n_par = len(fam.params)
    rows: dict[str, list] = {k: [] for k in
                             ("params", "stretch", "tilt", "phase", "base", "second",
                              "texture", "freq", "axis", "offset", "scale", "hue", "saturation", "value")}
    for _ in range(n):
        scale = rng.uniform(1 - _PARAM_JITTER, 1 + _PARAM_JITTER, n_par)
        rows["params"].append(np.asarray(fam.params) * scale)
        rows["scale"].append(scale)
        while True:  # keep the horizontal cross-section visibly anisotropic
            stretch = rng.uniform(1 - _ANISO_JITTER, 1 + _ANISO_JITTER, 3)
            if abs(stretch[0] / stretch[2] - 1.0) >= _MIN_ANISO:
                break
        rows["stretch"].append(stretch)
        # a slight tilt about a random horizontal axis: no object looks the same after a half turn
        angle = math.radians(rng.uniform(*_TILT_DEGREES))
        azimuth = rng.uniform(0.0, 2.0 * math.pi)
        rows["tilt"].append(_rotation(np.array([math.cos(azimuth), 0.0, math.sin(azimuth)]), angle))
        rows["phase"].append(rng.uniform(0.0, 2.0 * math.pi))
        hue, sat, val = rng.uniform(), rng.uniform(0.35, 0.95), rng.uniform(0.55, 1.0)
        if hue_spread < 1.0:
            hue = family_hue + (hue - 0.5) * hue_spread
        rows["hue"].append(hue % 1.0)
        rows["saturation"].append(sat)
        rows["value"].append(val)
        rows["base"].append(_hsv(hue, sat, val))
        rows["second"].append(_hsv(hue + rng.uniform(0.25, 0.75), rng.uniform(0.1, 0.9),
                                   rng.uniform(0.3, 1.0)))
        tex = int(rng.integers(len(_TEXTURES)))
        rows["texture"].append(tex)
        # spatial frequency per texture kind, in canonical object units
        rows["freq"].append({0: 1.0, 1: rng.uniform(8.0, 14.0), 2: rng.uniform(2.0, 3.5),
                             3: rng.uniform(3.0, 5.0), 4: rng.uniform(0.5, 0.8)}[tex])
        axis = rng.normal(size=3)
        rows["axis"].append(axis / max(np.linalg.norm(axis), 1e-6))
        rows["offset"].append(rng.uniform(0.0, 1.0, 3))
    out = {k: np.asarray(v) for k, v in rows.items()}
    out["params"] = out["params"].reshape(n, n_par)
    out["scale"] = out["scale"].reshape(n, n_par)
    return out


def _object_parameters(objects: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The generating parameters of every object (see :class:`ToyWorld`), categories in order."""
    n_total = sum(len(o["hue"]) for o in objects)
    props = np.full((n_total, _MAX_PARAMS), np.nan)
    out: dict[str, list] = {"category": [], "n_params": []}
    row = 0
    for c, o in enumerate(objects):
        n, n_par = o["scale"].shape
        props[row:row + n, :n_par] = o["scale"]
        out["category"].append(np.full(n, c, dtype=np.int64))
        out["n_params"].append(np.full(n, n_par, dtype=np.int64))
        row += n
    res = {k: np.concatenate(v) for k, v in out.items()}
    res["proportions"] = props
    res["stretch"] = np.concatenate([o["stretch"] for o in objects]).astype(np.float64)
    for k in ("hue", "saturation", "value"):
        res[k] = np.concatenate([o[k] for o in objects]).astype(np.float64)
    res["texture"] = np.concatenate([o["texture"] for o in objects]).astype(np.int64)
    return res


def _fit_objects(fam: _Family, params: Tensor, stretch: Tensor, tilt: Tensor) -> dict[str, Tensor]:
    """Placement of each object from SDF samples on a grid around it.

    Returns ``scale`` (n,) and ``centre`` (n, 3) that fit the stretched, tilted object into the
    bounding sphere of radius ``_RADIUS`` (q = tilt^T (v + centre) / (scale * stretch) maps
    centred turntable coordinates v to canonical ones q), and the canonical bounding box
    ``lo``/``hi`` (n, 3)."""
    n_grid, half = 36, 1.8
    ax = torch.linspace(-half, half, n_grid)
    gx, gy, gz = torch.meshgrid(ax, ax, ax, indexing="ij")
    g = torch.stack([gx.reshape(-1), gy.reshape(-1), gz.reshape(-1)], 1)  # (G, 3)
    slack = (2 * half / (n_grid - 1)) * math.sqrt(3) / 2  # half the grid cell diagonal
    out: dict[str, list] = {"scale": [], "centre": [], "lo": [], "hi": []}
    for i in range(params.shape[0]):
        P = [params[i, j].expand(g.shape[0]) for j in range(params.shape[1])]
        d = fam.sdf(g[:, 0], g[:, 1], g[:, 2], P) * fam.lipschitz
        near = g[d <= slack]  # every surface point lies within `slack` of one of these
        if near.shape[0] == 0:  # degenerate; never happens for the built-in families
            near = g[:1] * 0.0
        u = (near * stretch[i]) @ tilt[i].T
        c0 = 0.5 * (u.amin(0) + u.amax(0))
        r0 = (u - c0).norm(dim=1).amax() + slack * stretch[i].amax()
        k = _RADIUS / r0
        out["scale"].append(k)
        out["centre"].append(c0 * k)
        out["lo"].append(near.amin(0) - slack)
        out["hi"].append(near.amax(0) + slack)
    return {key: torch.stack(v) for key, v in out.items()}


# ----------------------------------------------------------------------------------------------
# Sphere tracing.
# ----------------------------------------------------------------------------------------------


def _texture_weight(q: Tensor, tex: Tensor, freq: Tensor, axis: Tensor, offset: Tensor) -> Tensor:
    """Blend weight (M,) of the second colour for canonical surface points q (M, 3)."""
    proj = (q * axis).sum(1)
    stripes = torch.clamp(torch.sin(freq * proj + 6.2831853 * offset[:, 0]) * 4.0 + 0.5, 0.0, 1.0)
    cells = torch.floor(q * freq[:, None] + offset).sum(1)
    checker = torch.remainder(cells, 2.0)
    g = q * freq[:, None] + offset
    frac = g - torch.round(g)
    dots = (frac.norm(dim=1) < 0.3).float()
    grad = torch.clamp(0.5 + freq * proj, 0.0, 1.0)
    w = torch.zeros_like(proj)
    w = torch.where(tex == 1, stripes, w)
    w = torch.where(tex == 2, checker, w)
    w = torch.where(tex == 3, dots, w)
    w = torch.where(tex == 4, grad, w)
    return w


def _trace(fam: _Family, obj: dict[str, Tensor], frame_obj: Tensor, frame_yaw: Tensor,
           fi: Tensor, sx: Tensor, sy: Tensor, pix: float) -> tuple[Tensor, Tensor]:
    """Sphere-trace M orthographic rays and shade the hits.

    Args:
        fam: the shape family (its SDF is evaluated in canonical object coordinates).
        obj: per-object tensors (n_obj, ...): ``params`` (n, P), ``inv`` = 1/(scale*stretch)
            (n, 3), ``tilt`` (n, 3, 3), ``centre`` (n, 3), canonical bounding box ``lo``/``hi``
            (n, 3), ``step`` (n,) distance multiplier, and the texture fields.
        frame_obj, frame_yaw: (n_frames,) object index and yaw (radians) of each frame.
        fi, sx, sy: (M,) frame index and screen coordinates (world units) of each ray.
        pix: size of a pixel in world units (sets the hit tolerance).

    Returns:
        (hit_ids (H,) int64 indices into the M rays, colours (H, 3) float32 in [0, 1]).
    """
    empty = (torch.zeros(0, dtype=torch.long), torch.zeros(0, 3))
    rho2 = sx * sx + sy * sy
    rid = torch.nonzero(rho2 < _RADIUS * _RADIUS).squeeze(1)  # bounding-sphere early-out
    if rid.numel() == 0:
        return empty
    half = torch.sqrt(_RADIUS * _RADIUS - rho2[rid])
    f = fi[rid]
    ob = frame_obj[f]
    yaw = frame_yaw[f]
    ct, st = torch.cos(yaw), torch.sin(yaw)
    ce, se = math.cos(_ELEVATION), math.sin(_ELEVATION)
    wx, wy, wz = sx[rid], sy[rid] * ce, -sy[rid] * se  # ray origin on the plane through 0
    inv = obj["inv"][ob]
    cen = obj["centre"][ob]
    # canonical object coordinates: q = tilt^T (R_y(-yaw) w + centre) / (scale * stretch)
    tilt = obj["tilt"][ob]
    o = torch.stack([ct * wx - st * wz, wy, st * wx + ct * wz], 1) + cen
    o = (o[:, None, :] @ tilt).squeeze(1) * inv
    d = torch.stack([st * ce, torch.full_like(ct, -se), -ct * ce], 1)
    d = (d[:, None, :] @ tilt).squeeze(1) * inv
    o, d = list(o.T), list(d.T)
    # clip the ray to the object's canonical bounding box (slab test)
    lo, hi = obj["lo"][ob], obj["hi"][ob]
    t_in, t_out = -half, half
    for a in range(3):
        da = torch.where(d[a].abs() < 1e-9, torch.full_like(d[a], 1e-9), d[a])
        t1 = (lo[:, a] - o[a]) / da
        t2 = (hi[:, a] - o[a]) / da
        t_in = torch.maximum(t_in, torch.minimum(t1, t2))
        t_out = torch.minimum(t_out, torch.maximum(t1, t2))
    keep = torch.nonzero(t_in < t_out).squeeze(1)
    if keep.numel() == 0:
        return empty
    rid = rid[keep]
    prm = obj["params"][ob[keep]].T
    rows = o + d + [t_in, t_out, obj["step"][ob]]
    state = torch.cat([torch.stack([r[keep] for r in rows]), prm])
    n_par = prm.shape[0]

    eps = _HIT_EPS * pix
    hit_states, hit_ids = [], []
    for it in range(_STEPS):
        t = state[6]
        x = torch.addcmul(state[0], t, state[3])
        y = torch.addcmul(state[1], t, state[4])
        z = torch.addcmul(state[2], t, state[5])
        dist = fam.sdf(x, y, z, list(state[9:9 + n_par])) * state[8]
        state[6] += dist
        last = it == _STEPS - 1
        if not (last or it % 3 == 2):
            continue
        hit = dist < (_LAST_EPS * pix if last else eps)
        if last:
            sel = torch.nonzero(hit & (state[6] <= state[7])).squeeze(1)
            hit_states.append(state.index_select(1, sel))
            hit_ids.append(rid[sel])
            break
        done = hit | (state[6] > state[7])
        n_done = int(done.sum())
        if n_done:
            sel = torch.nonzero(hit).squeeze(1)
            if sel.numel():
                hit_states.append(state.index_select(1, sel))
                hit_ids.append(rid[sel])
            if n_done == rid.numel():
                break
            keep = torch.nonzero(~done).squeeze(1)
            state = state.index_select(1, keep)
            rid = rid[keep]
    if not hit_ids:
        return empty
    hs = torch.cat(hit_states, 1)
    ids = torch.cat(hit_ids)
    if ids.numel() == 0:
        return empty

    # surface point, normal (tetrahedral finite differences in object coordinates)
    t = hs[6]
    q = torch.stack([hs[0] + t * hs[3], hs[1] + t * hs[4], hs[2] + t * hs[5]], 1)
    P = list(hs[9:9 + n_par])
    h = 1e-3
    grad = torch.zeros_like(q)
    for kx, ky, kz in ((1, -1, -1), (-1, -1, 1), (-1, 1, -1), (1, 1, 1)):
        v = fam.sdf(q[:, 0] + kx * h, q[:, 1] + ky * h, q[:, 2] + kz * h, P)
        grad += torch.stack([kx * v, ky * v, kz * v], 1)
    f = fi[ids]
    ob = frame_obj[f]
    nu = grad * obj["inv"][ob]  # gradient w.r.t. the stretched coordinates
    nu = (obj["tilt"][ob] @ nu[:, :, None]).squeeze(2)  # ... and w.r.t. the tilted ones
    ct, st = torch.cos(frame_yaw[f]), torch.sin(frame_yaw[f])
    n = torch.stack([ct * nu[:, 0] + st * nu[:, 2], nu[:, 1], -st * nu[:, 0] + ct * nu[:, 2]], 1)
    n = n / torch.clamp_min(n.norm(dim=1, keepdim=True), 1e-12)
    light = torch.tensor(_LIGHT, dtype=torch.float32)
    lambert = torch.clamp_min((n * light).sum(1), 0.0)

    w = _texture_weight(q, obj["texture"][ob], obj["freq"][ob], obj["axis"][ob], obj["offset"][ob])
    albedo = torch.lerp(obj["base"][ob], obj["second"][ob], w[:, None])
    colour = albedo * (_AMBIENT + _DIFFUSE * lambert)[:, None]
    return ids, colour


# ----------------------------------------------------------------------------------------------
# Backgrounds.
# ----------------------------------------------------------------------------------------------


def _background(size: int, wall_top, wall_low, floor_near, floor_far) -> np.ndarray:
    """(S, S, 3) float32: a vertical wall gradient over a floor, with a soft horizon."""
    yy = (np.arange(size) + 0.5) / size
    horizon = 0.64
    a = np.clip(yy / horizon, 0, 1)[:, None]
    wall = (1 - a) * np.asarray(wall_top) + a * np.asarray(wall_low)
    b = np.clip((yy - horizon) / (1 - horizon), 0, 1)[:, None]
    floor = (1 - b) * np.asarray(floor_far) + b * np.asarray(floor_near)
    m = np.clip((yy - horizon) / 0.03 + 0.5, 0, 1)[:, None]
    col = (1 - m) * wall + m * floor
    return np.broadcast_to(col[:, None, :], (size, size, 3)).astype(np.float32)


PLAIN_BACKGROUND = (0.5, 0.5, 0.5)  # ``background="none"``: one uniform mid grey for every room


def _room_backgrounds(spec: WorldParams, hue0: float) -> np.ndarray:
    """(n_rooms, S, S, 3) float32 backgrounds; identical across rooms unless room_backgrounds,
    one plain grey for every room with ``background="none"`` (whatever room_backgrounds says)."""
    S = spec.image_size
    background = getattr(spec, "background", "scene")
    if background == "none":
        return np.broadcast_to(np.asarray(PLAIN_BACKGROUND, dtype=np.float32), (spec.n_rooms, S, S, 3)).copy()
    if background != "scene":
        raise UserError(f"toyworld.background must be 'scene' or 'none', got {background!r}.")
    if not spec.room_backgrounds:
        grey = _background(S, (0.86, 0.86, 0.87), (0.70, 0.70, 0.72),
                           (0.42, 0.41, 0.40), (0.55, 0.54, 0.53))
        return np.stack([grey] * spec.n_rooms)
    out = []
    for r in range(spec.n_rooms):
        h = hue0 + r / spec.n_rooms
        out.append(_background(S, _hsv(h, 0.30, 0.92), _hsv(h, 0.42, 0.76),
                               _hsv(h, 0.50, 0.40), _hsv(h, 0.45, 0.55)))
    return np.stack(out)


# ----------------------------------------------------------------------------------------------
# Public entry point.
# ----------------------------------------------------------------------------------------------


def render_toyworld(spec: WorldParams, seed: int,
                    progress: Optional[Callable[[int, int], None]] = None) -> ToyWorld:
    """Render the toy world described by ``spec`` with random seed ``seed``.

    Args:
        spec: uses n_rooms, categories_per_room, objects_per_category, frames_per_object,
            image_size, room_backgrounds, hue_spread and background (split and image_format are
            handled elsewhere). ``background`` changes pixels only, never a random draw.
        seed: every random choice (families, proportions, colours, textures, phases, room hues)
            derives from it; the same spec and seed give byte-identical images.
        progress: optional ``progress(done_objects, total_objects)`` callback, called from the
            calling thread as objects finish.

    Returns:
        A :class:`ToyWorld` with N = C * objects_per_category * frames_per_object rows:
        images uint8 (N, S, S, 3), category/object/frame int64 (N,), category_names (C,),
        room_of_category int64 (C,), where C = n_rooms * categories_per_room, S = image_size.

    Raises:
        UserError: if C exceeds the number of shape families.

    Batches of frames are traced in parallel worker threads, each with single-threaded torch
    ops (the process-wide torch thread count is restored afterwards); the result does not depend
    on the number of threads.
    """
    n_cat = spec.n_rooms * spec.categories_per_room
    if n_cat > len(FAMILIES):
        raise UserError(
            f"the toy world has at most {len(FAMILIES)} categories but n_rooms × "
            f"categories_per_room = {spec.n_rooms} × {spec.categories_per_room} = {n_cat}; "
            f"lower n_rooms or categories_per_room.")
    n_obj, n_frames, S = spec.objects_per_category, spec.frames_per_object, spec.image_size
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(FAMILIES), size=n_cat, replace=False)
    names = [FAMILIES[int(i)] for i in chosen]
    hue0 = float(rng.uniform())
    room_of_category = np.arange(n_cat, dtype=np.int64) // spec.categories_per_room
    # typical hue of each family, from its own stream so other draws do not depend on it
    family_hues = np.random.default_rng([seed, 7]).uniform(size=n_cat)
    objects = [_sample_objects(rng, _FAMILY_TABLE[name], n_obj, float(family_hues[c]), spec.hue_spread)
               for c, name in enumerate(names)]
    backgrounds = torch.from_numpy(_room_backgrounds(spec, hue0))

    N = n_cat * n_obj * n_frames
    images = np.empty((N, S, S, 3), dtype=np.uint8)
    category = np.repeat(np.arange(n_cat, dtype=np.int64), n_obj * n_frames)
    obj_ids = np.repeat(np.arange(n_cat * n_obj, dtype=np.int64), n_frames)
    frame = np.tile(np.arange(n_frames, dtype=np.int64), n_cat * n_obj)

    # screen coordinates of pixel centres (row 0 is the top of the image)
    pix = 2.0 * _VIEW / S
    centres = (torch.arange(S, dtype=torch.float32) + 0.5) * pix - _VIEW
    px = centres[None, :].expand(S, S).reshape(-1).contiguous()
    py = (-centres)[:, None].expand(S, S).reshape(-1).contiguous()
    per_cat = n_obj * n_frames
    n_batches = -(-per_cat * S * S // _MAX_RAYS)  # batches per category, of about equal size
    batch = -(-per_cat // n_batches)

    def prepare(c: int) -> dict[str, Tensor]:
        torch.set_num_threads(1)
        with torch.inference_mode():
            fam = _FAMILY_TABLE[names[c]]
            o = {key: torch.as_tensor(v) for key, v in objects[c].items()}
            params, stretch = o["params"].float(), o["stretch"].float()
            tilt = o["tilt"].float()
            fit = _fit_objects(fam, params, stretch, tilt)
            yaw = (torch.arange(n_frames, dtype=torch.float64).repeat(n_obj)
                   * (2.0 * math.pi / n_frames) + o["phase"].double().repeat_interleave(n_frames))
            return {
                "params": params,
                "inv": 1.0 / (fit["scale"][:, None] * stretch),
                "tilt": tilt,
                "centre": fit["centre"],
                "lo": fit["lo"],
                "hi": fit["hi"],
                "step": (fit["scale"] * stretch.amin(1) * fam.lipschitz).float(),
                "texture": o["texture"].long(),
                "freq": o["freq"].float(),
                "axis": o["axis"].float(),
                "offset": o["offset"].float(),
                "base": o["base"].float(),
                "second": o["second"].float(),
                "frame_obj": torch.arange(n_obj).repeat_interleave(n_frames),
                "frame_yaw": yaw.float(),
            }

    def render(c: int, table: dict[str, Tensor], f0: int, f1: int) -> tuple[int, int, int]:
        torch.set_num_threads(1)
        with torch.inference_mode():
            fam = _FAMILY_TABLE[names[c]]
            bg = backgrounds[int(room_of_category[c])]
            row0 = c * per_cat
            images[row0 + f0:row0 + f1] = _render_frames(
                fam, table, table["frame_obj"][f0:f1], table["frame_yaw"][f0:f1], bg, px, py, pix)
        return c, f0, f1

    threads = torch.get_num_threads()
    workers = max(1, min(threads, os.cpu_count() or 1))
    remaining = np.full(n_cat * n_obj, n_frames)
    done_objects = 0
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            tables = list(pool.map(prepare, range(n_cat)))
            jobs = [pool.submit(render, c, tables[c], f0, min(f0 + batch, per_cat))
                    for c in range(n_cat) for f0 in range(0, per_cat, batch)]
            try:
                finished = as_completed(jobs)
                for job in finished:
                    c, f0, f1 = job.result()
                    g0, g1 = c * per_cat + f0, c * per_cat + f1
                    for ob in range(g0 // n_frames, (g1 - 1) // n_frames + 1):
                        lo, hi = max(g0, ob * n_frames), min(g1, (ob + 1) * n_frames)
                        remaining[ob] -= hi - lo
                        done_objects += int(remaining[ob] == 0)
                    if progress is not None:
                        progress(done_objects, n_cat * n_obj)
            except BaseException:
                for job in jobs:  # do not keep rendering after an error or an interrupt
                    job.cancel()
                raise
    finally:
        torch.set_num_threads(threads)

    return ToyWorld(images=images, category=category, object=obj_ids, frame=frame,
                    category_names=names, room_of_category=room_of_category,
                    objects=_object_parameters(objects))


def _render_frames(fam: _Family, table: dict[str, Tensor], frame_obj: Tensor, frame_yaw: Tensor,
                   bg: Tensor, px: Tensor, py: Tensor, pix: float) -> np.ndarray:
    """Render a batch of frames: (n_frames, S, S, 3) uint8. Primary rays through pixel centres,
    then 2×2 supersampling of the pixels on or next to a silhouette."""
    nf, S = frame_obj.shape[0], bg.shape[0]
    npx = S * S
    fi = torch.arange(nf).repeat_interleave(npx)
    sx = px.repeat(nf)
    sy = py.repeat(nf)
    ids, col = _trace(fam, table, frame_obj, frame_yaw, fi, sx, sy, pix)
    flat_bg = bg.reshape(npx, 3)
    img = flat_bg.repeat(nf, 1)
    img[ids] = col
    hit = torch.zeros(nf * npx)
    hit[ids] = 1.0

    if _ANTIALIAS:
        # silhouette pixels: a hit and a miss inside the 3×3 neighbourhood
        hm = hit.view(nf, 1, S, S)
        edge = (F.max_pool2d(hm, 3, 1, 1) > 0) & (F.max_pool2d(1.0 - hm, 3, 1, 1) > 0)
        e = torch.nonzero(edge.view(-1)).squeeze(1)
        if e.numel():
            p = e % npx
            subs = ((-0.25, -0.25), (0.25, -0.25), (-0.25, 0.25), (0.25, 0.25))
            sfi = (e // npx).repeat(4)
            ssx = torch.cat([px[p] + a * pix for a, _ in subs])
            ssy = torch.cat([py[p] + b * pix for _, b in subs])
            sids, scol = _trace(fam, table, frame_obj, frame_yaw, sfi, ssx, ssy, pix)
            acc = flat_bg[p].repeat(4, 1)
            acc[sids] = scol
            img[e] = acc.view(4, -1, 3).mean(0)
    img = torch.clamp(img * 255.0 + 0.5, 0.0, 255.0).to(torch.uint8)
    return img.view(nf, S, S, 3).numpy()
