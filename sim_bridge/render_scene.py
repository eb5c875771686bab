"""Render an embedded apartment: a few camera views and a top-down map with an expert path.

    python -m sim_bridge.render_scene --seed 42 --out renders/apt_42

writes ``view_<k>_<landmark>.png`` (the camera at 1.25 m looking at a landmark from inside its
room), ``views.png`` (those views as one mosaic of thumbnails, 256 colours), ``topdown.png``
(occupancy map with room names, landmarks, and the expert's path between two points 5-15 m
apart) and ``scene.json`` (the SceneSpec).
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import numpy as np

from janus_core.actions import Action
from janus_core.console import ArgumentParser, add_verbose, fail, setup_logging
from sim_bridge.navgrid import NavGrid, ShortestPathExpert, forward_vector
from sim_bridge.scene import SceneSpec, scene_id_for_seed
from sim_bridge.simulator import SimConfig

log = logging.getLogger(__name__)


def landmark_views(scene: SceneSpec, grid: NavGrid, count: int, rng: np.random.Generator
                   ) -> list[tuple[str, np.ndarray, float]]:
    """Up to ``count`` (landmark name, standing point, yaw) poses that look at landmarks.

    One landmark per room first (floor-standing ones before paintings); the camera stands in
    the landmark's room, 1.6-3.5 m in front of it, on the largest navigable island.
    """
    order = sorted(scene.landmarks, key=lambda lm: scene.objects[lm.object_index].position[1] > 0)
    picked, rooms = [], set()
    for lm in order:
        if lm.room not in rooms:
            picked.append(lm)
            rooms.add(lm.room)
    picked += [lm for lm in order if lm not in picked]
    ii, jj = np.nonzero(grid.largest_component())
    xs = grid.x0 + (jj + 0.5) * grid.cell
    zs = grid.z0 + (ii + 0.5) * grid.cell
    poses = []
    for lm in picked:
        if len(poses) >= count:
            break
        room = scene.room(lm.room)
        obj = scene.objects[lm.object_index]
        dx, dz = xs - obj.position[0], zs - obj.position[2]
        dist = np.hypot(dx, dz)
        front = dx * math.sin(obj.yaw) + dz * math.cos(obj.yaw)  # along the object's +z (front)
        inside = np.array([room.contains(x, z, 0.2) for x, z in zip(xs, zs)])
        ok = np.nonzero(inside & (dist > 1.6) & (dist < 3.5) & (front > 0.6 * dist))[0]
        if len(ok) == 0:
            continue
        # the farther good spots give the wider views of the room
        k = ok[np.argsort(-dist[ok])[:max(1, len(ok) // 5)]]
        pick = int(rng.choice(k))
        p = np.array([xs[pick], 0.0, zs[pick]])
        yaw = math.atan2(-(obj.position[0] - p[0]), -(obj.position[2] - p[2]))
        poses.append((lm.name, p, yaw))
    return poses


def expert_path(grid: NavGrid, rng: np.random.Generator, cfg: SimConfig,
                tries: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Start, goal, the expert's dense path (K, 3) and the start-goal geodesic distance."""
    for _ in range(tries):
        a = grid.sample_navigable_point(rng)
        b = grid.sample_navigable_point(rng)
        d = grid.geodesic_distance(a, b)
        if 5.0 <= d <= 15.0:
            break
    expert = ShortestPathExpert(grid, cfg.forward_step, cfg.turn_angle, cfg.expert_stop_radius,
                                cfg.allow_sliding)
    p, yaw = a.copy(), float(rng.uniform(-math.pi, math.pi))
    path = [p.copy()]
    for _ in range(1000):
        act = expert.next_action(p, yaw, b)
        if act == Action.STOP:
            break
        if act == Action.MOVE_FORWARD:
            p, _ = grid.try_step(p, cfg.forward_step * forward_vector(yaw), cfg.allow_sliding)
            path.append(p.copy())
        else:
            sign = 1 if act == Action.TURN_LEFT else -1
            yaw += sign * math.radians(cfg.turn_angle)
    return a, b, np.array(path), d


