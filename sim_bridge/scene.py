"""Procedural furnished apartments for the embedded simulator, as small JSON-serialisable specs.

A :class:`SceneSpec` is everything the embedded backend needs to know about a scene: rooms (type,
name, floor rectangle, materials), doorways, wall boxes, furniture (category, name, colour, base
position, size, yaw), one light per room, and the landmarks an instruction can mention ("the red
sofa", "the piano"). It is generated deterministically from a seed by :func:`generate_apartment`
and is a few kilobytes of JSON (:meth:`SceneSpec.save` / :meth:`SceneSpec.load`).

Coordinates are habitat's: metres, y up, floor at y = 0. A room ``rect`` is ``[x0, z0, x1, z1]``
measured on the wall centre lines (walls are :data:`WALL_THICKNESS` thick), so rooms tile the
apartment. Object ``position`` is the centre of the object's footprint at its base height, ``size``
is ``[width (local x), height, depth (local z)]`` and ``yaw`` rotates the object about +y (the
object's back is its local -z side, which faces the wall it stands against).

Scene ids: ``embedded:apt_00042`` is the apartment generated from seed 42 (:func:`load_scene`);
a path ending in ``.json`` (absolute, or relative to the scenes directory), optionally prefixed
with ``embedded:``, is loaded from that file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SCENE_PREFIX = "embedded:"
SCENE_VERSION = 1
WALL_THICKNESS = 0.1
CEILING_HEIGHT = 2.6
DOOR_HEIGHT = 2.1
_GRID = 0.05  # floorplan coordinates are multiples of this
_SEED_ID = re.compile(r"^apt_(\d+)$")

#: Named colours objects can have (linear-ish RGB in 0..1); names are what instructions say.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.78, 0.12, 0.10),
    "blue": (0.13, 0.28, 0.75),
    "green": (0.15, 0.55, 0.20),
    "yellow": (0.92, 0.78, 0.12),
    "orange": (0.92, 0.45, 0.08),
    "purple": (0.45, 0.18, 0.60),
    "pink": (0.92, 0.50, 0.65),
    "teal": (0.08, 0.55, 0.55),
    "white": (0.90, 0.90, 0.88),
    "black": (0.08, 0.08, 0.09),
    "grey": (0.50, 0.50, 0.52),
    "brown": (0.45, 0.28, 0.15),
    "beige": (0.85, 0.76, 0.60),
    "silver": (0.72, 0.73, 0.75),
    "dark green": (0.10, 0.32, 0.14),
}

ROOM_TYPES: tuple[str, ...] = (
    "living room", "kitchen", "bedroom", "bathroom", "hallway", "office", "dining room",
)

#: Texture kinds the renderer generates procedurally (see ``sim_bridge.renderer``).
TEXTURE_KINDS: tuple[str, ...] = ("plain", "wood", "grain", "tiles", "carpet", "plaster", "fabric")


# --------------------------------------------------------------------------------------------
# The spec
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Material:
    """A surface: procedural texture ``kind`` (one of :data:`TEXTURE_KINDS`) tinted by ``color``."""

    kind: str
    color: list[float]


@dataclasses.dataclass
class Room:
    """One room: a rectangle ``[x0, z0, x1, z1]`` on the wall centre lines, a type and a name."""

    name: str
    type: str
    rect: list[float]
    floor: Material
    wall: Material

    def contains(self, x: float, z: float, margin: float = 0.0) -> bool:
        """Whether (x, z) lies inside the rectangle shrunk by ``margin`` metres."""
        x0, z0, x1, z1 = self.rect
        return x0 + margin <= x <= x1 - margin and z0 + margin <= z <= z1 - margin

    @property
    def center(self) -> tuple[float, float]:
        """Centre (x, z) of the room."""
        x0, z0, x1, z1 = self.rect
        return (0.5 * (x0 + x1), 0.5 * (z0 + z1))

    @property
    def area(self) -> float:
        """Floor area in square metres (to the wall centre lines)."""
        x0, z0, x1, z1 = self.rect
        return (x1 - x0) * (z1 - z0)

    @property
    def interior(self) -> tuple[float, float, float, float]:
        """The floor rectangle inside the walls' faces."""
        h = WALL_THICKNESS / 2
        x0, z0, x1, z1 = self.rect
        return (x0 + h, z0 + h, x1 - h, z1 - h)


@dataclasses.dataclass
class Door:
    """A doorway (an opening, no door leaf) between two rooms.

    ``axis`` is the direction the wall runs in: ``"x"`` for a wall along x (at z = center[1]),
    ``"z"`` for a wall along z (at x = center[0]). ``width`` is the opening in metres.
    """

    rooms: list[str]
    center: list[float]
    width: float
    axis: str


@dataclasses.dataclass
class Wall:
    """An axis-aligned wall box: floor rectangle ``[x0, z0, x1, z1]`` from height y0 to y1."""

    rect: list[float]
    y0: float
    y1: float


@dataclasses.dataclass
class SceneObject:
    """A piece of furniture or a landmark.

    ``position`` is the footprint centre at the base height ``position[1]`` (0 = on the floor);
    ``size`` is [width (local x), height, depth (local z)]; ``shape`` is the footprint used for
    navigation (``box`` or ``cylinder``); ``color`` names an entry of :data:`COLORS` and ``rgb``
    is its value. ``name`` is what an instruction calls it ("red sofa").
    """

    category: str
    name: str
    color: str
    rgb: list[float]
    position: list[float]
    size: list[float]
    yaw: float
    room: str
    shape: str = "box"
    landmark: bool = False

    @property
    def is_floor_item(self) -> bool:
        """Flat items (rugs) that the agent walks over."""
        return self.size[1] < 0.05 and self.position[1] < 0.05

    def footprint_half_extents(self) -> tuple[float, float]:
        """Half extents (x, z) of the axis-aligned box around the rotated footprint."""
        hx, hz = self.size[0] / 2, self.size[2] / 2
        c, s = abs(math.cos(self.yaw)), abs(math.sin(self.yaw))
        return (c * hx + s * hz, s * hx + c * hz)


@dataclasses.dataclass
class Landmark:
    """A distinctive object an instruction can mention, with the room it is in."""

    name: str
    category: str
    room: str
    position: list[float]
    object_index: int


@dataclasses.dataclass
class Light:
    """A point light (one per room, near the ceiling); ``color`` includes the intensity."""

    position: list[float]
    color: list[float]
    room: str


