"""Headless RGB-D rendering of a SceneSpec with moderngl on EGL (Mesa llvmpipe works, no GPU).

One draw call renders the whole apartment into two colour attachments: RGB (uint8) and the
view-space depth (float32 metres along the optical axis, what habitat-sim's depth sensor
returns). Shading is Lambert with one point light per room, a sky/ground hemisphere ambient and a
weak directional fill. Because diffuse light does not depend on the viewer and the scene is
static, the lighting is evaluated once per vertex when the scene is loaded (walls, floors and
ceilings are tessellated into cells of at most :data:`LIGHT_CELL` metres so the falloff stays
smooth), and the fragment shader only multiplies a texture by the interpolated colour: that keeps
640x480 RGB-D near 150 frames per second on one CPU core with llvmpipe. Each surface is lit by the
light of the room it faces (which stands in for shadows between rooms).

Textures (wood, grain, tiles, carpet, plaster, fabric) are generated with numpy from fixed seeds,
so a frame depends only on the scene and the pose: the same pose renders bit-identically in any
process on the same Mesa build (there is no time-dependent state).

Habitat conventions: y up, the camera looks along -z at yaw 0 and yaw turns it counter-clockwise
seen from above; the horizontal field of view is ``hfov_deg`` and pixels are square.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import zlib

import numpy as np

from sim_bridge.furniture import MeshModel, Part, SweetHome3DCatalog, object_parts
from sim_bridge.scene import TEXTURE_KINDS, SceneObject, SceneSpec

log = logging.getLogger(__name__)

TEXTURE_SIZE = 128
#: largest side (metres) of a wall / floor / ceiling cell for per-vertex lighting
LIGHT_CELL = 0.5
SKY = np.array([0.30, 0.30, 0.32])  # ambient from above (normals pointing up)
GROUND = np.array([0.50, 0.49, 0.47])  # light bounced off the floor (normals pointing down)
FILL_DIR = np.array([0.45, 0.7, 0.55]) / np.linalg.norm([0.45, 0.7, 0.55])
FILL = np.array([0.10, 0.10, 0.10])
ATTENUATION = 0.09  # point light: colour / (1 + ATTENUATION * d^2)
GAMMA = 0.85
EGL_PACKAGES = "libegl1 libegl-mesa0 libgl1-mesa-dri"
#: metres per texture repeat, per kind
_UV_SCALE = {"plain": 1.0, "wood": 1.2, "grain": 0.8, "tiles": 0.6, "carpet": 0.5,
             "plaster": 1.5, "fabric": 0.35}
_FLOATS_PER_VERTEX = 13  # position 3, normal 3, uv 2, colour 3, texture layer 1, light 1
_GPU_FORMAT = "3f 2f 3f 1f"  # position, uv, lit colour, texture layer


class RendererUnavailableError(RuntimeError):
    """No headless OpenGL (EGL) context could be created."""


# --------------------------------------------------------------------------------------------
# Procedural textures
# --------------------------------------------------------------------------------------------


def _periodic_noise(rng: np.random.Generator, size: int, cutoff: float) -> np.ndarray:
    """Tileable smooth noise in [0, 1]: white noise low-passed in the Fourier domain."""
    white = rng.standard_normal((size, size))
    f = np.fft.fftfreq(size)
    radius = np.hypot(f[:, None], f[None, :])
    smooth = np.real(np.fft.ifft2(np.fft.fft2(white) * np.exp(-(radius / cutoff) ** 2)))
    smooth -= smooth.min()
    return smooth / max(float(smooth.max()), 1e-9)


def make_texture(kind: str, size: int = TEXTURE_SIZE) -> np.ndarray:
    """A tileable (size, size, 3) uint8 texture of ``kind``; deterministic (seeded by name).

    Textures are mostly grey patterns; the surface colour tints them in the shader.
    """
    if kind not in TEXTURE_KINDS:
        raise ValueError(f"unknown texture kind {kind!r}; expected one of {list(TEXTURE_KINDS)}")
    rng = np.random.default_rng(zlib.crc32(kind.encode()))
    v, u = np.mgrid[0:size, 0:size] / size
    if kind == "plain":
        lum = 0.94 + 0.06 * _periodic_noise(rng, size, 0.05)
    elif kind == "plaster":
        lum = 0.93 + 0.035 * _periodic_noise(rng, size, 0.04) + 0.035 * _periodic_noise(
            rng, size, 0.35)
    elif kind == "carpet":
        lum = 0.80 + 0.12 * _periodic_noise(rng, size, 0.45) + 0.06 * _periodic_noise(
            rng, size, 0.08)
    elif kind == "fabric":
        weave = 0.5 + 0.5 * np.sin(2 * np.pi * 32 * u) * np.sin(2 * np.pi * 32 * v)
        lum = 0.84 + 0.08 * weave + 0.06 * _periodic_noise(rng, size, 0.1)
    elif kind == "tiles":
        n = 2
        tile = (np.floor(u * n) + n * np.floor(v * n)).astype(int)
        tint = 0.9 + 0.1 * rng.random(n * n)
        lum = tint[tile] + 0.04 * _periodic_noise(rng, size, 0.2)
        fu, fv = (u * n) % 1.0, (v * n) % 1.0
        grout = (np.minimum(fu, 1 - fu) < 0.025) | (np.minimum(fv, 1 - fv) < 0.025)
        lum = np.where(grout, 0.55, lum)
    elif kind == "grain":  # furniture wood: grain, no plank seams
        warp = _periodic_noise(rng, size, 0.03)
        grain = 0.5 + 0.5 * np.sin(2 * np.pi * (v * 8.0 + 0.5 * warp))
        lum = 0.86 + 0.08 * grain + 0.06 * _periodic_noise(rng, size, 0.3)
    else:  # wood: 5 planks across v, staggered butt joints, grain along u
        n = 5
        plank = np.floor(v * n).astype(int)
        offset = rng.random(n)
        tint = 0.8 + 0.2 * rng.random(n)
        warp = _periodic_noise(rng, size, 0.06)
        grain = 0.5 + 0.5 * np.sin(2 * np.pi * (v * n * 3.0 + 2.0 * warp + offset[plank] * 5))
        lum = tint[plank] * (0.86 + 0.14 * grain)
        fv = (v * n) % 1.0
        seam = np.minimum(fv, 1 - fv) < 0.02
        butt = np.abs(((u + offset[plank]) % 1.0) - 0.5) < 0.006
        lum = np.where(seam | butt, lum * 0.55, lum)
    lum = np.clip(lum, 0.0, 1.0)
    return (np.repeat(lum[..., None], 3, axis=2) * 255.0 + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Scene geometry -> one vertex array
# --------------------------------------------------------------------------------------------


class _MeshBuilder:
    """Accumulates triangles as rows of (position, normal, uv, colour, layer, light)."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []

    def add(self, pos: np.ndarray, normal: np.ndarray, uv: np.ndarray, color, texture: str,
            light: int) -> None:
        n = len(pos)
        rows = np.empty((n, _FLOATS_PER_VERTEX), np.float32)
        rows[:, 0:3] = pos
        rows[:, 3:6] = normal
        rows[:, 6:8] = uv
        rows[:, 8:11] = np.broadcast_to(np.asarray(color, np.float32).reshape(-1, 3), (n, 3))
        rows[:, 11] = TEXTURE_KINDS.index(texture)
        rows[:, 12] = light
        self.chunks.append(rows)

    def quad(self, center, t1, t2, color, texture: str, light: int, uv_origin=None,
             max_cell: float | None = None) -> None:
        """A rectangle centre +- t1 +- t2 facing t1 x t2 (counter-clockwise from the front).

        ``max_cell`` splits it into cells no longer than that (for per-vertex lighting).
        """
        c, a, b = (np.asarray(x, np.float64) for x in (center, t1, t2))
        la, lb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
        nu = max(1, int(math.ceil(2 * la / max_cell))) if max_cell else 1
        nv = max(1, int(math.ceil(2 * lb / max_cell))) if max_cell else 1
        su, sv = np.linspace(-1, 1, nu + 1), np.linspace(-1, 1, nv + 1)
        u0, v0 = np.meshgrid(su[:-1], sv[:-1], indexing="ij")
        u1, v1 = np.meshgrid(su[1:], sv[1:], indexing="ij")
        corners = np.stack([np.stack([u0, v0], -1), np.stack([u1, v0], -1),
                            np.stack([u1, v1], -1), np.stack([u0, v1], -1)], 2).reshape(-1, 4, 2)
        idx = [0, 1, 2, 0, 2, 3]
        coef = corners[:, idx].reshape(-1, 2)
        pts = c[None] + coef[:, :1] * a[None] + coef[:, 1:] * b[None]
        normal = np.cross(a, b)
        normal /= np.linalg.norm(normal)
        o = np.zeros(3) if uv_origin is None else np.asarray(uv_origin, float)
        uv = np.stack([(pts - o) @ (a / la), (pts - o) @ (b / lb)], 1) / _UV_SCALE[texture]
        self.add(pts, np.broadcast_to(normal, pts.shape), uv, color, texture, light)

    def array(self) -> np.ndarray:
        if not self.chunks:
            return np.zeros((0, _FLOATS_PER_VERTEX), np.float32)
        return np.concatenate(self.chunks)


