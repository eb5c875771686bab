"""What scene objects look like: procedural part shapes, and Sweet Home 3D models when installed.

Every :class:`~sim_bridge.scene.SceneObject` category has a builder that turns the object's size
and colour into a few primitive :class:`Part` s (boxes, cylinders, spheres) in the object's local
frame: x across its width, y up from its base, z through its depth with the back at -z. This
path needs nothing but numpy and is what CI renders.

When Debian's ``sweethome3d-furniture`` package is installed (its ``.sh3f`` zip catalogs under
``/usr/share/sweethome3d/furniture``), :class:`SweetHome3DCatalog` can replace some categories
by real OBJ models from the public-domain Blend Swap CC-0 catalog. They are read lazily with the
small OBJ/MTL reader below (positions, faces, ``usemtl``, ``Kd`` and the mean colour of
``map_Kd``), normalised to the object's size, and tinted with the object's colour for objects
whose name carries a colour ("red sofa"), so instructions stay true.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from sim_bridge.scene import SceneObject

log = logging.getLogger(__name__)

#: Where Debian's sweethome3d-furniture package puts its catalogs.
SWEETHOME3D_DIR = Path("/usr/share/sweethome3d/furniture")

_WOOD = (0.55, 0.36, 0.20)
_DARK = (0.10, 0.10, 0.11)
_WHITE = (0.92, 0.92, 0.90)
_METAL = (0.70, 0.71, 0.73)
_TERRACOTTA = (0.70, 0.36, 0.22)
_GLASS = (0.35, 0.62, 0.85)
_BOOKS = [(0.75, 0.15, 0.12), (0.15, 0.30, 0.65), (0.85, 0.70, 0.20), (0.20, 0.50, 0.25),
          (0.90, 0.90, 0.85), (0.45, 0.20, 0.50), (0.85, 0.45, 0.15)]


@dataclasses.dataclass
class Part:
    """One primitive in an object's local frame.

    ``shape``: ``box`` | ``cylinder`` | ``sphere``; ``center`` and ``size`` (full extents x, y, z)
    in metres; ``axis``: the cylinder axis (``y`` upright, ``z`` facing front); ``texture``: a
    procedural texture kind from :data:`sim_bridge.scene.TEXTURE_KINDS`.
    """

    shape: str
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    color: tuple[float, float, float]
    texture: str = "plain"
    axis: str = "y"


def _box(x0, y0, z0, x1, y1, z1, color, texture="plain") -> Part:
    return Part("box", ((x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2),
                (abs(x1 - x0), abs(y1 - y0), abs(z1 - z0)), tuple(color), texture)


def _cyl(cx, y0, cz, dx, h, dz, color, texture="plain", axis="y") -> Part:
    if axis == "y":
        return Part("cylinder", (cx, y0 + h / 2, cz), (dx, h, dz), tuple(color), texture, "y")
    return Part("cylinder", (cx, y0, cz), (dx, dz, h), tuple(color), texture, "z")


def _shade(color, f: float) -> tuple[float, float, float]:
    return tuple(float(min(1.0, c * f)) for c in color)


def _legs(w, d, h, t, color, inset=0.04) -> list[Part]:
    parts = []
    for sx in (-1, 1):
        for sz in (-1, 1):
            x = sx * (w / 2 - inset - t / 2)
            z = sz * (d / 2 - inset - t / 2)
            parts.append(_box(x - t / 2, 0, z - t / 2, x + t / 2, h, z + t / 2, color, "grain"))
    return parts


def _table(w, h, d, c, top=0.04) -> list[Part]:
    return [_box(-w / 2, h - top, -d / 2, w / 2, h, d / 2, c, "grain")] + _legs(
        w, d, h - top, 0.05, _shade(c, 0.85))


def _cabinet(w, h, d, c, doors=2, drawers=0, texture="grain") -> list[Part]:
    parts = [_box(-w / 2, 0.05, -d / 2, w / 2, h, d / 2, c, texture),
             _box(-w / 2 + 0.02, 0, -d / 2 + 0.02, w / 2 - 0.02, 0.05, d / 2 - 0.04, _DARK)]
    front = d / 2
    line = _shade(c, 0.6)
    if drawers:
        step = (h - 0.05) / drawers
        for k in range(1, drawers):
            y = 0.05 + k * step
            parts.append(_box(-w / 2 + 0.02, y - 0.008, front, w / 2 - 0.02, y + 0.008,
                              front + 0.01, line))
        for k in range(drawers):
            y = 0.05 + (k + 0.5) * step
            parts.append(_box(-0.08, y - 0.012, front, 0.08, y + 0.012, front + 0.02, _METAL))
    elif doors >= 2:
        for k in range(1, doors):
            x = -w / 2 + k * w / doors
            parts.append(_box(x - 0.006, 0.07, front, x + 0.006, h - 0.03, front + 0.01, line))
            parts.append(_box(x - 0.05, h * 0.5, front, x - 0.03, h * 0.5 + 0.15, front + 0.025,
                              _METAL))
            parts.append(_box(x + 0.03, h * 0.5, front, x + 0.05, h * 0.5 + 0.15, front + 0.025,
                              _METAL))
    return parts


def _sofa(w, h, d, c, seats) -> list[Part]:
    arm = min(0.18, w * 0.15)
    back = min(0.22, d * 0.28)
    seat_y = min(0.45, h * 0.5)
    parts = [
        _box(-w / 2, 0.06, -d / 2, w / 2, seat_y - 0.1, d / 2, c, "fabric"),
        _box(-w / 2, seat_y - 0.1, -d / 2, w / 2, h, -d / 2 + back, c, "fabric"),
        _box(-w / 2, seat_y - 0.1, -d / 2, -w / 2 + arm, seat_y + 0.2, d / 2, c, "fabric"),
        _box(w / 2 - arm, seat_y - 0.1, -d / 2, w / 2, seat_y + 0.2, d / 2, c, "fabric"),
    ]
    inner = w - 2 * arm
    for k in range(seats):
        x0 = -w / 2 + arm + k * inner / seats + 0.01
        x1 = x0 + inner / seats - 0.02
        parts.append(_box(x0, seat_y - 0.1, -d / 2 + back, x1, seat_y, d / 2 - 0.02,
                          _shade(c, 1.12), "fabric"))
    parts += [_box(sx * (w / 2 - 0.06) - 0.03, 0, sz * (d / 2 - 0.06) - 0.03,
                   sx * (w / 2 - 0.06) + 0.03, 0.06, sz * (d / 2 - 0.06) + 0.03, _DARK)
              for sx in (-1, 1) for sz in (-1, 1)]
    return parts


def _chair(cx, cz, facing, c, seat=0.44, seat_h=0.46, back_h=0.45) -> list[Part]:
    """A chair centred at (cx, cz) whose back is on the ``facing`` side (+1: +z, -1: -z)."""
    s = seat / 2
    parts = [_box(cx - s, seat_h - 0.04, cz - s, cx + s, seat_h, cz + s, c, "grain")]
    for sx in (-1, 1):
        for sz in (-1, 1):
            x, z = cx + sx * (s - 0.03), cz + sz * (s - 0.03)
            parts.append(_box(x - 0.02, 0, z - 0.02, x + 0.02, seat_h - 0.04, z + 0.02, c,
                              "grain"))
    zb = cz + facing * (s - 0.02)
    parts.append(_box(cx - s, seat_h, zb - 0.02, cx + s, seat_h + back_h, zb + 0.02, c, "grain"))
    return parts


def object_parts(obj: SceneObject) -> list[Part]:
    """The primitives that draw ``obj`` in its local frame (base at y = 0, back at -z)."""
    w, h, d = obj.size
    c = tuple(obj.rgb)
    cat = obj.category
    builder = _BUILDERS.get(cat)
    if builder is None:
        return [_box(-w / 2, 0, -d / 2, w / 2, h, d / 2, c)]
    return builder(w, h, d, c)


def _bed(w, h, d, c):
    frame = _WOOD
    return [
        _box(-w / 2, 0, -d / 2, w / 2, 0.32, d / 2, frame, "grain"),
        _box(-w / 2 + 0.03, 0.32, -d / 2 + 0.06, w / 2 - 0.03, 0.52, d / 2 - 0.02, _WHITE,
             "fabric"),
        _box(-w / 2 + 0.01, 0.40, -d / 2 + 0.55, w / 2 - 0.01, 0.56, d / 2, c, "fabric"),
        _box(-w / 2 + 0.1, 0.52, -d / 2 + 0.1, -0.05, 0.64, -d / 2 + 0.45, _WHITE, "fabric"),
        _box(0.05, 0.52, -d / 2 + 0.1, w / 2 - 0.1, 0.64, -d / 2 + 0.45, _WHITE, "fabric"),
        _box(-w / 2, 0, -d / 2, w / 2, h, -d / 2 + 0.06, frame, "grain"),
    ]


def _bookshelf(w, h, d, c):
    parts = [
        _box(-w / 2, 0, -d / 2, w / 2, h, -d / 2 + 0.02, _shade(c, 0.7), "grain"),
        _box(-w / 2, 0, -d / 2, -w / 2 + 0.03, h, d / 2, c, "grain"),
        _box(w / 2 - 0.03, 0, -d / 2, w / 2, h, d / 2, c, "grain"),
        _box(-w / 2, h - 0.03, -d / 2, w / 2, h, d / 2, c, "grain"),
    ]
    shelves = max(3, int(h / 0.38))
    step = h / shelves
    k_book = 0
    for s in range(shelves):
        y = s * step
        parts.append(_box(-w / 2, y, -d / 2, w / 2, y + 0.03, d / 2, c, "grain"))
        x = -w / 2 + 0.05
        while x < w / 2 - 0.1:
            bw = 0.035 + 0.025 * ((k_book * 7) % 5) / 4
            bh = step * (0.55 + 0.3 * ((k_book * 3) % 4) / 3)
            parts.append(_box(x, y + 0.03, -d / 2 + 0.04, x + bw, y + 0.03 + bh, d / 2 - 0.05,
                              _BOOKS[k_book % len(_BOOKS)]))
            x += bw + 0.005
            k_book += 1
            if k_book % 9 == 0:
                x += 0.12
    return parts


def _plant(w, h, d, c):
    pot_h = min(0.35, 0.3 * h)
    pot = _cyl(0, 0, 0, w * 0.6, pot_h, d * 0.6, _TERRACOTTA)
    parts = [pot]
    leaf = c
    n = 3 if h > 1.0 else 1
    for k in range(n):
        f = 1.0 - 0.22 * k
        size = (w * f, (h - pot_h) / n * 1.5 * f, d * f)
        y = pot_h + (h - pot_h) * (k + 0.55) / (n + 0.1)
        y = min(y, h - size[1] / 2)
        parts.append(Part("sphere", (0.0, y, 0.0), size, _shade(leaf, 1.0 - 0.12 * k), "fabric"))
    parts.append(_cyl(0, pot_h, 0, 0.04, h * 0.5, 0.04, _WOOD))
    return parts


def _fireplace(w, h, d, c):
    return [
        _box(-w / 2, 0, -d / 2, w / 2, h - 0.08, d / 2, c, "tiles"),
        _box(-w / 2 - 0.08, h - 0.08, -d / 2, w / 2 + 0.08, h, d / 2 + 0.06, _WOOD, "grain"),
        _box(-w * 0.3, 0.1, d / 2, w * 0.3, h * 0.55, d / 2 + 0.01, _DARK),
        _box(-w * 0.2, 0.1, d / 2 + 0.01, w * 0.2, 0.25, d / 2 + 0.02, (0.95, 0.45, 0.08)),
        _box(-w / 2 - 0.05, 0, -d / 2, w / 2 + 0.05, 0.04, d / 2 + 0.08, (0.35, 0.33, 0.32)),
    ]


def _piano(w, h, d, c):
    kb_y = 0.72
    return [
        _box(-w / 2, 0, -d / 2, w / 2, h, -d / 2 + d * 0.55, c, "grain"),
        _box(-w / 2, 0, -d / 2, -w / 2 + 0.06, kb_y + 0.1, d / 2, c, "grain"),
        _box(w / 2 - 0.06, 0, -d / 2, w / 2, kb_y + 0.1, d / 2, c, "grain"),
        _box(-w / 2 + 0.06, kb_y - 0.05, -d / 2 + d * 0.55, w / 2 - 0.06, kb_y, d / 2, c,
             "grain"),
        _box(-w / 2 + 0.06, kb_y, -d / 2 + d * 0.55, w / 2 - 0.06, kb_y + 0.03, d / 2 - 0.02,
             _WHITE),
        _box(-w / 2 + 0.06, kb_y + 0.03, -d / 2 + d * 0.55, w / 2 - 0.06, kb_y + 0.045,
             -d / 2 + d * 0.55 + 0.08, _DARK),
    ]


def _fridge(w, h, d, c):
    split = h * 0.64
    return [
        _box(-w / 2, 0, -d / 2, w / 2, h, d / 2, c),
        _box(-w / 2, split - 0.008, d / 2, w / 2, split + 0.008, d / 2 + 0.005, _DARK),
        _box(w / 2 - 0.09, split + 0.08, d / 2, w / 2 - 0.06, split + 0.45, d / 2 + 0.04, _METAL),
        _box(w / 2 - 0.09, split - 0.4, d / 2, w / 2 - 0.06, split - 0.08, d / 2 + 0.04, _METAL),
    ]


def _stove(w, h, d, c):
    parts = [_box(-w / 2, 0, -d / 2, w / 2, h, d / 2, c),
             _box(-w / 2 + 0.06, 0.12, d / 2, w / 2 - 0.06, h * 0.62, d / 2 + 0.01, _DARK)]
    for sx in (-1, 1):
        for sz in (-1, 1):
            parts.append(_cyl(sx * w / 4.5, h, sz * d / 4.5, 0.16, 0.015, 0.16, _DARK))
    return parts


def _counter(w, h, d, c):
    parts = _cabinet(w, h - 0.04, d - 0.02, c, doors=max(2, int(w / 0.5)))
    parts.append(_box(-w / 2, h - 0.04, -d / 2, w / 2, h, d / 2, (0.35, 0.35, 0.37), "tiles"))
    parts.append(_box(-0.25, h, -d / 2 + 0.1, 0.25, h + 0.01, d / 2 - 0.12, _METAL))
    return parts


def _tv_stand(w, h, d, c):
    low = min(0.5, h * 0.45)
    screen_w = w * 0.8
    return _cabinet(w, low, d, c, doors=2) + [
        _box(-0.1, low, -0.08, 0.1, low + 0.06, 0.06, _DARK),
        _box(-screen_w / 2, low + 0.06, -0.03, screen_w / 2, h, 0.03, _DARK),
        _box(-screen_w / 2 + 0.02, low + 0.08, 0.03, screen_w / 2 - 0.02, h - 0.02, 0.035,
             (0.12, 0.16, 0.22)),
    ]


def _dining_table(w, h, d, c):
    top_w, top_d = w * 0.78, max(0.8, d - 0.9)
    parts = _table(top_w, h, top_d, c)
    n = max(2, int(top_w / 0.62))
    for k in range(n):
        x = -top_w / 2 + (k + 0.5) * top_w / n
        parts += _chair(x, -top_d / 2 - 0.2, -1, _shade(c, 0.8))
        parts += _chair(x, top_d / 2 + 0.2, 1, _shade(c, 0.8))
    return parts


def _desk(w, h, d, c):
    return _table(w, h, d, c) + [
        _box(w / 2 - 0.45, 0.05, -d / 2 + 0.03, w / 2 - 0.04, h - 0.04, d / 2 - 0.03,
             _shade(c, 0.9), "grain"),
        _box(-0.25, h, -d / 2 + 0.05, 0.25, h + 0.32, -d / 2 + 0.08, _DARK),
        _box(-0.04, h, -d / 2 + 0.08, 0.04, h + 0.08, -d / 2 + 0.12, _DARK),
    ]


def _office_chair(w, h, d, c):
    return [
        _cyl(0, 0, 0, w * 0.9, 0.05, d * 0.9, _DARK),
        _cyl(0, 0.05, 0, 0.06, 0.38, 0.06, _METAL),
        _box(-w * 0.4, 0.43, -d * 0.4, w * 0.4, 0.5, d * 0.4, c, "fabric"),
        _box(-w * 0.38, 0.5, -d * 0.42, w * 0.38, h, -d * 0.34, c, "fabric"),
    ]


def _toilet(w, h, d, c):
    return [
        _box(-w * 0.3, 0, -d / 2 + 0.2, w * 0.3, 0.3, d / 2 - 0.15, c),
        _cyl(0, 0.3, d * 0.1, w, 0.1, d * 0.65, c),
        _box(-w / 2, 0.3, -d / 2, w / 2, h, -d / 2 + 0.18, c),
    ]


def _bathtub(w, h, d, c):
    t = 0.06
    inner = (0.95, 0.96, 0.97)
    return [
        _box(-w / 2, 0, -d / 2, w / 2, h, -d / 2 + t, c),
        _box(-w / 2, 0, d / 2 - t, w / 2, h, d / 2, c),
        _box(-w / 2, 0, -d / 2, -w / 2 + t, h, d / 2, c),
        _box(w / 2 - t, 0, -d / 2, w / 2, h, d / 2, c),
        _box(-w / 2 + t, 0, -d / 2 + t, w / 2 - t, 0.12, d / 2 - t, inner),
        _box(w / 2 - 0.2, h, -d / 2, w / 2 - 0.16, h + 0.18, -d / 2 + 0.05, _METAL),
    ]


def _sink(w, h, d, c):
    return _cabinet(w, h - 0.05, d, c, doors=2) + [
        _box(-w / 2, h - 0.05, -d / 2, w / 2, h, d / 2, _WHITE),
        _box(-0.02, h, -d / 2 + 0.03, 0.02, h + 0.2, -d / 2 + 0.07, _METAL),
        _box(-w / 2 + 0.05, h + 0.25, -d / 2, w / 2 - 0.05, h + 0.8, -d / 2 + 0.02, (0.7, 0.78,
                                                                                      0.82)),
    ]


def _washing_machine(w, h, d, c):
    return [
        _box(-w / 2, 0, -d / 2, w / 2, h, d / 2, c),
        _cyl(0, h * 0.45, d / 2, w * 0.6, 0.02, w * 0.6, (0.25, 0.28, 0.32), axis="z"),
        _box(-w / 2 + 0.04, h - 0.12, d / 2, w / 2 - 0.04, h - 0.04, d / 2 + 0.01, (0.6, 0.6,
                                                                                    0.62)),
    ]


def _lamp(w, h, d, c):
    return [
        _cyl(0, 0, 0, w * 0.7, 0.04, d * 0.7, _DARK),
        _cyl(0, 0.04, 0, 0.035, h - 0.3, 0.035, _METAL),
        _cyl(0, h - 0.32, 0, w, 0.32, d, c, "fabric"),
    ]


def _rug(w, h, d, c):
    return [_box(-w / 2, 0.003, -d / 2, w / 2, 0.003 + max(h, 0.008), d / 2, c, "carpet"),
            _box(-w / 2 + 0.12, 0.004, -d / 2 + 0.12, w / 2 - 0.12, 0.004 + max(h, 0.008),
                 d / 2 - 0.12, _shade(c, 0.7), "carpet")]


def _painting(w, h, d, c):
    comp = tuple(1.0 - v * 0.8 for v in c)
    return [
        _box(-w / 2, 0, -d / 2, w / 2, h, d / 2, _WOOD, "grain"),
        _box(-w / 2 + 0.05, 0.05, d / 2, w / 2 - 0.05, h - 0.05, d / 2 + 0.005, c),
        _box(-w * 0.15, h * 0.25, d / 2 + 0.005, w * 0.25, h * 0.6, d / 2 + 0.008, comp),
    ]


def _mirror(w, h, d, c):
    return [_box(-w / 2, 0, -d / 2, w / 2, h, d / 2, _DARK),
            _box(-w / 2 + 0.04, 0.04, d / 2, w / 2 - 0.04, h - 0.04, d / 2 + 0.005,
                 (0.78, 0.84, 0.88))]


def _globe(w, h, d, c):
    r = min(w, d)
    return [_cyl(0, 0, 0, r * 0.7, 0.04, r * 0.7, _WOOD),
            _cyl(0, 0.04, 0, 0.04, h - r, 0.04, _WOOD),
            Part("sphere", (0.0, h - r / 2, 0.0), (r, r, r), c, "fabric")]


def _coat_rack(w, h, d, c):
    parts = [_cyl(0, 0, 0, w * 0.8, 0.04, d * 0.8, c), _cyl(0, 0.04, 0, 0.05, h - 0.04, 0.05, c)]
    for k in range(4):
        a = k * math.pi / 2
        x, z = 0.12 * math.cos(a), 0.12 * math.sin(a)
        parts.append(_box(x - 0.02, h - 0.25, z - 0.02, x + 0.02, h - 0.2, z + 0.02, c))
    parts.append(_box(0.02, h - 0.75, -0.06, 0.2, h - 0.22, 0.1, (0.25, 0.3, 0.55), "fabric"))
    return parts


def _clock(w, h, d, c):
    return [
        _box(-w / 2, 0, -d / 2, w / 2, h, d / 2, c, "grain"),
        _cyl(0, h - w * 0.55, d / 2, w * 0.7, 0.02, w * 0.7, _WHITE, axis="z"),
        _box(-w * 0.25, h * 0.2, d / 2, w * 0.25, h * 0.62, d / 2 + 0.01, (0.72, 0.6, 0.2)),
    ]


def _fish_tank(w, h, d, c):
    base = h * 0.55
    parts = _cabinet(w, base, d, _DARK, doors=2) + [
        _box(-w / 2, base, -d / 2, w / 2, h, d / 2, _GLASS),
        _box(-w / 2, h - 0.03, -d / 2, w / 2, h, d / 2, _DARK),
    ]
    for k in range(4):
        x = -w / 3 + k * w / 5
        y = base + (h - base) * (0.3 + 0.15 * (k % 3))
        parts.append(_box(x, y, d / 2, x + 0.07, y + 0.035, d / 2 + 0.005, (0.98, 0.5, 0.05)))
    return parts


def _trash_can(w, h, d, c):
    return [_cyl(0, 0, 0, w, h, d, c), _cyl(0, h, 0, w * 1.02, 0.02, d * 1.02, _DARK)]


_BUILDERS = {
    "sofa": lambda w, h, d, c: _sofa(w, h, d, c, 3 if w > 1.9 else 2),
    "armchair": lambda w, h, d, c: _sofa(w, h, d, c, 1),
    "bed": _bed,
    "coffee table": lambda w, h, d, c: _table(w, h, d, c, top=0.05),
    "kitchen table": _table,
    "console table": _table,
    "dining table": _dining_table,
    "desk": _desk,
    "bookshelf": _bookshelf,
    "wardrobe": lambda w, h, d, c: _cabinet(w, h, d, c, doors=2),
    "nightstand": lambda w, h, d, c: _cabinet(w, h, d, c, drawers=2),
    "dresser": lambda w, h, d, c: _cabinet(w, h, d, c, drawers=3),
    "sideboard": lambda w, h, d, c: _cabinet(w, h, d, c, doors=3),
    "shoe cabinet": lambda w, h, d, c: _cabinet(w, h, d, c, doors=2),
    "filing cabinet": lambda w, h, d, c: _cabinet(w, h, d, c, drawers=3, texture="plain"),
    "tv stand": _tv_stand,
    "counter": _counter,
    "stove": _stove,
    "fridge": _fridge,
    "fireplace": _fireplace,
    "piano": _piano,
    "plant": _plant,
    "floor lamp": _lamp,
    "rug": _rug,
    "painting": _painting,
    "mirror": _mirror,
    "toilet": _toilet,
    "bathtub": _bathtub,
    "sink": _sink,
    "washing machine": _washing_machine,
    "office chair": _office_chair,
    "globe": _globe,
    "coat rack": _coat_rack,
    "grandfather clock": _clock,
    "fish tank": _fish_tank,
    "trash can": _trash_can,
}


# --------------------------------------------------------------------------------------------
# Sweet Home 3D models
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class MeshModel:
    """A triangle mesh normalised to the unit box [-0.5, 0.5] x [0, 1] x [-0.5, 0.5].

    ``positions`` (T, 3, 3) triangle corners, ``colors`` (T, 3) per-triangle diffuse colour,
    ``tintable`` (T,) whether a triangle takes the object's colour (not chrome, glass or black).
    """

    name: str
    positions: np.ndarray
    colors: np.ndarray
    tintable: np.ndarray

    def simplified(self, max_triangles: int) -> MeshModel:
        """A coarser copy with at most ``max_triangles`` triangles (vertex clustering).

        Vertices are merged on a grid over the unit box, finer grids first; triangles that
        collapse or repeat are dropped. Returns ``self`` when it is small enough already.
        """
        if len(self.positions) <= max_triangles:
            return self
        flat = self.positions.reshape(-1, 3).astype(np.float64)
        lo = np.array([-0.5, 0.0, -0.5])
        best = None
        for res in (128, 96, 64, 48, 32, 24, 16, 12, 8):
            cell = np.clip(np.floor((flat - lo) * res), 0, res - 1).astype(np.int64)
            key = (cell[:, 0] * res + cell[:, 1]) * res + cell[:, 2]
            uniq, inverse = np.unique(key, return_inverse=True)
            counts = np.bincount(inverse, minlength=len(uniq)).astype(np.float64)
            reps = np.stack([np.bincount(inverse, flat[:, k], len(uniq)) for k in range(3)],
                            1) / counts[:, None]
            tri = inverse.reshape(-1, 3)
            ok = (tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2]) & (tri[:, 0] != tri[:, 2])
            sorted_tri = np.sort(tri, axis=1)
            _, first = np.unique(sorted_tri[ok], axis=0, return_index=True)
            keep = np.nonzero(ok)[0][np.sort(first)]
            best = (reps[tri[keep]], keep)
            if len(keep) <= max_triangles:
                break
        positions, keep = best
        return MeshModel(self.name, positions.astype(np.float32), self.colors[keep],
                         self.tintable[keep])


#: category -> model file stems in the Blend Swap CC-0 catalog that fit it.
SWEETHOME3D_MODELS: dict[str, tuple[str, ...]] = {
    "sofa": ("couch", "sofa2", "winchesterSofa"),
    "armchair": ("armchair2", "modernArmchair", "armchair"),
    "bed": ("bed1", "bed2", "bed3", "bedWithTexture"),
    "kitchen table": ("oakTable", "tableWithTablecloth"),
    "desk": ("desk", "lbDesk"),
    "bookshelf": ("bookcase", "verticalShelves"),
    "wardrobe": ("wardrobeWithSlidingDoors", "cupboard"),
    "fridge": ("refrigerator", "largeFridge"),
    "plant": ("plant", "decorativePlant"),
    "toilet": ("toiletsUnit",),
    "sink": ("washbasin", "modernVanity"),
    "nightstand": ("bedsideTable2",),
    "trash can": ("dustbin",),
}


def _parse_mtl(text: str, read_image) -> dict[str, tuple[tuple[float, float, float], bool]]:
    """Material name -> (diffuse colour, has a texture map) from MTL text."""
    mats: dict[str, list] = {}
    current = None
    for line in text.splitlines():
        parts = line.strip().split()
        if not parts:
            continue
        if parts[0] == "newmtl" and len(parts) > 1:
            current = parts[1]
            mats[current] = [(0.8, 0.8, 0.8), False]
        elif current is None:
            continue
        elif parts[0] == "Kd" and len(parts) >= 4:
            mats[current][0] = tuple(float(v) for v in parts[1:4])
        elif parts[0] == "map_Kd" and len(parts) > 1:
            mean = read_image(parts[-1])
            if mean is not None:
                mats[current][0] = tuple(a * b for a, b in zip(mats[current][0], mean))
                mats[current][1] = True
    return {k: (v[0], v[1]) for k, v in mats.items()}


def parse_obj(text: str, materials: dict[str, tuple[tuple[float, float, float], bool]] | None
              = None, name: str = "model") -> MeshModel:
    """Read OBJ text (``v``, ``f`` with any ``v/vt/vn`` form, ``usemtl``) into a MeshModel.

    Polygons are fanned into triangles; the model is normalised to the unit box. ValueError if
    the text has no faces.
    """
    materials = materials or {}
    verts: list[tuple[float, float, float]] = []
    tris: list[tuple[int, int, int]] = []
    tri_mat: list[str] = []
    mat = ""
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        if line.startswith("v "):
            p = line.split()
            verts.append((float(p[1]), float(p[2]), float(p[3])))
        elif line.startswith("f "):
            idx = []
            for tok in line.split()[1:]:
                i = int(tok.split("/", 1)[0])
                idx.append(i - 1 if i > 0 else len(verts) + i)
            for k in range(1, len(idx) - 1):
                tris.append((idx[0], idx[k], idx[k + 1]))
                tri_mat.append(mat)
        elif line.startswith("usemtl"):
            mat = line.split(maxsplit=1)[1].strip() if len(line.split()) > 1 else ""
    if not tris:
        raise ValueError(f"OBJ model {name} has no faces")
    v = np.asarray(verts, dtype=np.float64)
    t = np.asarray(tris, dtype=np.int64)
    if t.max() >= len(v) or t.min() < 0:
        raise ValueError(f"OBJ model {name}: a face refers to a vertex that does not exist")
    pos = v[t]
    lo, hi = pos.reshape(-1, 3).min(0), pos.reshape(-1, 3).max(0)
    span = np.maximum(hi - lo, 1e-9)
    pos = (pos - lo) / span
    pos[..., 0] -= 0.5
    pos[..., 2] -= 0.5
    names = sorted(set(tri_mat))
    lut = {m: materials.get(m, ((0.8, 0.8, 0.8), False)) for m in names}
    colors = np.array([lut[m][0] for m in tri_mat], dtype=np.float32)
    lum = colors @ np.array([0.3, 0.59, 0.11], dtype=np.float32)
    chroma = colors.max(1) - colors.min(1)
    lowered = [m.lower() for m in tri_mat]
    metallic = np.array([any(k in m for k in ("chrome", "metal", "glass", "steel", "black"))
                         for m in lowered])
    tintable = (lum > 0.15) & (chroma < 0.25) & ~metallic
    return MeshModel(name, pos.astype(np.float32), colors, tintable)


class SweetHome3DCatalog:
    """Lazy access to the Blend Swap CC-0 models of Debian's ``sweethome3d-furniture``.

    ``available`` is False when the package is not installed; then :meth:`model_for` returns
    None and the procedural parts are used.
    """

    CATALOG = "BlendSwap-CC-0.sh3f"

    def __init__(self, directory: str | Path = SWEETHOME3D_DIR, max_triangles: int = 3000):
        self.path = Path(directory) / self.CATALOG
        self.max_triangles = max_triangles  # per model, after simplification
        self._zip: zipfile.ZipFile | None = None
        self._entries: dict[str, dict[str, str]] | None = None
        self._cache: dict[str, MeshModel | None] = {}

    @property
    def available(self) -> bool:
        """Whether the catalog file exists."""
        return self.path.is_file()

    def _open(self) -> None:
        if self._zip is not None:
            return
        self._zip = zipfile.ZipFile(self.path)
        text = self._zip.read("PluginFurnitureCatalog.properties").decode("latin-1")
        entries: dict[int, dict[str, str]] = {}
        for line in text.splitlines():
            m = re.match(r"^(\w+)#(\d+)=(.*)$", line)
            if m:
                entries.setdefault(int(m.group(2)), {})[m.group(1)] = m.group(3).strip()
        self._entries = {}
        for e in entries.values():
            model = e.get("model", "")
            stem = Path(model).stem
            if stem:
                self._entries[stem] = e

    def model_for(self, obj: SceneObject, scene_id: str, index: int) -> MeshModel | None:
        """A model for ``obj`` whose footprint proportions fit it, chosen deterministically."""
        stems = SWEETHOME3D_MODELS.get(obj.category)
        if not stems or not self.available:
            return None
        self._open()
        assert self._entries is not None
        w, _, d = obj.size
        fits = []
        for stem in stems:
            e = self._entries.get(stem)
            if e is None or "modelRotation" in e:
                continue
            mw, md = float(e.get("width", 0)), float(e.get("depth", 0))
            if mw <= 0 or md <= 0:
                continue
            if abs(math.log((mw / md) / (w / d))) < math.log(1.6):
                fits.append(stem)
        if not fits:
            return None
        pick = fits[zlib.crc32(f"{scene_id}/{index}".encode()) % len(fits)]
        return self._load(pick)

    def _load(self, stem: str) -> MeshModel | None:
        if stem in self._cache:
            return self._cache[stem]
        assert self._zip is not None and self._entries is not None
        entry = self._entries[stem]
        obj_path = entry["model"].lstrip("/")
        folder = obj_path.rsplit("/", 1)[0]
        try:
            text = self._zip.read(obj_path).decode("latin-1")
            mtl_text = ""
            m = re.search(r"^mtllib\s+(.+)$", text, flags=re.M)
            if m:
                mtl_text = self._zip.read(f"{folder}/{m.group(1).strip()}").decode("latin-1")
            mats = _parse_mtl(mtl_text, lambda name: self._mean_color(f"{folder}/{name}"))
            model = parse_obj(text, mats, name=stem)
        except (KeyError, ValueError, OSError) as exc:
            log.warning("Sweet Home 3D model %s could not be read (%s); using shapes", stem, exc)
            model = None
        if model is not None and len(model.positions) > self.max_triangles:
            before = len(model.positions)
            model = model.simplified(self.max_triangles)
            log.debug("Sweet Home 3D model %s simplified from %d to %d triangles", stem, before,
                      len(model.positions))
        self._cache[stem] = model
        return model

    def _mean_color(self, member: str) -> tuple[float, float, float] | None:
        from PIL import Image

        assert self._zip is not None
        try:
            data = self._zip.read(member)
        except KeyError:
            return None
        with Image.open(io.BytesIO(data)) as img:
            small = np.asarray(img.convert("RGB").resize((16, 16)), dtype=np.float32) / 255.0
        return tuple(float(v) for v in small.reshape(-1, 3).mean(0))
