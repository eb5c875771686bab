"""moderngl/EGL rendering: depth against geometry, determinism across processes, assets."""

import hashlib
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sim_bridge import renderer as renderer_mod
from sim_bridge.furniture import SweetHome3DCatalog, object_parts, parse_obj
from sim_bridge.renderer import (
    EGL_PACKAGES,
    Renderer,
    RendererUnavailableError,
    build_scene_mesh,
    create_context,
    make_texture,
)
from sim_bridge.scene import (
    _ROOM_TEMPLATES,
    TEXTURE_KINDS,
    WALL_THICKNESS,
    Material,
    Room,
    build_scene,
    generate_apartment,
)


def _egl_reason():
    try:
        create_context().release()
    except RendererUnavailableError as exc:
        return str(exc)
    return None


_NO_EGL = _egl_reason()
needs_egl = pytest.mark.skipif(_NO_EGL is not None, reason=f"no EGL: {_NO_EGL}")


def one_room():
    """An empty 6 x 4 m room, wall centre lines at x = 0, 6 and z = 0, 4."""
    room = Room("kitchen", "kitchen", [0.0, 0.0, 6.0, 4.0], Material("tiles", [0.8, 0.8, 0.8]),
                Material("plaster", [0.9, 0.9, 0.9]))
    return build_scene("embedded:room.json", [room], [])


def expected_depth(cam, yaw: float, wall_z: float, s: np.ndarray, hfov: float):
    """View-z depth to the plane z = wall_z along the rays through normalised columns ``s``,
    and the x where each ray meets that plane."""
    fwd = np.array([-math.sin(yaw), -math.cos(yaw)])
    right = np.array([math.cos(yaw), -math.sin(yaw)])
    dir_x = fwd[0] + s * math.tan(hfov / 2) * right[0]
    dir_z = fwd[1] + s * math.tan(hfov / 2) * right[1]
    t = (wall_z - cam[2]) / dir_z  # the ray's forward (view-z) component is 1
    return t, cam[0] + t * dir_x


@pytest.fixture(scope="module")
def small():
    r = Renderer(96, 72, 79.0)
    yield r
    r.close()


@needs_egl
def test_depth_matches_a_wall_analytically(small):
    small.load_scene(one_room())
    wall_face = WALL_THICKNESS / 2  # the z = 0 wall's inner face
    cam = (3.0, 1.25, 2.5)
    for yaw in (0.0, math.radians(20)):
        rgb, depth = small.render(cam, yaw)
        assert rgb.shape == (72, 96, 3) and rgb.dtype == np.uint8
        assert depth.shape == (72, 96) and depth.dtype == np.float32
        row = depth[36]  # the middle row looks horizontally at the wall
        s = (np.arange(96) + 0.5) / 96 * 2 - 1
        want, hit_x = expected_depth(cam, yaw, wall_face, s, math.radians(79.0))
        on_wall = (hit_x > 0.1) & (hit_x < 5.9)  # other columns see the side walls
        assert on_wall.sum() > 60
        np.testing.assert_allclose(row[on_wall], want[on_wall], rtol=1e-4, atol=1e-4)
    # straight on, every pixel that sees the wall has the same view-z, 2.45 m
    rgb, depth = small.render(cam, 0.0)
    mid = depth[26:46, 20:76]
    np.testing.assert_allclose(mid, cam[2] - wall_face, atol=1e-4)
    # the floor: the bottom row's depth is the camera height over tan(pixel's angle down)
    vfov = small.vfov
    t = ((71 + 0.5) / 72 * 2 - 1) * math.tan(vfov / 2)  # downward slope of the bottom row
    assert depth[71, 48] == pytest.approx(1.25 / t, rel=1e-3)


@needs_egl
def test_view_direction_conventions(small):
    """Yaw 0 looks along -z; TURN_LEFT (yaw +90 deg) looks along -x."""
    small.load_scene(one_room())
    cam = (1.0, 1.25, 2.0)
    _, d0 = small.render(cam, 0.0)
    _, d90 = small.render(cam, math.pi / 2)
    _, dm90 = small.render(cam, -math.pi / 2)
    h = WALL_THICKNESS / 2
    assert d0[36, 48] == pytest.approx(2.0 - h, abs=1e-3)  # wall z = 0
    assert d90[36, 48] == pytest.approx(1.0 - h, abs=1e-3)  # wall x = 0
    assert dm90[36, 48] == pytest.approx(5.0 - h, abs=1e-3)  # wall x = 6