@dataclasses.dataclass
class SceneSpec:
    """A whole apartment: rooms, doorways, walls, furniture, lights and landmarks.

    ``bounds`` is the outer rectangle ``[x0, z0, x1, z1]`` on the exterior walls' centre lines.
    """

    scene_id: str
    seed: int
    bounds: list[float]
    rooms: list[Room]
    doors: list[Door]
    walls: list[Wall]
    objects: list[SceneObject]
    lights: list[Light]
    landmarks: list[Landmark]
    ceiling_height: float = CEILING_HEIGHT
    version: int = SCENE_VERSION

    # ---- queries ---------------------------------------------------------------------------

    def room_at(self, x: float, z: float) -> Room | None:
        """The room whose rectangle contains (x, z), or None outside the apartment."""
        for room in self.rooms:
            if room.contains(x, z):
                return room
        return None

    def room(self, name: str) -> Room:
        """The room called ``name``; KeyError listing the names otherwise."""
        for room in self.rooms:
            if room.name == name:
                return room
        raise KeyError(f"scene {self.scene_id} has no room {name!r}; rooms: "
                       f"{[r.name for r in self.rooms]}")

    def landmark(self, name: str) -> Landmark:
        """The landmark called ``name``; KeyError listing the names otherwise."""
        for lm in self.landmarks:
            if lm.name == name:
                return lm
        raise KeyError(f"scene {self.scene_id} has no landmark {name!r}; landmarks: "
                       f"{[lm.name for lm in self.landmarks]}")

    def obstacles(self, agent_height: float = 1.5) -> Footprints:
        """The 2-D footprints that block an agent of ``agent_height`` (walls and furniture)."""
        return footprints_of(self.walls, self.objects, agent_height)

    # ---- JSON ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = None) -> str:
        """The spec as JSON text."""
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str | Path) -> Path:
        """Write the spec to ``path`` as JSON; return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(indent=1))
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> SceneSpec:
        """Build a spec from :meth:`to_dict` output; ValueError naming the bad field otherwise."""
        return _spec_from_dict(data, source)

    @classmethod
    def load(cls, path: str | Path) -> SceneSpec:
        """Read a spec written by :meth:`save`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"scene file {path} does not exist") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"scene file {path} is not valid JSON: {exc}") from None
        return _spec_from_dict(data, str(path))


def _need(data: dict, key: str, where: str) -> Any:
    if not isinstance(data, dict) or key not in data:
        raise ValueError(f"{where}: missing field {key!r}")
    return data[key]


def _numbers(value: Any, n: int, where: str) -> list[float]:
    if (not isinstance(value, (list, tuple)) or len(value) != n
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)):
        raise ValueError(f"{where}: expected {n} finite numbers, got {value!r}")
    return [float(v) for v in value]


def _spec_from_dict(data: dict[str, Any], source: str) -> SceneSpec:
    where = f"scene {source}"
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
    version = data.get("version", SCENE_VERSION)
    if version != SCENE_VERSION:
        raise ValueError(f"{where}: field version is {version!r}; this code reads {SCENE_VERSION}")

    def material(d: Any, w: str) -> Material:
        kind = _need(d, "kind", w)
        if kind not in TEXTURE_KINDS:
            raise ValueError(f"{w}.kind: {kind!r} is not one of {list(TEXTURE_KINDS)}")
        return Material(kind, _numbers(_need(d, "color", w), 3, f"{w}.color"))

    rooms = []
    for i, r in enumerate(_need(data, "rooms", where)):
        w = f"{where}: rooms[{i}]"
        rect = _numbers(_need(r, "rect", w), 4, f"{w}.rect")
        if rect[2] <= rect[0] or rect[3] <= rect[1]:
            raise ValueError(f"{w}.rect: {rect} is empty (need x0 < x1 and z0 < z1)")
        rooms.append(Room(str(_need(r, "name", w)), str(_need(r, "type", w)), rect,
                          material(_need(r, "floor", w), f"{w}.floor"),
                          material(_need(r, "wall", w), f"{w}.wall")))
    if not rooms:
        raise ValueError(f"{where}: field rooms is empty")
    doors = []
    for i, d in enumerate(data.get("doors", [])):
        w = f"{where}: doors[{i}]"
        axis = _need(d, "axis", w)
        if axis not in ("x", "z"):
            raise ValueError(f"{w}.axis: {axis!r} is not 'x' or 'z'")
        doors.append(Door([str(n) for n in _need(d, "rooms", w)],
                          _numbers(_need(d, "center", w), 2, f"{w}.center"),
                          float(_need(d, "width", w)), axis))
    walls = []
    for i, d in enumerate(_need(data, "walls", where)):
        w = f"{where}: walls[{i}]"
        walls.append(Wall(_numbers(_need(d, "rect", w), 4, f"{w}.rect"),
                          float(_need(d, "y0", w)), float(_need(d, "y1", w))))
    objects = []
    for i, o in enumerate(data.get("objects", [])):
        w = f"{where}: objects[{i}]"
        shape = o.get("shape", "box")
        if shape not in ("box", "cylinder"):
            raise ValueError(f"{w}.shape: {shape!r} is not 'box' or 'cylinder'")
        size = _numbers(_need(o, "size", w), 3, f"{w}.size")
        if min(size) <= 0:
            raise ValueError(f"{w}.size: {size} has a non-positive entry")
        objects.append(SceneObject(
            str(_need(o, "category", w)), str(_need(o, "name", w)), str(o.get("color", "grey")),
            _numbers(_need(o, "rgb", w), 3, f"{w}.rgb"),
            _numbers(_need(o, "position", w), 3, f"{w}.position"), size,
            float(o.get("yaw", 0.0)), str(o.get("room", "")), shape, bool(o.get("landmark"))))
    lights = [Light(_numbers(_need(d, "position", f"{where}: lights[{i}]"), 3,
                             f"{where}: lights[{i}].position"),
                    _numbers(_need(d, "color", f"{where}: lights[{i}]"), 3,
                             f"{where}: lights[{i}].color"), str(d.get("room", "")))
              for i, d in enumerate(data.get("lights", []))]
    landmarks = []
    for i, d in enumerate(data.get("landmarks", [])):
        w = f"{where}: landmarks[{i}]"
        idx = int(_need(d, "object_index", w))
        if not 0 <= idx < len(objects):
            raise ValueError(f"{w}.object_index: {idx} is not an index into objects "
                             f"(0..{len(objects) - 1})")
        landmarks.append(Landmark(str(_need(d, "name", w)), str(_need(d, "category", w)),
                                  str(_need(d, "room", w)),
                                  _numbers(_need(d, "position", w), 3, f"{w}.position"), idx))
    return SceneSpec(
        scene_id=str(_need(data, "scene_id", where)), seed=int(data.get("seed", -1)),
        bounds=_numbers(_need(data, "bounds", where), 4, f"{where}: bounds"),
        rooms=rooms, doors=doors, walls=walls, objects=objects, lights=lights,
        landmarks=landmarks, ceiling_height=float(data.get("ceiling_height", CEILING_HEIGHT)),
        version=SCENE_VERSION)