def _box_faces(center, size):
    """(face centre, t1, t2) of the 6 faces of an axis-aligned box, normals outward."""
    cx, cy, cz = center
    hx, hy, hz = (s / 2 for s in size)
    ex, ey, ez = np.array([hx, 0, 0]), np.array([0, hy, 0]), np.array([0, 0, hz])
    c = np.array([cx, cy, cz], float)
    return [
        (c + ex, ez * -1, ey),  # +x: (-z) x (+y) = +x
        (c - ex, ez, ey),  # -x
        (c + ey, ez, ex),  # +y: z x x = +y
        (c - ey, ex, ez),  # -y
        (c + ez, ex, ey),  # +z
        (c - ez, ex * -1, ey),  # -z
    ]


def _part_triangles(part: Part) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangles (T*3, 3), normals and uvs of one part in the object's local frame."""
    scale = _UV_SCALE[part.texture]
    if part.shape == "box":
        b = _MeshBuilder()
        for fc, t1, t2 in _box_faces(part.center, part.size):
            b.quad(fc, t1, t2, (1, 1, 1), part.texture, 0)
        arr = b.array()
        return arr[:, 0:3], arr[:, 3:6], arr[:, 6:8]
    if part.shape == "cylinder":
        return _cylinder(part, scale)
    if part.shape == "sphere":
        return _sphere(part, scale)
    raise ValueError(f"unknown part shape {part.shape!r}")


