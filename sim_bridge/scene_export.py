"""Export an embedded apartment (:class:`~sim_bridge.scene.SceneSpec`) as a binary glTF (.glb).

habitat-sim loads the file as a stage: the same walls, floors and furniture the embedded
renderer draws (:func:`sim_bridge.renderer.build_scene_mesh`, flat vertex colours, no textures),
so both backends can run the same episodes on the same geometry (test_habitat_contract.py).
Without a ``.navmesh`` beside it habitat-sim computes one for the agent.

habitat-sim treats every bare ``.glb`` as a Matterport3D mesh with gravity along -Z
(``StageAttributesManager::setDefaultAssetNameBasedAttributes``: up (0, 0, 1), front
(0, 1, 0)), so vertices are written in that frame: habitat's world point (x, y, z) is stored as
(x, -z, y), as in MP3D's own files.

Usage: ``python -m sim_bridge.scene_export embedded:apt_00042 out/apt_00042.glb``.
"""

from __future__ import annotations

import argparse
import json
import logging
import struct
from pathlib import Path

import numpy as np

from sim_bridge.scene import SceneSpec, load_scene

log = logging.getLogger(__name__)

_GLB_MAGIC, _JSON_CHUNK, _BIN_CHUNK = 0x46546C67, 0x4E4F534A, 0x004E4942
_FLOAT, _UINT = 5126, 5125  # glTF componentType
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


def habitat_to_mp3d(points: np.ndarray) -> np.ndarray:
    """Habitat world (x, y up, z) -> the z-up frame habitat-sim assumes for .glb files."""
    p = np.asarray(points, dtype=np.float32)
    return np.stack([p[..., 0], -p[..., 2], p[..., 1]], axis=-1)


def scene_triangles(scene: SceneSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions, normals, colours) of the scene's triangles, (3T, 3) each, habitat frame."""
    from sim_bridge.renderer import build_scene_mesh

    solid, _ = build_scene_mesh(scene, catalog=None)
    return solid[:, 0:3].copy(), solid[:, 3:6].copy(), np.clip(solid[:, 8:11], 0.0, 1.0)


def glb_bytes(positions: np.ndarray, normals: np.ndarray, colors: np.ndarray) -> bytes:
    """A one-mesh binary glTF 2.0 file of consecutive-vertex triangles (indexed 0..N-1)."""
    n = len(positions)
    if n == 0 or n % 3:
        raise ValueError(f"expected a non-empty list of triangles, got {n} vertices")
    arrays = [np.ascontiguousarray(a, np.float32) for a in (positions, normals, colors)]
    arrays.append(np.arange(n, dtype=np.uint32))
    views, accessors, blob = [], [], b""
    for i, arr in enumerate(arrays):
        data = arr.tobytes()
        views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": len(data),
                      "target": _ELEMENT_ARRAY_BUFFER if i == 3 else _ARRAY_BUFFER})
        blob += data + b"\0" * (-len(data) % 4)
        accessor = {"bufferView": i, "componentType": _UINT if i == 3 else _FLOAT, "count": n,
                    "type": "SCALAR" if i == 3 else "VEC3"}
        if i == 0:  # POSITION needs its bounds
            accessor["min"] = [float(v) for v in arr.min(axis=0)]
            accessor["max"] = [float(v) for v in arr.max(axis=0)]
        accessors.append(accessor)
    doc = {
        "asset": {"version": "2.0", "generator": "janus_vln_ros sim_bridge.scene_export"},
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "NORMAL": 1, "COLOR_0": 2},
                                    "indices": 3, "material": 0, "mode": 4}]}],
        "materials": [{"pbrMetallicRoughness": {"baseColorFactor": [1, 1, 1, 1],
                                                "metallicFactor": 0.0, "roughnessFactor": 1.0}}],
        "buffers": [{"byteLength": len(blob)}], "bufferViews": views, "accessors": accessors,
    }
    text = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + len(blob)
    return b"".join([struct.pack("<III", _GLB_MAGIC, 2, total),
                     struct.pack("<II", len(text), _JSON_CHUNK), text,
                     struct.pack("<II", len(blob), _BIN_CHUNK), blob])


def export_glb(scene: SceneSpec, path: str | Path) -> Path:
    """Write ``scene`` to ``path`` (.glb) in the frame habitat-sim expects; return the path."""
    positions, normals, colors = scene_triangles(scene)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(glb_bytes(habitat_to_mp3d(positions), habitat_to_mp3d(normals), colors))
    log.info("%s: %d triangles -> %s", scene.scene_id, len(positions) // 3, path)
    return path


def main(argv: list[str] | None = None) -> int:
    """CLI: export one embedded scene id (or SceneSpec .json) to a .glb file."""
    parser = argparse.ArgumentParser(description="Export an embedded scene as a habitat .glb")
    parser.add_argument("scene", help="embedded:apt_<seed> or a SceneSpec .json")
    parser.add_argument("out", help="the .glb file to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    export_glb(load_scene(args.scene), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