# --------------------------------------------------------------------------------------------
# Scene ids
# --------------------------------------------------------------------------------------------


def scene_id_for_seed(seed: int) -> str:
    """The scene id of the apartment generated from ``seed`` (``embedded:apt_00042``)."""
    if seed < 0:
        raise ValueError(f"apartment seed must be >= 0, got {seed}")
    return f"{SCENE_PREFIX}apt_{seed:05d}"


def is_embedded_scene_id(scene_id: str) -> bool:
    """Whether ``scene_id`` names an embedded scene (a seed id or a SceneSpec JSON file)."""
    body = scene_id[len(SCENE_PREFIX):] if scene_id.startswith(SCENE_PREFIX) else scene_id
    return bool(_SEED_ID.match(body)) or body.endswith(".json")


def load_scene(scene_id: str, scenes_dir: str | Path | None = None) -> SceneSpec:
    """The SceneSpec for ``scene_id``: regenerated from its seed or read from a JSON file.

    ``embedded:apt_00042`` (or ``apt_00042``) is seed 42. ``something.json`` (optionally with the
    ``embedded:`` prefix) is a file, relative to ``scenes_dir`` unless absolute. Anything else
    raises ValueError (e.g. an ``mp3d/...glb`` id belongs to the habitat backend).
    """
    body = scene_id[len(SCENE_PREFIX):] if scene_id.startswith(SCENE_PREFIX) else scene_id
    match = _SEED_ID.match(body)
    if match:
        return generate_apartment(int(match.group(1)))
    if body.endswith(".json"):
        path = Path(body)
        if not path.is_absolute() and scenes_dir is not None:
            path = Path(scenes_dir) / path
        spec = SceneSpec.load(path)
        return spec
    raise ValueError(
        f"unknown embedded scene id {scene_id!r}: expected 'embedded:apt_<seed>' (e.g. "
        f"'embedded:apt_00042') or a SceneSpec '.json' path; habitat scenes (.glb) need "
        f"backend='habitat'")