def _cylinder(part: Part, scale: float, segments: int = 16):
    cx, cy, cz = part.center
    sx, sy, sz = part.size
    a = np.linspace(0, 2 * np.pi, segments + 1)
    ca, sa = np.cos(a), np.sin(a)
    pos, nrm, uv = [], [], []
    if part.axis == "y":
        rx, rz, h = sx / 2, sz / 2, sy
        y0, y1 = cy - h / 2, cy + h / 2
        for i in range(segments):
            p00 = (cx + rx * ca[i], y0, cz - rz * sa[i])
            p10 = (cx + rx * ca[i + 1], y0, cz - rz * sa[i + 1])
            p11 = (cx + rx * ca[i + 1], y1, cz - rz * sa[i + 1])
            p01 = (cx + rx * ca[i], y1, cz - rz * sa[i])
            n0 = (ca[i] / max(rx, 1e-6), 0, -sa[i] / max(rz, 1e-6))
            n1 = (ca[i + 1] / max(rx, 1e-6), 0, -sa[i + 1] / max(rz, 1e-6))
            u0, u1 = i / segments * 2 * np.pi * max(rx, rz), (i + 1) / segments * 2 * np.pi * max(
                rx, rz)
            pos += [p00, p10, p11, p00, p11, p01]
            nrm += [n0, n1, n1, n0, n1, n0]
            uv += [(u0, y0), (u1, y0), (u1, y1), (u0, y0), (u1, y1), (u0, y1)]
            top_c, bot_c = (cx, y1, cz), (cx, y0, cz)
            pos += [top_c, p01, p11, bot_c, p10, p00]
            nrm += [(0, 1, 0)] * 3 + [(0, -1, 0)] * 3
            uv += [(cx, cz), (p01[0], p01[2]), (p11[0], p11[2]), (cx, cz), (p10[0], p10[2]),
                   (p00[0], p00[2])]
    else:  # axis z: a disc facing the front
        rx, ry, length = sx / 2, sy / 2, sz
        z0, z1 = cz - length / 2, cz + length / 2
        for i in range(segments):
            p00 = (cx + rx * ca[i], cy + ry * sa[i], z0)
            p10 = (cx + rx * ca[i + 1], cy + ry * sa[i + 1], z0)
            p11 = (cx + rx * ca[i + 1], cy + ry * sa[i + 1], z1)
            p01 = (cx + rx * ca[i], cy + ry * sa[i], z1)
            n0 = (ca[i], sa[i], 0)
            n1 = (ca[i + 1], sa[i + 1], 0)
            pos += [p00, p11, p10, p00, p01, p11]
            nrm += [n0, n1, n1, n0, n0, n1]
            uv += [(p00[0], p00[1]), (p11[0], p11[1]), (p10[0], p10[1]), (p00[0], p00[1]),
                   (p01[0], p01[1]), (p11[0], p11[1])]
            front_c, back_c = (cx, cy, z1), (cx, cy, z0)
            pos += [front_c, p01, p11, back_c, p10, p00]
            nrm += [(0, 0, 1)] * 3 + [(0, 0, -1)] * 3
            uv += [(cx, cy), (p01[0], p01[1]), (p11[0], p11[1]), (cx, cy), (p10[0], p10[1]),
                   (p00[0], p00[1])]
    nrm_a = np.asarray(nrm, float)
    nrm_a /= np.maximum(np.linalg.norm(nrm_a, axis=1, keepdims=True), 1e-9)
    return np.asarray(pos, float), nrm_a, np.asarray(uv, float) / scale