@needs_egl
def test_apartment_frames_look_sane():
    r = Renderer(160, 120, 79.0)
    try:
        sc = generate_apartment(4)
        r.load_scene(sc)
        room = next(rm for rm in sc.rooms if rm.type == "living room")
        cx, cz = room.center
        for yaw in np.linspace(0, 2 * math.pi, 4, endpoint=False):
            rgb, depth = r.render((cx, 1.25, cz), float(yaw))
            assert 40 < rgb.mean() < 230
            assert rgb.std() > 10  # not a flat image
            assert depth.min() > 0.0 and depth.max() < 20.0
    finally:
        r.close()


@needs_egl
def test_full_resolution_frame():
    """The one 640x480 test: JanusVLN's camera."""
    r = Renderer(640, 480, 79.0)
    try:
        sc = generate_apartment(11)
        r.load_scene(sc)
        cx, cz = sc.rooms[0].center
        rgb, depth = r.render((cx, 1.25, cz), 0.3)
        assert rgb.shape == (480, 640, 3) and depth.shape == (480, 640)
        assert rgb.flags.c_contiguous and depth.flags.c_contiguous
        assert np.isfinite(depth).all() and depth.min() > 0
        assert 30 < rgb.mean() < 235
    finally:
        r.close()


_SCRIPT = textwrap.dedent("""
    import hashlib, sys
    from sim_bridge.renderer import Renderer
    from sim_bridge.scene import generate_apartment
    seed = int(sys.argv[1])
    sc = generate_apartment(seed)
    r = Renderer(128, 96, 79.0)
    r.load_scene(sc)
    cx, cz = sc.rooms[1].center
    rgb, depth = r.render((cx, 1.25, cz), 0.7)
    print(hashlib.md5(rgb.tobytes() + depth.tobytes()).hexdigest())
""")


def _frame_hash(seed: int) -> str:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, str(seed)], capture_output=True,
                         text=True, timeout=120, check=True)
    return out.stdout.strip().splitlines()[-1]


@needs_egl
def test_same_seed_same_frame_across_processes():
    first, second = _frame_hash(5), _frame_hash(5)
    assert first == second
    # and the same as in this process
    sc = generate_apartment(5)
    r = Renderer(128, 96, 79.0)
    try:
        r.load_scene(sc)
        cx, cz = sc.rooms[1].center
        rgb, depth = r.render((cx, 1.25, cz), 0.7)
    finally:
        r.close()
    assert hashlib.md5(rgb.tobytes() + depth.tobytes()).hexdigest() == first
    assert _frame_hash(6) != first


def test_textures():
    for kind in TEXTURE_KINDS:
        tex = make_texture(kind, 64)
        assert tex.shape == (64, 64, 3) and tex.dtype == np.uint8
        assert np.array_equal(tex, make_texture(kind, 64))
    assert not np.array_equal(make_texture("wood", 64), make_texture("tiles", 64))
    with pytest.raises(ValueError, match="unknown texture kind"):
        make_texture("velvet")


def test_every_category_has_a_shape():
    """Templates and shape builders agree: no category falls back to a bare box."""
    from sim_bridge import furniture

    categories = {t.category for ts in _ROOM_TEMPLATES.values() for t in ts}
    assert categories <= set(furniture._BUILDERS), categories - set(furniture._BUILDERS)
    sc = generate_apartment(2)
    for obj in sc.objects:
        parts = object_parts(obj)
        assert parts and all(p.shape in ("box", "cylinder", "sphere") for p in parts)
        # parts stay (roughly) inside the object's box, so the footprint covers what is drawn
        w, h, d = obj.size
        for p in parts:
            hx, hy, hz = (s / 2 for s in p.size)
            assert abs(p.center[0]) + hx <= w / 2 + 0.1, (obj.name, p)
            assert abs(p.center[2]) + hz <= d / 2 + 0.1, (obj.name, p)


def test_scene_mesh_winding_is_outward():
    """Solid geometry faces away from the object (back-face culling relies on it)."""
    rows, two_sided = build_scene_mesh(generate_apartment(0))
    assert len(two_sided) == 0  # no catalog given: shapes only
    tri = rows[:, 0:3].reshape(-1, 3, 3).astype(np.float64)
    normals = rows[:, 3:6].reshape(-1, 3, 3)[:, 0].astype(np.float64)
    face = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(face, axis=1)
    big = area > 1e-8
    agree = np.einsum("ij,ij->i", face[big], normals[big]) > 0
    assert agree.mean() > 0.99