# --------------------------------------------------------------------------------------------
# Footprints: the 2-D obstacle geometry navigation uses
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Footprints:
    """Obstacle footprints in the floor plane: rotated rectangles and circles (x, z)."""

    rect_center: np.ndarray  # (N, 2)
    rect_half: np.ndarray  # (N, 2)
    rect_cos: np.ndarray  # (N,)
    rect_sin: np.ndarray  # (N,)
    circle_center: np.ndarray  # (M, 2)
    circle_radius: np.ndarray  # (M,)

    def signed_distance(self, points: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """Signed distance (metres) from each (x, z) point to the nearest obstacle (< 0 inside)."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        out = np.full(len(pts), np.inf)
        for start in range(0, len(pts), chunk):
            p = pts[start:start + chunk]
            best = np.full(len(p), np.inf)
            if len(self.rect_center):
                d = p[:, None, :] - self.rect_center[None, :, :]
                # world -> local: inverse of the yaw rotation x' = c x + s z, z' = -s x + c z
                lx = self.rect_cos * d[..., 0] - self.rect_sin * d[..., 1]
                lz = self.rect_sin * d[..., 0] + self.rect_cos * d[..., 1]
                qx = np.abs(lx) - self.rect_half[:, 0]
                qz = np.abs(lz) - self.rect_half[:, 1]
                outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qz, 0.0))
                inside = np.minimum(np.maximum(qx, qz), 0.0)
                best = np.minimum(best, (outside + inside).min(axis=1))
            if len(self.circle_center):
                d = p[:, None, :] - self.circle_center[None, :, :]
                best = np.minimum(best, (np.hypot(d[..., 0], d[..., 1])
                                         - self.circle_radius).min(axis=1))
            out[start:start + chunk] = best
        return out

    def subset_near(self, x: float, z: float, radius: float) -> Footprints:
        """The footprints whose bounding circle comes within ``radius`` of (x, z)."""
        rr = np.hypot(self.rect_half[:, 0], self.rect_half[:, 1])
        rmask = np.hypot(self.rect_center[:, 0] - x, self.rect_center[:, 1] - z) <= radius + rr
        cmask = (np.hypot(self.circle_center[:, 0] - x, self.circle_center[:, 1] - z)
                 <= radius + self.circle_radius)
        return Footprints(self.rect_center[rmask], self.rect_half[rmask], self.rect_cos[rmask],
                          self.rect_sin[rmask], self.circle_center[cmask],
                          self.circle_radius[cmask])


def footprints_of(walls: list[Wall], objects: list[SceneObject],
                  agent_height: float = 1.5) -> Footprints:
    """Footprints of the walls and objects that intersect the agent's body (0.05 m..height)."""
    centers, halves, cos, sin, ccent, crad = [], [], [], [], [], []
    for w in walls:
        if w.y0 >= agent_height or w.y1 <= 0.05:
            continue
        x0, z0, x1, z1 = w.rect
        centers.append(((x0 + x1) / 2, (z0 + z1) / 2))
        halves.append(((x1 - x0) / 2, (z1 - z0) / 2))
        cos.append(1.0)
        sin.append(0.0)
    for o in objects:
        base, top = o.position[1], o.position[1] + o.size[1]
        if base >= agent_height or top <= 0.05:
            continue
        if o.shape == "cylinder":
            ccent.append((o.position[0], o.position[2]))
            crad.append(max(o.size[0], o.size[2]) / 2)
        else:
            centers.append((o.position[0], o.position[2]))
            halves.append((o.size[0] / 2, o.size[2] / 2))
            cos.append(math.cos(o.yaw))
            sin.append(math.sin(o.yaw))
    return Footprints(np.array(centers, float).reshape(-1, 2),
                      np.array(halves, float).reshape(-1, 2), np.array(cos, float),
                      np.array(sin, float),
                      np.array(ccent, float).reshape(-1, 2), np.array(crad, float))


# --------------------------------------------------------------------------------------------
# Generation: floorplan
# --------------------------------------------------------------------------------------------


def _q(v: float) -> float:
    """Round to the floorplan grid."""
    return round(round(v / _GRID) * _GRID, 4)


def _split_strip(rng: np.random.Generator, a: float, b: float, n: int,
                 min_len: float) -> list[float]:
    """Cut [a, b] into ``n`` pieces at least ``min_len`` long; return the n+1 cut points."""
    length = b - a
    weights = rng.uniform(0.7, 1.3, n)
    spare = length - n * min_len
    pieces = min_len + spare * weights / weights.sum()
    cuts = [a]
    for p in pieces[:-1]:
        cuts.append(_q(cuts[-1] + p))
    cuts.append(b)
    return cuts


def _floorplan_hallway(rng: np.random.Generator) -> tuple[list[list[float]], int]:
    """A hallway along x with 2-3 rooms on each side. Returns (rects, hallway index)."""
    width = _q(rng.uniform(10.0, 14.5))
    depth = _q(rng.uniform(7.6, 10.0))
    hall = _q(rng.uniform(1.35, 1.8))
    top = _q(rng.uniform(0.4, 0.6) * (depth - hall))
    top = min(max(top, 2.6), depth - hall - 2.6)
    rects = [[0.0, top, width, _q(top + hall)]]
    for z0, z1 in ((0.0, top), (_q(top + hall), depth)):
        n = int(rng.integers(2, 4)) if width >= 8.4 else 2
        cuts = _split_strip(rng, 0.0, width, n, 2.6)
        rects += [[cuts[i], z0, cuts[i + 1], z1] for i in range(n)]
    return rects, 0


def _floorplan_bsp(rng: np.random.Generator) -> tuple[list[list[float]], int]:
    """Recursive splits of a rectangle into 4-6 rooms. Returns (rects, -1)."""
    width = _q(rng.uniform(8.5, 12.5))
    depth = _q(rng.uniform(7.0, 9.5))
    target = int(rng.integers(4, 7))
    rects = [[0.0, 0.0, width, depth]]
    min_side = 2.5
    for _ in range(40):
        if len(rects) >= target:
            break
        rects.sort(key=lambda r: -(r[2] - r[0]) * (r[3] - r[1]))
        for i, (x0, z0, x1, z1) in enumerate(rects):
            w, d = x1 - x0, z1 - z0
            along_x = w >= d if abs(w - d) > 0.5 else bool(rng.integers(0, 2))
            length = w if along_x else d
            if length < 2 * min_side:
                along_x = not along_x
                length = w if along_x else d
                if length < 2 * min_side:
                    continue
            cut = _q((x0 if along_x else z0) + length * rng.uniform(0.38, 0.62))
            lo = (x0 if along_x else z0) + min_side
            hi = (x1 if along_x else z1) - min_side
            cut = min(max(cut, _q(lo + 0.0249)), _q(hi - 0.0249))
            if along_x:
                rects[i:i + 1] = [[x0, z0, cut, z1], [cut, z0, x1, z1]]
            else:
                rects[i:i + 1] = [[x0, z0, x1, cut], [x0, cut, x1, z1]]
            break
        else:
            break
    return rects, -1


def _shared_edge(a: list[float], b: list[float]) -> tuple[str, float, float, float] | None:
    """The wall two rectangles share: (axis, line coordinate, lo, hi) or None.

    ``axis`` is the direction the shared wall runs in (``"z"``: a wall at x = line).
    """
    eps = 1e-6
    for line, other in ((a[2], b[0]), (a[0], b[2])):
        if abs(line - other) < eps:
            lo, hi = max(a[1], b[1]), min(a[3], b[3])
            if hi - lo > eps:
                return "z", line, lo, hi
    for line, other in ((a[3], b[1]), (a[1], b[3])):
        if abs(line - other) < eps:
            lo, hi = max(a[0], b[0]), min(a[2], b[2])
            if hi - lo > eps:
                return "x", line, lo, hi
    return None


def _make_door(rng: np.random.Generator, a: Room, b: Room) -> Door | None:
    """A doorway in the wall that rooms ``a`` and ``b`` share, if it is long enough."""
    edge = _shared_edge(a.rect, b.rect)
    if edge is None:
        return None
    axis, line, lo, hi = edge
    width = _q(rng.uniform(0.9, 1.1))
    margin = 0.35
    if hi - lo < width + 2 * margin:
        return None
    c = _q(rng.uniform(lo + margin + width / 2, hi - margin - width / 2))
    center = [line, c] if axis == "z" else [c, line]
    return Door([a.name, b.name], center, width, axis)


def _build_walls(rooms: list[Room], doors: list[Door], ceiling: float) -> list[Wall]:
    """Wall boxes along every room edge, with gaps (and lintels) at the doorways."""
    t = WALL_THICKNESS
    lines: dict[tuple[str, float], list[tuple[float, float]]] = {}
    for r in rooms:
        x0, z0, x1, z1 = r.rect
        for key, seg in ((("x", z0), (x0, x1)), (("x", z1), (x0, x1)),
                         (("z", x0), (z0, z1)), (("z", x1), (z0, z1))):
            lines.setdefault((key[0], round(key[1], 4)), []).append(seg)
    walls: list[Wall] = []
    for (axis, line), segs in sorted(lines.items()):
        segs.sort()
        merged: list[list[float]] = []
        for lo, hi in segs:
            if merged and lo <= merged[-1][1] + 1e-6:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        gaps = sorted(
            (d.center[1] if axis == "z" else d.center[0], d.width) for d in doors
            if d.axis == axis and abs((d.center[0] if axis == "z" else d.center[1]) - line) < 1e-6)
        for lo, hi in merged:
            pieces = [[lo - t / 2, hi + t / 2]]
            for c, w in gaps:
                g0, g1 = c - w / 2, c + w / 2
                new = []
                for p0, p1 in pieces:
                    if g1 <= p0 or g0 >= p1:
                        new.append([p0, p1])
                        continue
                    if g0 > p0:
                        new.append([p0, g0])
                    if g1 < p1:
                        new.append([g1, p1])
                    if g0 >= lo and g1 <= hi:
                        walls.append(_wall_box(axis, line, g0, g1, DOOR_HEIGHT, ceiling))
                pieces = new
            walls += [_wall_box(axis, line, p0, p1, 0.0, ceiling) for p0, p1 in pieces
                      if p1 - p0 > 1e-6]
    return walls


def _wall_box(axis: str, line: float, a: float, b: float, y0: float, y1: float) -> Wall:
    h = WALL_THICKNESS / 2
    if axis == "x":
        return Wall([round(a, 4), round(line - h, 4), round(b, 4), round(line + h, 4)], y0, y1)
    return Wall([round(line - h, 4), round(a, 4), round(line + h, 4), round(b, 4)], y0, y1)


# --------------------------------------------------------------------------------------------
# Generation: materials and furniture
# --------------------------------------------------------------------------------------------

_WOOD_TINTS = [(0.78, 0.58, 0.38), (0.55, 0.36, 0.22), (0.88, 0.75, 0.58), (0.66, 0.45, 0.30)]
_TILE_TINTS = [(0.92, 0.92, 0.90), (0.70, 0.72, 0.74), (0.80, 0.50, 0.36), (0.62, 0.72, 0.80),
               (0.86, 0.80, 0.68)]
_CARPET_TINTS = [(0.78, 0.72, 0.62), (0.55, 0.57, 0.62), (0.45, 0.52, 0.66), (0.50, 0.60, 0.48)]
_PAINTS = [(0.93, 0.92, 0.88), (0.95, 0.90, 0.78), (0.78, 0.86, 0.93), (0.80, 0.90, 0.80),
           (0.95, 0.92, 0.70), (0.95, 0.82, 0.82), (0.82, 0.82, 0.84), (0.88, 0.84, 0.94)]


def _room_materials(rng: np.random.Generator, rtype: str) -> tuple[Material, Material]:
    def pick(options):
        return [float(v) for v in options[int(rng.integers(len(options)))]]

    if rtype in ("kitchen", "bathroom"):
        floor = Material("tiles", pick(_TILE_TINTS))
    elif rtype == "bedroom" and rng.random() < 0.5:
        floor = Material("carpet", pick(_CARPET_TINTS))
    else:
        floor = Material("wood", pick(_WOOD_TINTS))
    return floor, Material("plaster", pick(_PAINTS))


@dataclasses.dataclass(frozen=True)
class _Template:
    """How to make one kind of object: size ranges, placement rule, colours."""

    category: str
    width: tuple[float, float]
    height: tuple[float, float]
    depth: tuple[float, float]
    placement: str  # wall | corner | center | floor | wallmount
    colors: tuple[str, ...]
    prob: float = 1.0
    landmark: bool = False
    shape: str = "box"
    name: str | None = None  # fixed name; default "<colour> <category>"
    elevation: float = 0.0


_BRIGHT = ("red", "blue", "green", "yellow", "orange", "purple", "teal", "pink")
_WOODS = ("brown", "beige", "white", "black")

_ROOM_TEMPLATES: dict[str, list[_Template]] = {
    "living room": [
        _Template("sofa", (1.8, 2.3), (0.8, 0.9), (0.85, 0.95), "wall", _BRIGHT + ("grey",),
                  landmark=True),
        _Template("fireplace", (1.3, 1.6), (1.1, 1.3), (0.45, 0.55), "wall", ("white", "red"),
                  prob=0.45, landmark=True, name="fireplace"),
        _Template("piano", (1.4, 1.55), (1.2, 1.3), (0.55, 0.62), "wall", ("black", "brown"),
                  prob=0.4, landmark=True, name="piano"),
        _Template("armchair", (0.8, 0.95), (0.85, 0.95), (0.8, 0.9), "corner", _BRIGHT,
                  landmark=True),
        _Template("tv stand", (1.4, 1.8), (1.05, 1.15), (0.4, 0.5), "wall", _WOODS),
        _Template("coffee table", (1.0, 1.25), (0.4, 0.48), (0.55, 0.7), "center", _WOODS),
        _Template("plant", (0.5, 0.65), (1.6, 1.95), (0.5, 0.65), "corner", ("green",),
                  landmark=True, shape="cylinder", name="tall plant"),
        _Template("bookshelf", (0.9, 1.3), (1.8, 2.0), (0.32, 0.4), "wall", _WOODS + ("blue",),
                  prob=0.6),
        _Template("floor lamp", (0.35, 0.45), (1.5, 1.7), (0.35, 0.45), "corner",
                  ("white", "yellow"), prob=0.6, shape="cylinder"),
        _Template("rug", (1.8, 2.6), (0.01, 0.01), (1.3, 1.8), "floor", _BRIGHT, prob=0.6),
        _Template("painting", (0.7, 1.1), (0.5, 0.8), (0.04, 0.04), "wallmount", _BRIGHT,
                  landmark=True, elevation=1.3),
    ],
    "kitchen": [
        _Template("fridge", (0.65, 0.8), (1.8, 1.95), (0.65, 0.7), "wall",
                  ("white", "blue", "red", "silver", "yellow"), landmark=True),
        _Template("counter", (1.8, 2.6), (0.9, 0.92), (0.6, 0.62), "wall", ("white", "grey",
                                                                                  "beige")),
        _Template("stove", (0.6, 0.62), (0.9, 0.92), (0.6, 0.62), "wall", ("black", "silver",
                                                                                  "white")),
        _Template("kitchen table", (1.1, 1.4), (0.74, 0.78), (0.75, 0.9), "center", _WOODS),
        _Template("plant", (0.3, 0.4), (0.6, 0.9), (0.3, 0.4), "corner", ("green",), prob=0.5,
                  shape="cylinder", name="small plant"),
        _Template("trash can", (0.3, 0.36), (0.6, 0.7), (0.3, 0.36), "corner",
                  ("silver", "blue", "green"), prob=0.6, shape="cylinder"),
    ],
    "bedroom": [
        _Template("bed", (1.4, 1.8), (0.95, 1.1), (2.0, 2.15), "wall", _BRIGHT + ("white",),
                  landmark=True),
        _Template("wardrobe", (1.0, 1.6), (1.9, 2.1), (0.55, 0.62), "wall", _WOODS, prob=0.85),
        _Template("nightstand", (0.4, 0.5), (0.5, 0.6), (0.38, 0.45), "wall", _WOODS),
        _Template("desk", (1.0, 1.3), (0.74, 0.76), (0.55, 0.65), "wall", _WOODS, prob=0.4),
        _Template("dresser", (0.9, 1.2), (0.8, 0.95), (0.45, 0.5), "wall", _WOODS, prob=0.5),
        _Template("rug", (1.4, 2.0), (0.01, 0.01), (1.0, 1.4), "floor", _BRIGHT, prob=0.4),
        _Template("painting", (0.6, 1.0), (0.45, 0.7), (0.04, 0.04), "wallmount", _BRIGHT,
                  prob=0.6, landmark=True, elevation=1.35),
        _Template("plant", (0.35, 0.45), (0.9, 1.3), (0.35, 0.45), "corner", ("green",),
                  prob=0.4, shape="cylinder", name="potted plant"),
    ],
    "bathroom": [
        _Template("bathtub", (1.6, 1.75), (0.55, 0.6), (0.72, 0.8), "wall", ("white", "blue",
                                                                                    "pink"),
                  landmark=True),
        _Template("toilet", (0.4, 0.45), (0.75, 0.82), (0.65, 0.7), "wall", ("white",),
                  name="toilet"),
        _Template("sink", (0.6, 0.8), (0.85, 0.9), (0.45, 0.5), "wall", ("white", "grey")),
        _Template("washing machine", (0.6, 0.6), (0.85, 0.85), (0.6, 0.6), "wall",
                  ("white",), prob=0.5, name="washing machine", landmark=True),
    ],
    "office": [
        _Template("desk", (1.3, 1.6), (0.74, 0.76), (0.7, 0.8), "wall", _WOODS + ("white",),
                  landmark=False),
        _Template("bookshelf", (0.9, 1.4), (1.8, 2.0), (0.32, 0.4), "wall",
                  ("blue", "red", "green", "yellow", "brown"), landmark=True),
        _Template("office chair", (0.55, 0.62), (0.95, 1.05), (0.55, 0.62), "center",
                  ("black", "blue", "red"), shape="cylinder"),
        _Template("filing cabinet", (0.45, 0.5), (1.2, 1.35), (0.55, 0.62), "wall",
                  ("grey", "green", "silver"), prob=0.7),
        _Template("plant", (0.5, 0.6), (1.5, 1.8), (0.5, 0.6), "corner", ("green",), prob=0.6,
                  shape="cylinder", name="tall plant", landmark=True),
        _Template("globe", (0.45, 0.5), (1.0, 1.1), (0.45, 0.5), "corner", ("blue",),
                  prob=0.4, shape="cylinder", name="globe", landmark=True),
    ],
    "dining room": [
        _Template("dining table", (1.9, 2.4), (0.75, 0.78), (1.6, 1.9), "center", _WOODS,
                  landmark=True),
        _Template("sideboard", (1.4, 1.9), (0.85, 0.95), (0.45, 0.52), "wall", _WOODS),
        _Template("grandfather clock", (0.5, 0.6), (1.9, 2.1), (0.35, 0.42), "wall",
                  ("brown", "black"), prob=0.5, landmark=True, name="grandfather clock"),
        _Template("fish tank", (1.0, 1.3), (1.3, 1.4), (0.45, 0.5), "wall", ("blue",),
                  prob=0.45, landmark=True, name="fish tank"),
        _Template("plant", (0.5, 0.6), (1.5, 1.8), (0.5, 0.6), "corner", ("green",), prob=0.5,
                  shape="cylinder", name="tall plant", landmark=True),
        _Template("painting", (0.9, 1.3), (0.6, 0.9), (0.04, 0.04), "wallmount", _BRIGHT,
                  prob=0.7, landmark=True, elevation=1.3),
    ],
    "hallway": [
        _Template("shoe cabinet", (0.8, 1.2), (0.9, 1.0), (0.3, 0.35), "wall", _WOODS,
                  prob=0.7),
        _Template("coat rack", (0.4, 0.45), (1.75, 1.85), (0.4, 0.45), "corner",
                  ("black", "brown"), prob=0.6, shape="cylinder", name="coat rack",
                  landmark=True),
        _Template("console table", (0.9, 1.2), (0.8, 0.85), (0.3, 0.35), "wall", _WOODS,
                  prob=0.5),
        _Template("plant", (0.45, 0.55), (1.4, 1.7), (0.45, 0.55), "corner", ("green",),
                  prob=0.5, shape="cylinder", name="tall plant", landmark=True),
        _Template("painting", (0.7, 1.2), (0.5, 0.8), (0.04, 0.04), "wallmount", _BRIGHT,
                  prob=0.8, landmark=True, elevation=1.35),
        _Template("mirror", (0.6, 0.8), (1.1, 1.3), (0.04, 0.04), "wallmount", ("silver",),
                  prob=0.4, name="mirror", elevation=0.7),
    ],
}

# hallways stay walkable: nothing deeper than this against their walls
_HALLWAY_MAX_DEPTH = 0.36
_CENTER_CLEARANCE = 0.75  # free walking space kept around centre pieces
_DOOR_ZONE_DEPTH = 1.0  # nothing stands in front of a doorway (metres into the room)


def _rotated_half(w: float, d: float, yaw: float) -> tuple[float, float]:
    c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
    return (c * w / 2 + s * d / 2, s * w / 2 + c * d / 2)


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float],
              gap: float = 0.0) -> bool:
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1]
                or b[3] + gap <= a[1])