def draw_topdown(scene: SceneSpec, grid: NavGrid, path: np.ndarray, goal: np.ndarray,
                 scale: int = 3) -> np.ndarray:
    """The occupancy map with the path, the goal, room names and landmark names."""
    from PIL import Image, ImageDraw

    tdm = grid.top_down_map()
    img = Image.fromarray(tdm.draw(path=path, goal=goal, scale=scale,
                                   agent=(path[0], _heading(path))))
    dr = ImageDraw.Draw(img)

    def at(x: float, z: float) -> tuple[float, float]:
        (r, c), = tdm.to_pixel([[x, z]])
        return float((c + 0.5) * scale), float((r + 0.5) * scale)

    for room in scene.rooms:
        cx, cz = room.center
        px, py = at(cx, cz)
        text = room.name
        w = dr.textlength(text)
        dr.text((px - w / 2, py - 6), text, fill=(90, 90, 140))
    for lm in scene.landmarks:
        px, py = at(lm.position[0], lm.position[2])
        dr.ellipse([px - 3, py - 3, px + 3, py + 3], fill=(40, 150, 60))
        w = dr.textlength(lm.name)
        tx = px + 5 if px + 5 + w < img.width else px - 5 - w
        dr.text((tx, py - 5), lm.name, fill=(20, 100, 40))
    return np.asarray(img)


def _heading(path: np.ndarray) -> float:
    if len(path) < 2:
        return 0.0
    d = path[1] - path[0]
    return math.atan2(-d[0], -d[2])


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``janus-vln render``); returns the exit code."""
    parser = ArgumentParser(prog="janus-vln render",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=42, help="apartment seed")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--views", type=int, default=4, help="number of camera views")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--hfov", type=float, default=79.0, help="horizontal FOV (degrees)")
    parser.add_argument("--furniture", choices=["auto", "shapes", "sweethome3d"],
                        default="shapes")
    parser.add_argument("--thumb", type=int, default=320, help="mosaic thumbnail width")
    parser.add_argument("--map-scale", type=int, default=3, help="top-down pixels per cell")
    add_verbose(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    from PIL import Image

    from sim_bridge.embedded import EmbeddedSimulator

    out: Path = args.out
    try:
        if args.seed < 0 or args.views < 0 or args.thumb < 1 or args.map_scale < 1:
            raise ValueError("--seed and --views must be >= 0, --thumb and --map-scale >= 1")
        cfg = SimConfig(width=args.width, height=args.height, hfov_deg=args.hfov,
                        furniture=args.furniture)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file; give a folder")
    except ValueError as err:
        return fail("render", err)
    out.mkdir(parents=True, exist_ok=True)
    sim = EmbeddedSimulator(cfg)
    try:
        scene = sim.load_scene(scene_id_for_seed(args.seed))
        scene.save(out / "scene.json")
        grid = sim.navgrid
        rng = np.random.default_rng(args.seed)
        thumbs = []
        for k, (name, p, yaw) in enumerate(landmark_views(scene, grid, args.views, rng)):
            rgb, _ = sim.render_at(p, yaw)
            slug = name.replace(" ", "_")
            Image.fromarray(rgb).save(out / f"view_{k}_{slug}.png", optimize=True)
            th = args.thumb
            thumbs.append(np.asarray(Image.fromarray(rgb).resize(
                (th, th * rgb.shape[0] // rgb.shape[1]), Image.LANCZOS)))
            log.info("view %d: %s from (%.2f, %.2f)", k, name, p[0], p[2])
        if thumbs:
            cols = 1 if len(thumbs) == 1 else 2 if len(thumbs) <= 4 else 3
            rows = []
            for i in range(0, len(thumbs), cols):
                row = thumbs[i:i + cols]
                row += [np.zeros_like(thumbs[0])] * (cols - len(row))
                rows.append(np.concatenate(row, axis=1))
            mosaic = Image.fromarray(np.concatenate(rows, axis=0))
            # a 256-colour palette keeps the mosaic small enough for a README
            mosaic.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
                out / "views.png", optimize=True)
        start, goal, path, dist = expert_path(grid, rng, cfg)
        length = float(np.sum(np.linalg.norm(np.diff(path, axis=0), axis=1)))
        log.info("expert path: geodesic %.2f m, walked %.2f m in %d forward steps", dist, length,
                 len(path) - 1)
        Image.fromarray(draw_topdown(scene, grid, path, goal, args.map_scale)).save(
            out / "topdown.png", optimize=True)
        log.info("wrote %s", out)
    finally:
        sim.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