def _sphere(part: Part, scale: float, stacks: int = 8, slices: int = 14):
    cx, cy, cz = part.center
    r = np.array(part.size, float) / 2
    th = np.linspace(0, np.pi, stacks + 1)
    ph = np.linspace(0, 2 * np.pi, slices + 1)
    pos, nrm, uv = [], [], []

    def vert(i, j):
        unit = np.array([np.sin(th[i]) * np.cos(ph[j]), np.cos(th[i]),
                         -np.sin(th[i]) * np.sin(ph[j])])
        p = np.array([cx, cy, cz]) + unit * r
        n = unit / np.maximum(r, 1e-6)
        return p, n / np.linalg.norm(n), (ph[j] * r.max(), th[i] * r.max())

    for i in range(stacks):
        for j in range(slices):
            a, b, c, d = vert(i, j), vert(i + 1, j), vert(i + 1, j + 1), vert(i, j + 1)
            for v in (a, b, c, a, c, d):
                pos.append(v[0])
                nrm.append(v[1])
                uv.append(v[2])
    return np.asarray(pos, float), np.asarray(nrm, float), np.asarray(uv, float) / scale


def _to_world(obj: SceneObject, pts: np.ndarray, normals: np.ndarray):
    c, s = math.cos(obj.yaw), math.sin(obj.yaw)
    rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    world = pts @ rot.T + np.array(obj.position, float)
    return world, normals @ rot.T


