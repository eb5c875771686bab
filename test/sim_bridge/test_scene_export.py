"""sim_bridge.scene_export: the .glb an independent parser (trimesh) reads back, in MP3D's frame."""

import numpy as np
import pytest

from sim_bridge.scene import load_scene
from sim_bridge.scene_export import export_glb, habitat_to_mp3d, scene_triangles

trimesh = pytest.importorskip("trimesh", reason="pip install trimesh (requirements/dev.txt)")


def test_exported_glb_reads_back_with_the_scenes_triangles_z_up(tmp_path):
    scene = load_scene("embedded:apt_00003")
    path = export_glb(scene, tmp_path / "apt.glb")
    assert path.read_bytes()[:4] == b"glTF"
    positions, _, colors = scene_triangles(scene)
    (mesh,) = trimesh.load(path, process=False).geometry.values()
    assert len(mesh.faces) == len(positions) // 3
    np.testing.assert_allclose(mesh.vertices, habitat_to_mp3d(positions), atol=1e-5)
    # z is up in the file: the floor (habitat y = 0) is z = 0, the ceiling z = ceiling height
    assert mesh.vertices[:, 2].min() == pytest.approx(0.0, abs=1e-5)
    assert mesh.vertices[:, 2].max() == pytest.approx(scene.ceiling_height, abs=1e-5)
    got = np.asarray(mesh.visual.vertex_attributes["color"], dtype=float)  # COLOR_0, floats
    np.testing.assert_allclose(got[:, :3], colors, atol=1e-6)


def test_habitat_to_mp3d_is_habitats_glb_rotation():
    # habitat-sim loads a .glb with up (0, 0, 1) and front (0, 1, 0): file +z is world +y
    np.testing.assert_allclose(habitat_to_mp3d([[1.0, 2.0, 3.0]]), [[1.0, -3.0, 2.0]])