class _RoomFurnisher:
    """Places a room's objects with rejection sampling, keeping doorways and walkways free."""

    def __init__(self, rng: np.random.Generator, room: Room, doors: list[Door],
                 walls: list[Wall], agent_radius: float = 0.1):
        self.rng = rng
        self.room = room
        self.doors = [d for d in doors if room.name in d.rooms]
        self.walls = walls
        self.radius = agent_radius
        self.objects: list[SceneObject] = []
        self.boxes: list[tuple[float, float, float, float]] = []  # AABBs of standing objects
        self.center_boxes: list[tuple[float, float, float, float]] = []
        self.mount_spans: list[tuple[str, float, float]] = []  # (side, lo, hi) of wall mounts
        self.keep_out = [self._door_zone(d) for d in self.doors]

    def _door_zone(self, d: Door) -> tuple[float, float, float, float]:
        half = d.width / 2 + 0.15
        depth = _DOOR_ZONE_DEPTH
        if d.axis == "z":  # wall at x = const
            return (d.center[0] - depth, d.center[1] - half, d.center[0] + depth,
                    d.center[1] + half)
        return (d.center[0] - half, d.center[1] - depth, d.center[0] + half, d.center[1] + depth)

    def furnish(self, templates: list[_Template]) -> None:
        for tpl in templates:
            if self.rng.random() >= tpl.prob:
                continue
            for _ in range(30):
                obj = self._propose(tpl)
                if obj is None:
                    continue
                if self._accept(obj, tpl):
                    break

    def _propose(self, tpl: _Template) -> SceneObject | None:
        rng = self.rng
        w = _q(rng.uniform(*tpl.width))
        h = round(float(rng.uniform(*tpl.height)), 3)
        d = _q(rng.uniform(*tpl.depth)) if tpl.depth[1] > 0.05 else tpl.depth[0]
        if self.room.type == "hallway" and tpl.placement == "wall":
            d = min(d, _HALLWAY_MAX_DEPTH)
        color = tpl.colors[int(rng.integers(len(tpl.colors)))]
        ix0, iz0, ix1, iz1 = self.room.interior
        gap = 0.02
        y = tpl.elevation
        if tpl.placement in ("wall", "wallmount"):
            sides = [("z0", ix1 - ix0), ("z1", ix1 - ix0), ("x0", iz1 - iz0), ("x1", iz1 - iz0)]
            lengths = np.array([s[1] for s in sides])
            side = sides[int(rng.choice(4, p=lengths / lengths.sum()))][0]
            yaw = {"z0": 0.0, "z1": math.pi, "x0": math.pi / 2, "x1": -math.pi / 2}[side]
            along_lo, along_hi = (ix0, ix1) if side[0] == "z" else (iz0, iz1)
            if along_hi - along_lo < w + 0.1:
                return None
            lo_t = along_lo + w / 2 + 0.05
            t = _q(rng.uniform(lo_t, max(lo_t, along_hi - w / 2 - 0.05)))  # float ties: hi ~ lo
            off = d / 2 + gap
            if side == "z0":
                x, z = t, iz0 + off
            elif side == "z1":
                x, z = t, iz1 - off
            elif side == "x0":
                x, z = ix0 + off, t
            else:
                x, z = ix1 - off, t
        elif tpl.placement == "corner":
            yaw = float(rng.integers(4)) * math.pi / 2
            hx, hz = _rotated_half(w, d, yaw)
            cx = ix0 + hx + 0.05 if rng.random() < 0.5 else ix1 - hx - 0.05
            cz = iz0 + hz + 0.05 if rng.random() < 0.5 else iz1 - hz - 0.05
            x, z = cx, cz
        else:  # center, floor
            yaw = 0.0 if rng.random() < 0.5 else math.pi / 2
            hx, hz = _rotated_half(w, d, yaw)
            margin = _CENTER_CLEARANCE if tpl.placement == "center" else 0.3
            lo_x, hi_x = ix0 + hx + margin, ix1 - hx - margin
            lo_z, hi_z = iz0 + hz + margin, iz1 - hz - margin
            if hi_x < lo_x or hi_z < lo_z:
                return None
            x, z = rng.uniform(lo_x, hi_x), rng.uniform(lo_z, hi_z)
        name = tpl.name or f"{color} {tpl.category}"
        return SceneObject(
            category=tpl.category, name=name, color=color, rgb=[float(c) for c in COLORS[color]],
            position=[round(float(x), 4), y, round(float(z), 4)], size=[w, h, d],
            yaw=round(yaw, 6), room=self.room.name, shape=tpl.shape, landmark=tpl.landmark)

    def _aabb(self, obj: SceneObject, pad: float = 0.0) -> tuple[float, float, float, float]:
        hx, hz = obj.footprint_half_extents()
        x, z = obj.position[0], obj.position[2]
        return (x - hx - pad, z - hz - pad, x + hx + pad, z + hz + pad)

    def _accept(self, obj: SceneObject, tpl: _Template) -> bool:
        box = self._aabb(obj)
        ix0, iz0, ix1, iz1 = self.room.interior
        if box[0] < ix0 - 1e-6 or box[1] < iz0 - 1e-6 or box[2] > ix1 + 1e-6 or box[3] > iz1 + 1e-6:
            return False
        if tpl.placement == "floor":
            if any(o.is_floor_item and _overlaps(box, self._aabb(o)) for o in self.objects):
                return False
            self.objects.append(obj)
            return True
        if tpl.placement == "wallmount":
            # keep clear of doorway openings and of tall furniture on the same wall
            probe = self._aabb(obj, pad=0.0)
            probe = (probe[0] - 0.15, probe[1] - 0.15, probe[2] + 0.15, probe[3] + 0.15)
            if any(_overlaps(probe, k) for k in self.keep_out):
                return False
            top = obj.position[1]
            for other, ob in zip(self.objects, self.boxes_all()):
                if (not other.is_floor_item and other.position[1] + other.size[1] > top
                        and _overlaps(probe, ob, gap=0.1)):
                    return False
            self.objects.append(obj)
            return True
        if any(_overlaps(box, k) for k in self.keep_out):
            return False
        gap = 0.05
        for b in self.boxes:
            if _overlaps(box, b, gap):
                return False
        for b in self.center_boxes:  # walk space around centre pieces
            if _overlaps(box, b, _CENTER_CLEARANCE):
                return False
        if tpl.placement == "center" and any(_overlaps(box, b, _CENTER_CLEARANCE)
                                             for b in self.boxes):
            return False
        for o in self.objects:  # wall-mounted things stay visible
            if not o.is_floor_item and o.position[1] > 0.5 and obj.size[1] > o.position[1]:
                if _overlaps(box, self._aabb(o), gap=0.1):
                    return False
        self.objects.append(obj)
        (self.center_boxes if tpl.placement == "center" else self.boxes).append(box)
        if not self._room_connected():
            self.objects.pop()
            (self.center_boxes if tpl.placement == "center" else self.boxes).pop()
            return False
        return True

    def boxes_all(self) -> list[tuple[float, float, float, float]]:
        return [self._aabb(o) for o in self.objects]

    def _room_connected(self) -> bool:
        """Doorways of the room stay connected to each other and to most of its free floor."""
        x0, z0, x1, z1 = self.room.rect
        cell = 0.1
        xs = np.arange(x0 + cell / 2, x1, cell)
        zs = np.arange(z0 + cell / 2, z1, cell)
        gx, gz = np.meshgrid(xs, zs)
        fp = footprints_of(self.walls, self.objects)
        sd = fp.signed_distance(np.stack([gx.ravel(), gz.ravel()], 1)).reshape(gx.shape)
        free = sd >= self.radius + 0.05
        from scipy import ndimage

        labels, n = ndimage.label(free)
        if n == 0:
            return False
        sizes = np.bincount(labels.ravel())[1:]
        main = int(np.argmax(sizes)) + 1
        if sizes[main - 1] < 0.75 * free.sum():
            return False
        for d in self.doors:
            # a point just inside this room in front of the doorway
            px, pz = d.center
            if d.axis == "z":
                px += 0.35 if self.room.contains(px + 0.35, pz) else -0.35
            else:
                pz += 0.35 if self.room.contains(px, pz + 0.35) else -0.35
            col = int((px - xs[0]) / cell + 0.5)
            row = int((pz - zs[0]) / cell + 0.5)
            if not (0 <= row < labels.shape[0] and 0 <= col < labels.shape[1]):
                return False
            if labels[row, col] != main:
                return False
        return True