def test_missing_egl_error_names_the_packages(monkeypatch):
    import moderngl

    def broken(*a, **k):
        raise Exception("eglGetDisplay failed")

    monkeypatch.setattr(moderngl, "create_standalone_context", broken)
    with pytest.raises(RendererUnavailableError) as err:
        renderer_mod.create_context()
    assert EGL_PACKAGES in str(err.value)
    assert "apt-get install" in str(err.value)


_CUBE = """
# a unit cube, quads, two materials
mtllib cube.mtl
v 0 0 0
v 2 0 0
v 2 1 0
v 0 1 0
v 0 0 3
v 2 0 3
v 2 1 3
v 0 1 3
usemtl red
f 1/1/1 2/2/1 3/3/1 4/4/1
f 5 8 7 6
usemtl Chrome
f 1 5 6 2
f 4 3 7 8
f 1 4 8 5
f -7 -6 -2 -3
"""


def test_obj_reader():
    model = parse_obj(_CUBE, {"red": ((0.9, 0.1, 0.1), False), "Chrome": ((0.8, 0.8, 0.8), False)},
                      name="cube")
    assert model.positions.shape == (12, 3, 3)
    flat = model.positions.reshape(-1, 3)
    np.testing.assert_allclose(flat.min(0), [-0.5, 0.0, -0.5])
    np.testing.assert_allclose(flat.max(0), [0.5, 1.0, 0.5])
    np.testing.assert_allclose(model.colors[0], [0.9, 0.1, 0.1], rtol=1e-6)
    assert not model.tintable[-1]  # chrome keeps its colour
    with pytest.raises(ValueError, match="no faces"):
        parse_obj("v 0 0 0\n", name="empty")
    with pytest.raises(ValueError, match="does not exist"):
        parse_obj("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n", name="bad")


@needs_egl
@pytest.mark.skipif(not SweetHome3DCatalog().available,
                    reason="Debian sweethome3d-furniture is not installed")
def test_sweethome3d_models_render():
    catalog = SweetHome3DCatalog()
    sc = generate_apartment(3)
    shapes, _ = build_scene_mesh(sc)
    solid, models = build_scene_mesh(sc, catalog)
    assert len(models) > 0 and len(solid) < len(shapes)
    r = Renderer(96, 72, 79.0)
    try:
        r.load_scene(sc, catalog)
        cx, cz = sc.rooms[0].center
        rgb, depth = r.render((cx, 1.25, cz), 0.0)
        assert rgb.mean() > 20 and depth.min() > 0
    finally:
        r.close()


@needs_egl
def test_two_renderers_in_one_process():
    """Each renderer makes its own context current: interleaved use gives the same frames."""
    a, b = generate_apartment(1), generate_apartment(2)
    pa = (a.rooms[0].center[0], 1.25, a.rooms[0].center[1])
    pb = (b.rooms[0].center[0], 1.25, b.rooms[0].center[1])
    r1 = Renderer(64, 48)
    r1.load_scene(a)
    ref = r1.render(pa, 0.3)
    r2 = Renderer(64, 48)
    try:
        r2.load_scene(b)
        other = r2.render(pb, 0.3)
        again = r1.render(pa, 0.3)
        assert np.array_equal(ref[0], again[0]) and np.array_equal(ref[1], again[1])
        assert not np.array_equal(other[0], ref[0])
    finally:
        r2.close()
    assert np.array_equal(r1.render(pa, 0.3)[0], ref[0])
    r1.close()


@needs_egl
def test_render_scene_cli(tmp_path):
    from sim_bridge.render_scene import main

    main(["--seed", "42", "--out", str(tmp_path), "--views", "2", "--width", "64",
          "--height", "48", "--thumb", "32", "--map-scale", "1"])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "topdown.png" in names and "views.png" in names and "scene.json" in names
    assert len([n for n in names if n.startswith("view_")]) == 2
    from PIL import Image

    view = next(tmp_path.glob("view_0_*.png"))
    assert Image.open(view).size == (64, 48)
    top = Image.open(tmp_path / "topdown.png")
    assert top.size[0] > 100 and top.size[1] > 100