def build_scene_mesh(scene: SceneSpec, catalog: SweetHome3DCatalog | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Vertex rows of the whole scene: (solid, two_sided).

    ``solid`` has consistent outward winding (drawn with back-face culling); ``two_sided`` holds
    Sweet Home 3D model triangles (any winding). Each row is position, normal, uv, colour,
    texture layer, light index.
    """
    light_of = {lt.room: i for i, lt in enumerate(scene.lights)}
    b = _MeshBuilder()
    h = scene.ceiling_height
    for room in scene.rooms:
        x0, z0, x1, z1 = room.rect
        li = light_of.get(room.name, 0)
        c = ((x0 + x1) / 2, 0.0, (z0 + z1) / 2)
        ex, ez = np.array([(x1 - x0) / 2, 0, 0]), np.array([0, 0, (z1 - z0) / 2])
        b.quad(c, ez, ex, room.floor.color, room.floor.kind, li, max_cell=LIGHT_CELL)  # +y
        b.quad((c[0], h, c[2]), ex, ez, (0.96, 0.96, 0.95), "plaster", li,
               max_cell=LIGHT_CELL)  # x cross z = -y
    # walls: faces split at room edges, each piece painted and lit by the room it faces
    cuts_x = sorted({r.rect[0] for r in scene.rooms} | {r.rect[2] for r in scene.rooms})
    cuts_z = sorted({r.rect[1] for r in scene.rooms} | {r.rect[3] for r in scene.rooms})
    for wall in scene.walls:
        x0, z0, x1, z1 = wall.rect
        center = ((x0 + x1) / 2, (wall.y0 + wall.y1) / 2, (z0 + z1) / 2)
        size = (x1 - x0, wall.y1 - wall.y0, z1 - z0)
        for fc, t1, t2 in _box_faces(center, size):
            normal = np.cross(t1, t2)
            normal /= np.linalg.norm(normal)
            if normal[1] > 0.5 or (normal[1] < -0.5 and wall.y0 <= 0.0):
                continue  # tops touch the ceiling; bottoms on the floor are never seen
            if abs(normal[1]) > 0.5:  # a lintel's underside
                room = scene.room_at(fc[0], fc[2])
                if room is None:
                    continue
                b.quad(fc, t1, t2, room.wall.color, "plaster", light_of.get(room.name, 0),
                       max_cell=LIGHT_CELL)
                continue
            along = np.array([1.0, 0, 0]) if abs(normal[0]) < 0.5 else np.array([0, 0, 1.0])
            lo = (fc[0] - abs(t1[0]) - abs(t2[0])) if along[0] else (fc[2] - abs(t1[2])
                                                                      - abs(t2[2]))
            hi = (fc[0] + abs(t1[0]) + abs(t2[0])) if along[0] else (fc[2] + abs(t1[2])
                                                                      + abs(t2[2]))
            cuts = [lo] + [c for c in (cuts_x if along[0] else cuts_z) if lo < c < hi] + [hi]
            for a, bnd in zip(cuts[:-1], cuts[1:]):
                if bnd - a < 1e-6:
                    continue
                mid = 0.5 * (a + bnd)
                pc = np.array(fc, float)
                pc[0 if along[0] else 2] = mid
                probe = pc + normal * 0.06
                room = scene.room_at(probe[0], probe[2])
                if room is None:
                    continue  # exterior face
                half = along * (bnd - a) / 2
                vert = np.array([0, (wall.y1 - wall.y0) / 2, 0])
                # keep the winding: t1 x t2 must stay the outward normal
                if np.dot(np.cross(half, vert), normal) < 0:
                    half = -half
                b.quad(pc, half, vert, room.wall.color, "plaster", light_of.get(room.name, 0),
                       uv_origin=(0, wall.y0, 0), max_cell=LIGHT_CELL)
    two_sided = _MeshBuilder()
    for index, obj in enumerate(scene.objects):
        li = light_of.get(obj.room, 0)
        model = catalog.model_for(obj, scene.scene_id, index) if catalog is not None else None
        if model is not None:
            _add_model(two_sided, obj, model, li)
            continue
        for part in object_parts(obj):
            pts, nrm, uv = _part_triangles(part)
            world, wn = _to_world(obj, pts, nrm)
            b.add(world, wn, uv, part.color, part.texture, li)
    return b.array(), two_sided.array()


def _add_model(b: _MeshBuilder, obj: SceneObject, model: MeshModel, light: int) -> None:
    w, h, d = obj.size
    tri = model.positions * np.array([w, h, d], np.float32)
    pts = tri.reshape(-1, 3).astype(np.float64)
    e1 = tri[:, 1] - tri[:, 0]
    e2 = tri[:, 2] - tri[:, 0]
    n_raw = np.cross(e1, e2)
    n = n_raw / np.maximum(np.linalg.norm(n_raw, axis=1, keepdims=True), 1e-12)
    nrm = np.repeat(n, 3, axis=0).astype(np.float64)
    colors = model.colors.copy()
    if obj.landmark or obj.color not in ("white", "grey", "silver", "black", "brown", "beige"):
        # the object's colour is part of its name ("red fridge"): paint most of the model in it
        lum = colors @ np.array([0.3, 0.59, 0.11], np.float32)
        mask = model.tintable
        area = np.linalg.norm(n_raw, axis=1)
        if (area * mask).sum() < 0.5 * area.sum():
            mask = lum > 0.12
        tint = np.asarray(obj.rgb, np.float32)[None] * (0.55 + 0.6 * lum[:, None])
        colors = np.where(mask[:, None], np.clip(tint, 0, 1), colors)
    world, wn = _to_world(obj, pts, nrm)
    uv = np.stack([world[:, 0] + world[:, 2], world[:, 1]], 1)
    b.add(world, wn, uv, np.repeat(colors, 3, axis=0), "plain", light)


def bake_lighting(rows: np.ndarray, scene: SceneSpec) -> np.ndarray:
    """Per-vertex Lambert lighting of builder rows -> GPU rows (position, uv, colour, layer).

    Each vertex gets hemisphere ambient + directional fill + its room's point light.
    """
    if len(rows) == 0:
        return np.zeros((0, 9), np.float32)
    pos = rows[:, 0:3].astype(np.float64)
    nrm = rows[:, 3:6].astype(np.float64)
    albedo = rows[:, 8:11]
    light_index = rows[:, 12].astype(np.int64)
    light_pos = np.array([lt.position for lt in scene.lights] or [[0, 0, 0]], np.float64)
    light_col = np.array([lt.color for lt in scene.lights] or [[0, 0, 0]], np.float64)
    to_light = light_pos[light_index] - pos
    d2 = np.maximum((to_light ** 2).sum(1), 1e-6)
    lambert = np.maximum((nrm * to_light).sum(1) / np.sqrt(d2), 0.0)
    light = light_col[light_index] * (lambert / (1.0 + ATTENUATION * d2))[:, None]
    up = 0.5 + 0.5 * nrm[:, 1:2]
    light += GROUND[None] * (1 - up) + SKY[None] * up
    light += FILL[None] * np.maximum(nrm @ FILL_DIR, 0.0)[:, None]
    lit = np.clip(albedo * light, 0.0, 1.0) ** GAMMA
    out = np.empty((len(rows), 9), np.float32)
    out[:, 0:3] = rows[:, 0:3]
    out[:, 3:5] = rows[:, 6:8]
    out[:, 5:8] = lit
    out[:, 8] = rows[:, 11]
    return out


# --------------------------------------------------------------------------------------------
# OpenGL
# --------------------------------------------------------------------------------------------

_VERTEX_SHADER = """
#version 330
uniform mat4 u_view;
uniform mat4 u_proj;
in vec3 in_pos;
in vec2 in_uv;
in vec3 in_color;
in float in_layer;
out vec2 v_uv;
out vec3 v_color;
out float v_depth;
flat out float v_layer;
void main() {
    vec4 view = u_view * vec4(in_pos, 1.0);
    gl_Position = u_proj * view;
    v_uv = in_uv;
    v_color = in_color;
    v_depth = -view.z;
    v_layer = in_layer;
}
"""

_FRAGMENT_SHADER = """
#version 330
uniform sampler2DArray u_tex;
in vec2 v_uv;
in vec3 v_color;
in float v_depth;
flat in float v_layer;
layout(location = 0) out vec4 f_color;
layout(location = 1) out float f_depth;
void main() {
    f_color = vec4(texture(u_tex, vec3(v_uv, v_layer)).rgb * v_color, 1.0);
    f_depth = v_depth;
}
"""


def _load_triton_before_mesa() -> None:
    """Load triton's LLVM (in torch's CUDA builds) before EGL brings in Mesa's.

    Mesa's llvmpipe loads its own libLLVM; a process that has it and then imports triton (torch
    does on first use of ``torch._dynamo``, e.g. from transformers) dies with SIGSEGV inside
    ``triton._C.libtriton``. In the other order both work. torch's CPU builds ship no triton.
    """
    if importlib.util.find_spec("triton") is not None:
        import triton  # noqa: F401


def create_context():
    """A headless moderngl context on EGL; RendererUnavailableError (with the fix) otherwise."""
    try:
        import moderngl
    except ImportError as exc:
        raise RendererUnavailableError(
            "the embedded renderer needs moderngl: pip install -r requirements/sim.txt "
            f"(moderngl, glcontext) ({exc})") from exc
    _load_triton_before_mesa()
    try:
        return moderngl.create_standalone_context(backend="egl")
    except Exception as exc:  # glcontext raises plain Exceptions for missing EGL
        raise RendererUnavailableError(
            "could not create a headless OpenGL context through EGL "
            f"({type(exc).__name__}: {exc}). Install Mesa's EGL and software rasteriser: "
            f"apt-get install {EGL_PACKAGES}  (no GPU or display is needed; llvmpipe renders on "
            "the CPU). Or run the embedded simulator blind with SimConfig(render=False).") from exc


class Renderer:
    """Renders a SceneSpec to RGB (H, W, 3) uint8 and depth (H, W) float32 view-z metres."""

    def __init__(self, width: int = 640, height: int = 480, hfov_deg: float = 79.0,
                 near: float = 0.01, far: float = 100.0):
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        if not 0.0 < hfov_deg < 180.0:
            raise ValueError(f"hfov_deg must be in (0, 180), got {hfov_deg}")
        self.width, self.height = int(width), int(height)
        self.hfov = math.radians(hfov_deg)
        self.near, self.far = near, far
        self.ctx = create_context()
        self.ctx.enable(self.ctx.DEPTH_TEST)
        self.program = self.ctx.program(vertex_shader=_VERTEX_SHADER,
                                        fragment_shader=_FRAGMENT_SHADER)
        layers = np.stack([make_texture(k) for k in TEXTURE_KINDS])
        self.texture = self.ctx.texture_array((TEXTURE_SIZE, TEXTURE_SIZE, len(TEXTURE_KINDS)),
                                              3, layers.tobytes())
        self.texture.build_mipmaps()
        import moderngl

        self.texture.filter = (moderngl.LINEAR_MIPMAP_NEAREST, moderngl.LINEAR)
        self.texture.repeat_x = self.texture.repeat_y = True
        self.fbo = self.ctx.framebuffer(
            color_attachments=[self.ctx.renderbuffer((self.width, self.height), 4),
                               self.ctx.renderbuffer((self.width, self.height), 1, dtype="f4")],
            depth_attachment=self.ctx.depth_renderbuffer((self.width, self.height)))
        self._rgb = bytearray(self.width * self.height * 3)
        self._depth = bytearray(self.width * self.height * 4)
        self.program["u_proj"].write(self.projection().T.astype("f4").tobytes())
        self._vaos: list = []
        self._buffers: list = []
        self.scene_id: str | None = None
        self.triangles = 0

    def projection(self) -> np.ndarray:
        """The 4x4 projection (row-major), y flipped so that row 0 of the image is the top."""
        fx = 1.0 / math.tan(self.hfov / 2)
        fy = fx * self.width / self.height
        n, f = self.near, self.far
        return np.array([[fx, 0, 0, 0], [0, -fy, 0, 0],
                         [0, 0, (f + n) / (n - f), 2 * f * n / (n - f)], [0, 0, -1, 0]])

    @property
    def vfov(self) -> float:
        """Vertical field of view (radians)."""
        return 2 * math.atan(math.tan(self.hfov / 2) * self.height / self.width)

    def load_scene(self, scene: SceneSpec, catalog: SweetHome3DCatalog | None = None) -> None:
        """Upload ``scene``'s geometry (replacing the previous scene's)."""
        solid, two_sided = build_scene_mesh(scene, catalog)
        gpu_rows = [bake_lighting(rows, scene) for rows in (solid, two_sided)]
        with self.ctx:
            self._release_geometry()
            for gpu in gpu_rows:
                if len(gpu) == 0:
                    self._vaos.append(None)
                    continue
                vbo = self.ctx.buffer(gpu.tobytes())
                vao = self.ctx.vertex_array(self.program, [(vbo, _GPU_FORMAT, "in_pos", "in_uv",
                                                            "in_color", "in_layer")])
                self._buffers.append(vbo)
                self._vaos.append(vao)
        self.scene_id = scene.scene_id
        self.triangles = (len(solid) + len(two_sided)) // 3
        log.debug("renderer: %s uploaded, %d triangles (%d from models)", scene.scene_id,
                  self.triangles, len(two_sided) // 3)

    def view_matrix(self, eye, yaw: float) -> np.ndarray:
        """World -> camera (row-major) for a camera at ``eye`` (x, y, z) turned by ``yaw``."""
        c, s = math.cos(yaw), math.sin(yaw)
        rot_t = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])  # R_y(yaw) transposed
        view = np.eye(4)
        view[:3, :3] = rot_t
        view[:3, 3] = -rot_t @ np.asarray(eye, float)
        return view

    def render(self, eye, yaw: float) -> tuple[np.ndarray, np.ndarray]:
        """RGB (H, W, 3) uint8 and depth (H, W) float32 (metres, view z) seen from ``eye``."""
        if self.scene_id is None:
            raise RuntimeError("Renderer.render called before load_scene")
        with self.ctx:  # several renderers may live in one process: make ours current
            self.program["u_view"].write(self.view_matrix(eye, yaw).T.astype("f4").tobytes())
            self.fbo.use()
            self.texture.use(location=0)
            self.fbo.clear(0.0, 0.0, 0.0, 1.0, depth=1.0)
            self.ctx.enable(self.ctx.CULL_FACE)
            self.ctx.front_face = "cw"  # the y-flipped projection mirrors the winding
            if self._vaos[0] is not None:
                self._vaos[0].render()
            self.ctx.disable(self.ctx.CULL_FACE)
            if len(self._vaos) > 1 and self._vaos[1] is not None:
                self._vaos[1].render()
            self.fbo.read_into(self._rgb, components=3, attachment=0, alignment=1)
            self.fbo.read_into(self._depth, components=1, attachment=1, alignment=1, dtype="f4")
        rgb = np.frombuffer(self._rgb, np.uint8).reshape(self.height, self.width, 3).copy()
        depth = np.frombuffer(self._depth, np.float32).reshape(self.height, self.width).copy()
        return rgb, depth

    def _release_geometry(self) -> None:
        for vao in self._vaos:
            if vao is not None:
                vao.release()
        for buf in self._buffers:
            buf.release()
        self._vaos, self._buffers = [], []

    def close(self) -> None:
        """Release the GL objects and the context."""
        if getattr(self, "ctx", None) is None:
            return
        with self.ctx:
            self._release_geometry()
            for obj in (self.fbo, self.texture, self.program):
                obj.release()
        self.ctx.release()
        self.ctx = None