def generate_apartment(seed: int) -> SceneSpec:
    """A furnished apartment, deterministic from ``seed`` (the same seed gives the same spec)."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"apartment seed must be an integer >= 0, got {seed!r}")
    seed = int(seed)
    rng = np.random.default_rng([seed, 0x5CE7E])
    if rng.random() < 0.6:
        rects, hall_idx = _floorplan_hallway(rng)
    else:
        rects, hall_idx = _floorplan_bsp(rng)
    width = max(r[2] for r in rects)
    depth = max(r[3] for r in rects)
    ox, oz = _q(-width / 2), _q(-depth / 2)
    rects = [[_q(r[0] + ox), _q(r[1] + oz), _q(r[2] + ox), _q(r[3] + oz)] for r in rects]

    types = _assign_room_types(rng, rects, hall_idx)
    counts: dict[str, int] = {}
    rooms: list[Room] = []
    for rect, rtype in zip(rects, types):
        counts[rtype] = counts.get(rtype, 0) + 1
        n_same = types.count(rtype)
        name = rtype if n_same == 1 else f"{rtype} {counts[rtype]}"
        floor, wall = _room_materials(rng, rtype)
        rooms.append(Room(name, rtype, rect, floor, wall))

    doors = _connect_rooms(rng, rooms, hall_idx)
    walls = _build_walls(rooms, doors, CEILING_HEIGHT)

    objects: list[SceneObject] = []
    for room in rooms:
        furnisher = _RoomFurnisher(rng, room, doors, walls)
        furnisher.furnish(_ROOM_TEMPLATES[room.type])
        objects += furnisher.objects

    warmth = [float(rng.uniform(0.0, 0.08)) for _ in rooms]
    spec = build_scene(scene_id_for_seed(seed), rooms, doors, objects, seed=seed,
                       light_warmth=warmth)
    log.debug("generated %s: %d rooms, %d doors, %d objects, %d landmarks", spec.scene_id,
              len(rooms), len(doors), len(objects), len(spec.landmarks))
    return spec


def build_scene(scene_id: str, rooms: list[Room], doors: list[Door],
                objects: list[SceneObject] | tuple = (), seed: int = -1,
                light_warmth: list[float] | None = None,
                ceiling_height: float = CEILING_HEIGHT) -> SceneSpec:
    """A SceneSpec from rooms, doorways and objects.

    Adds walls (with door gaps and lintels), one light per room, and landmarks from the objects
    flagged ``landmark`` (the first object of a name wins). Rooms must tile their bounding
    rectangle edge to edge (rects on wall centre lines); a door sits on a wall two of its rooms
    share. :func:`generate_apartment` assembles its output with it; it also makes small
    hand-made scenes (tests, JSON files).
    """
    objects = list(objects)
    walls = _build_walls(rooms, doors, ceiling_height)
    seen: set[str] = set()
    landmarks: list[Landmark] = []
    for i, obj in enumerate(objects):
        if not obj.landmark:
            continue
        if obj.name in seen:
            obj.landmark = False
            continue
        seen.add(obj.name)
        landmarks.append(Landmark(obj.name, obj.category, obj.room, list(obj.position), i))
    lights = []
    for k, room in enumerate(rooms):
        cx, cz = room.center
        strength = 0.7 + 0.03 * room.area
        warm = light_warmth[k] if light_warmth is not None else 0.04
        lights.append(Light([round(cx, 4), round(ceiling_height - 0.2, 4), round(cz, 4)],
                            [round(strength, 4), round(strength * (1 - warm / 2), 4),
                             round(strength * (1 - warm), 4)], room.name))
    return SceneSpec(
        scene_id=scene_id, seed=seed,
        bounds=[min(r.rect[0] for r in rooms), min(r.rect[1] for r in rooms),
                max(r.rect[2] for r in rooms), max(r.rect[3] for r in rooms)],
        rooms=list(rooms), doors=list(doors), walls=walls, objects=objects, lights=lights,
        landmarks=landmarks, ceiling_height=ceiling_height)


def _assign_room_types(rng: np.random.Generator, rects: list[list[float]],
                       hall_idx: int) -> list[str]:
    n = len(rects)
    types = [""] * n
    order = [i for i in range(n) if i != hall_idx]
    if hall_idx >= 0:
        types[hall_idx] = "hallway"
    for i in list(order):  # narrow leftovers of a BSP become hallways
        w, d = rects[i][2] - rects[i][0], rects[i][3] - rects[i][1]
        if hall_idx < 0 and max(w, d) / min(w, d) > 2.4 and min(w, d) < 2.7:
            types[i] = "hallway"
            order.remove(i)
    by_area = sorted(order, key=lambda i: (rects[i][2] - rects[i][0]) * (rects[i][3] - rects[i][1]))
    if not by_area:
        return types
    types[by_area[-1]] = "living room"
    rest = by_area[:-1]
    if rest:
        types[rest[0]] = "bathroom"
        rest = rest[1:]
    # kitchen and bedroom always; then office / dining room / a second bedroom, no repeats
    optional = ["office", "dining room", "bedroom"]
    pool = ["kitchen", "bedroom"] + [optional[k] for k in rng.permutation(len(optional))]
    order_rest = [rest[i] for i in rng.permutation(len(rest))]
    for j, i in enumerate(order_rest):
        types[i] = pool[j] if j < len(pool) else "bedroom"
    return types


def _connect_rooms(rng: np.random.Generator, rooms: list[Room], hall_idx: int) -> list[Door]:
    """Doors on a random spanning tree of the adjacency graph, plus a few extra loops."""
    n = len(rooms)
    candidates: list[tuple[int, int]] = []
    for i in range(n):
        for j in range(i + 1, n):
            edge = _shared_edge(rooms[i].rect, rooms[j].rect)
            if edge is not None and edge[3] - edge[2] >= 1.85:
                candidates.append((i, j))
    # hallway edges first so that the hallway is the hub when there is one
    perm = [candidates[k] for k in rng.permutation(len(candidates))]
    perm.sort(key=lambda e: 0 if hall_idx in e else 1)
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    doors: list[Door] = []
    extra = []
    for i, j in perm:
        if find(i) != find(j):
            door = _make_door(rng, rooms[i], rooms[j])
            if door is not None:
                parent[find(i)] = find(j)
                doors.append(door)
        else:
            extra.append((i, j))
    for i, j in extra:
        if rng.random() < 0.25:
            door = _make_door(rng, rooms[i], rooms[j])
            if door is not None:
                doors.append(door)
    roots = {find(i) for i in range(n)}
    if len(roots) > 1:  # cannot happen for tiled rectangles, but never ship a broken apartment
        raise RuntimeError(f"apartment rooms are not all connected ({len(roots)} groups)")
    return doors
