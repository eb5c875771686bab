"""Generate VLN-CE splits of embedded episodes in the official R2R_VLNCE / RxR_VLNCE formats.

For every split the generator picks apartments (``embedded:apt_<seed>``), samples start/goal
pairs on the largest navigable island with an R2R-like geodesic length (roughly 5-20 m, mean
about 9.9 m; shorter or longer pairs are rejected), rolls the simulator's shortest-path expert
from the start to get the dense ground truth (``_gt`` locations / actions / forward_steps),
stores the taut shortest path (:meth:`~sim_bridge.navgrid.NavGrid.shortest_path`: its corners
plus a waypoint at least every 2 m) as ``reference_path``, and writes an instruction that names
the rooms, turns and landmarks along the route (:mod:`sim_bridge.instructions`).

Consistency of what is stored: ``info.geodesic_distance`` is the simulator's geodesic (fast
marching; the evaluator recomputes the same value); the ``reference_path`` length is within a
grid cell of the true shortest path, which fast marching overestimates by up to about 2 % on
these apartments, so ``geodesic - cell - 0.025 * geodesic <= length <= geodesic + cell``; the
expert's ``_gt`` path is longer by its 15-degree heading quantisation and stops within
``expert_stop_radius`` of the goal (see test_generate.py for the bounds).

Scenes: ``train`` uses one range of apartment seeds; ``val_seen`` reuses the train apartments
with new episodes; ``val_unseen`` (and any split named ``*unseen*`` or ``test*``) uses seeds no
other split uses. Everything is deterministic given ``--seed``.

Layout written under ``--out`` (the VLN-CE layout)::

    {split}/{split}.json.gz      {split}/{split}_gt.json.gz               (R2R format)
    {split}/{split}_guide.json.gz  {split}/{split}_guide_gt.json.gz       (--format rxr)
    generation.json              the settings and per-split statistics

Command line::

    python -m sim_bridge.generate --out data/embedded_r2r --splits train:20,val_unseen:10 --seed 0
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from janus_core.actions import Action
from janus_core.console import ArgumentParser, add_verbose, fail, setup_logging
from sim_bridge.episodes import (
    R2R,
    RXR,
    Episode,
    Goal,
    build_vocab,
    gt_path_for,
    save_split,
    yaw_to_quaternion,
)
from sim_bridge.instructions import describe_route
from sim_bridge.metrics import dedup_consecutive

log = logging.getLogger(__name__)

SEEN_SPLITS = ("train", "val_seen")
# apartment seed ranges per split family (seed_base + offset + i); unseen families never overlap
_SCENE_OFFSETS = {"train": 0, "val_unseen": 10_000, "test": 20_000}
_UNSEEN_STRIDE = 10_000


class GenerationError(RuntimeError):
    """Episodes could not be generated as asked (bad arguments, no feasible pairs)."""


@dataclasses.dataclass
class GenerateConfig:
    """Settings of a generated dataset.

    ``splits`` maps split name to episode count. ``episodes_per_scene``: how many episodes one
    apartment contributes (the number of scenes follows). ``min_geodesic`` / ``max_geodesic``
    bound the start-goal geodesic distance, drawn per episode from a normal with
    ``mean_geodesic`` / ``std_geodesic``, clipped to the bounds (R2R-like: the realised mean is
    about 9.9 m because long pairs are rarer in small apartments). ``instructions_per_path``:
    R2R has 3 instructions per path (distinct episodes sharing a ``trajectory_id``).
    ``format``: ``r2r`` or ``rxr`` (``language`` is then written on every instruction).
    ``sim``: simulator settings (``SimConfig`` fields) used for the expert rollouts; the motion
    model must match the one the episodes are evaluated with.
    """

    splits: dict[str, int] = dataclasses.field(default_factory=lambda: {"train": 20})
    seed: int = 0
    episodes_per_scene: int = 5
    min_geodesic: float = 5.0
    max_geodesic: float = 20.0
    mean_geodesic: float = 10.4  # drawn targets; feasibility pulls the realised mean to ~9.9
    std_geodesic: float = 2.5
    instructions_per_path: int = 1
    format: str = R2R
    language: str = "en-US"
    reference_spacing: float = 2.0
    max_expert_steps: int = 500
    goal_tolerance: float = 0.5  # the expert must end this close (geodesic) to the goal
    tries_per_episode: int = 40
    sim: dict[str, Any] = dataclasses.field(default_factory=lambda: {"render": False})

    def __post_init__(self):
        """Validate ranges; messages name the field."""
        if self.format not in (R2R, RXR):
            raise GenerationError(f"format must be 'r2r' or 'rxr', got {self.format!r}")
        if not 0 < self.min_geodesic < self.max_geodesic:
            raise GenerationError(
                f"need 0 < min_geodesic < max_geodesic, got {self.min_geodesic}, "
                f"{self.max_geodesic}"
            )
        if self.episodes_per_scene < 1 or self.instructions_per_path < 1:
            raise GenerationError("episodes_per_scene and instructions_per_path must be >= 1")
        for name, n in self.splits.items():
            if n < 0:
                raise GenerationError(f"split {name!r}: episode count must be >= 0, got {n}")


def parse_splits(text: str) -> dict[str, int]:
    """``"train:20,val_unseen:10"`` -> ``{"train": 20, "val_unseen": 10}``."""
    out: dict[str, int] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, count = part.partition(":")
        if not sep or not name or not count.strip().isdigit():
            raise GenerationError(f"--splits: expected NAME:COUNT[,NAME:COUNT...], got {part!r}")
        out[name.strip()] = int(count)
    if not out:
        raise GenerationError("--splits: no splits given")
    return out


def scene_seeds(split: str, count: int, seed: int) -> list[int]:
    """Apartment seeds of a split: train and val_seen share them, unseen splits get their own."""
    base = seed * 100_000
    if split in SEEN_SPLITS:
        offset = _SCENE_OFFSETS["train"]
    elif split in _SCENE_OFFSETS:
        offset = _SCENE_OFFSETS[split]
    else:  # any other split: its own range, from a stable hash of the name
        offset = _UNSEEN_STRIDE * (3 + zlib.crc32(split.encode()) % 6)
    return [base + offset + i for i in range(count)]


def _split_rng(cfg: GenerateConfig, split: str, scene_seed: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, zlib.crc32(split.encode()), scene_seed])


# ---- one scene -----------------------------------------------------------------------------------


def _make_sim(cfg: GenerateConfig) -> Any:
    from sim_bridge.backends import make_simulator
    from sim_bridge.simulator import SimConfig

    known = {f.name for f in dataclasses.fields(SimConfig)}
    unknown = sorted(set(cfg.sim) - known)
    if unknown:
        raise GenerationError(f"sim: unknown simulator settings {unknown}; known {sorted(known)}")
    try:
        sim_cfg = SimConfig(**{"backend": "embedded", **cfg.sim})
    except ValueError as err:
        raise GenerationError(f"simulator settings: {err}") from None
    return make_simulator(sim_cfg)


def _scene_and_grid(sim: Any, scene_id: str, cfg: GenerateConfig) -> tuple[Any, Any]:
    """The scene spec and navigation grid of ``scene_id``, loaded into ``sim`` when it can."""
    if hasattr(sim, "load_scene") and hasattr(type(sim), "navgrid"):
        spec = sim.load_scene(scene_id)
        return spec, sim.navgrid
    from sim_bridge.navgrid import NavGrid
    from sim_bridge.scene import load_scene

    sim_cfg = getattr(sim, "config", None)
    radius = float(getattr(sim_cfg, "agent_radius", cfg.sim.get("agent_radius", 0.1)))
    cell = float(getattr(sim_cfg, "grid_cell", cfg.sim.get("grid_cell", 0.05)))
    spec = load_scene(scene_id)
    return spec, NavGrid(spec, agent_radius=radius, cell_size=cell)


def _reference_path(path: np.ndarray, goal: Sequence[float], spacing: float) -> list[list[float]]:
    """Waypoints of a taut polyline, its length kept exactly.

    Every corner, evenly spaced points on any segment longer than ``spacing`` metres, ending at
    ``goal``.
    """
    path = np.asarray(path, dtype=float)
    pts = [path[0].tolist()]
    for a, b in zip(path[:-1], path[1:]):
        n = max(1, int(math.ceil(float(np.linalg.norm(b - a)) / spacing - 1e-9)))
        pts += [(a + (b - a) * (k / n)).tolist() for k in range(1, n + 1)]
    end = [float(v) for v in goal]
    if np.linalg.norm(np.subtract(pts[-1], end)) < 1e-6:
        pts[-1] = end
    else:  # the path ends where an off-grid goal was snapped to; the goal itself is the end
        pts.append(end)
    return pts


def _rollout(sim: Any, episode: Episode, max_steps: int) -> tuple[list, list[int], Any]:
    """Roll the simulator's expert from the episode start: (positions per step, actions, sim)."""
    obs = sim.reset(episode)
    positions = [[float(v) for v in obs.position]]
    actions: list[int] = []
    for _ in range(max_steps):
        action = Action(int(sim.expert_action()))
        actions.append(int(action))
        if action == Action.STOP:
            break
        obs = sim.step(action)
        positions.append([float(v) for v in obs.position])
    return positions, actions, sim


def _sample_pair(grid: Any, rng: np.random.Generator, cfg: GenerateConfig, target: float,
                 spec: Any) -> tuple[np.ndarray, np.ndarray, float] | None:
    """A (start, goal, geodesic) pair with geodesic close to ``target``, preferring other rooms."""
    start = grid.sample_navigable_point(rng)
    field = grid.field(start)
    dist = np.asarray(field.distances, dtype=np.float64)
    ok = np.isfinite(dist) & (dist >= cfg.min_geodesic) & (dist <= cfg.max_geodesic)
    for tol in (0.25, 0.5, 1.0, 2.0):
        cand = ok & (np.abs(dist - target) <= tol)
        if cand.any():
            break
    else:
        return None
    ii, jj = np.nonzero(cand)
    start_room = spec.room_at(float(start[0]), float(start[2]))
    order = rng.permutation(len(ii))
    pick = None
    for k in order[:50]:
        x, z = grid.cell_center(int(ii[k]), int(jj[k]))
        if spec.room_at(x, z) is not start_room:
            pick = (x, z)
            break
    if pick is None:
        x, z = grid.cell_center(int(ii[order[0]]), int(jj[order[0]]))
        pick = (x, z)
    goal = np.array([pick[0], 0.0, pick[1]])
    return start, goal, float(grid.geodesic_distance(start, goal))


def generate_scene_episodes(
    sim: Any,
    scene_id: str,
    count: int,
    rng: np.random.Generator,
    cfg: GenerateConfig,
    first_id: int,
    first_trajectory: int,
) -> list[Episode]:
    """Up to ``count`` episodes in one apartment (fewer when pairs keep failing)."""
    try:
        spec, grid = _scene_and_grid(sim, scene_id, cfg)
    except Exception as err:  # noqa: BLE001 - a scene that does not build is skipped, not fatal
        log.warning("%s: scene could not be built (%s: %s); skipping it", scene_id,
                    type(err).__name__, err)
        return []
    episodes: list[Episode] = []
    tries = 0
    paths = 0
    while len(episodes) < count and tries < cfg.tries_per_episode * max(count, 1):
        tries += 1
        target = float(np.clip(rng.normal(cfg.mean_geodesic, cfg.std_geodesic),
                               cfg.min_geodesic, cfg.max_geodesic))
        pair = _sample_pair(grid, rng, cfg, target, spec)
        if pair is None:
            continue
        start, goal, geodesic = pair
        yaw = float(rng.uniform(-math.pi, math.pi))
        probe = Episode(
            episode_id=str(first_id + len(episodes)),
            scene_id=scene_id,
            start_position=[float(v) for v in start],
            start_rotation=yaw_to_quaternion(yaw),
            goals=[Goal(position=[float(v) for v in goal], radius=3.0)],
            instruction="(generating)",
        )
        positions, actions, _ = _rollout(sim, probe, cfg.max_expert_steps)
        end_dist = float(sim.distance_to_goal())
        sim_geodesic = float(sim.geodesic_distance(probe.start_position, probe.goal_position))
        if not actions or actions[-1] != int(Action.STOP) or end_dist > cfg.goal_tolerance:
            log.debug("%s: expert ended %.2f m from the goal after %d actions; rejected",
                      scene_id, end_dist, len(actions))
            continue
        if not cfg.min_geodesic <= sim_geodesic <= cfg.max_geodesic:
            continue
        dense = dedup_consecutive(positions)
        shortest = grid.shortest_path(probe.start_position, probe.goal_position)
        if len(shortest) < 2:
            continue
        reference = _reference_path(shortest, probe.goal_position, cfg.reference_spacing)
        for _ in range(cfg.instructions_per_path):
            if len(episodes) >= count:
                break
            text = describe_route(dense, yaw, spec.room_at, spec.landmarks, rng,
                                  goal=probe.goal_position)
            episodes.append(dataclasses.replace(
                probe,
                episode_id=str(first_id + len(episodes)),
                trajectory_id=first_trajectory + paths,
                instruction=text,
                info={"geodesic_distance": round(sim_geodesic, 4)},
                reference_path=[[round(v, 4) for v in p] for p in reference],
                gt_locations=[[round(v, 5) for v in p] for p in dense],
                gt_actions=list(actions),
                gt_forward_steps=sum(1 for a in actions if a == int(Action.MOVE_FORWARD)),
                language=cfg.language if cfg.format == RXR else None,
                instruction_id=(str(first_id + len(episodes)) if cfg.format == RXR else None),
            ))
        paths += 1
    if len(episodes) < count:
        log.warning("%s: made %d of %d episodes after %d tries", scene_id, len(episodes), count,
                    tries)
    return episodes


# ---- whole dataset -------------------------------------------------------------------------------


def split_file_names(split: str, fmt: str) -> tuple[str, str]:
    """File names of a split and its ground truth in the official layout."""
    stem = f"{split}_guide" if fmt == RXR else split
    name = f"{stem}.json.gz"
    return name, gt_path_for(Path(name)).name


def generate_split(sim: Any, split: str, count: int, cfg: GenerateConfig) -> list[Episode]:
    """``count`` episodes of ``split`` over as many apartments as needed."""
    from sim_bridge.scene import scene_id_for_seed

    n_scenes = max(1, math.ceil(count / cfg.episodes_per_scene))
    seeds = scene_seeds(split, n_scenes * 3, cfg.seed)  # spares for apartments that fail
    episodes: list[Episode] = []
    used = 0
    for scene_seed in seeds:
        if len(episodes) >= count:
            break
        want = min(cfg.episodes_per_scene, count - len(episodes))
        scene_id = scene_id_for_seed(scene_seed)
        made = generate_scene_episodes(
            sim, scene_id, want, _split_rng(cfg, split, scene_seed), cfg,
            first_id=len(episodes) + 1, first_trajectory=len(episodes) + 1,
        )
        used += 1
        episodes += made
    if len(episodes) < count:
        raise GenerationError(f"split {split!r}: made only {len(episodes)} of {count} episodes "
                              f"over {used} apartments")
    return episodes


def check_output(out_dir: str | Path, cfg: GenerateConfig, force: bool = False) -> None:
    """GenerationError unless ``out_dir`` can take ``cfg``'s splits.

    ``out_dir`` must be a folder (or not exist yet); a split file that already holds episodes is
    kept unless ``force``: evaluations may be tied to it.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise GenerationError(f"--out {out} is a file; give a folder for the splits")
    for split in cfg.splits:
        name, _ = split_file_names(split, cfg.format)
        path = out / split / name
        if path.exists() and not force:
            raise GenerationError(
                f"{path} exists; add --force to replace split {split!r} (evaluation runs on it "
                "will refuse to resume on the new episodes), or choose another --out")


def generate_dataset(out_dir: str | Path, cfg: GenerateConfig, sim: Any | None = None
                     ) -> dict[str, Path]:
    """Generate every split of ``cfg`` under ``out_dir``; return {split: episode file}."""
    out = Path(out_dir)
    own = sim is None
    sim = _make_sim(cfg) if own else sim
    written: dict[str, Path] = {}
    stats: dict[str, Any] = {}
    try:
        for split, count in cfg.splits.items():
            episodes = generate_split(sim, split, count, cfg)
            name, gt_name = split_file_names(split, cfg.format)
            path = out / split / name
            vocab = build_vocab(ep.instruction for ep in episodes) if cfg.format == R2R else None
            save_split(path, episodes, gt_path=out / split / gt_name, fmt=cfg.format,
                       instruction_vocab=vocab)
            geo = [ep.geodesic_distance for ep in episodes]
            stats[split] = {
                "episodes": len(episodes),
                "scenes": sorted({ep.scene_id for ep in episodes}),
                "geodesic_mean": float(np.mean(geo)) if geo else None,
                "geodesic_min": float(np.min(geo)) if geo else None,
                "geodesic_max": float(np.max(geo)) if geo else None,
                "expert_steps_mean": float(np.mean([len(ep.gt_actions) for ep in episodes]))
                if episodes else None,
            }
            written[split] = path
            log.info("%s: %d episodes in %d scenes, geodesic mean %.2f m -> %s", split,
                     len(episodes), len(stats[split]["scenes"]),
                     stats[split]["geodesic_mean"] or 0.0, path)
    finally:
        if own:
            sim.close()
    (out / "generation.json").write_text(json.dumps(
        {"config": dataclasses.asdict(cfg), "splits": stats}, indent=2, sort_keys=True) + "\n")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m sim_bridge.generate --out DIR --splits train:20,val_unseen:10``."""
    p = ArgumentParser(prog="janus-vln generate", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--force", action="store_true",
                   help="replace split files that already exist in --out")
    p.add_argument("--splits", default="train:20,val_seen:5,val_unseen:10",
                   help="NAME:COUNT[,NAME:COUNT...]")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (apartments, episodes)")
    p.add_argument("--episodes-per-scene", type=int, default=5)
    p.add_argument("--instructions-per-path", type=int, default=1)
    p.add_argument("--format", choices=(R2R, RXR), default=R2R)
    p.add_argument("--language", default="en-US", help="RxR instruction language code")
    p.add_argument("--min-geodesic", type=float, default=5.0)
    p.add_argument("--max-geodesic", type=float, default=20.0)
    p.add_argument("--forward-step", type=float, default=0.25)
    p.add_argument("--turn-angle", type=float, default=15.0)
    add_verbose(p)
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    try:
        cfg = GenerateConfig(
            splits=parse_splits(args.splits), seed=args.seed,
            episodes_per_scene=args.episodes_per_scene,
            instructions_per_path=args.instructions_per_path, format=args.format,
            language=args.language, min_geodesic=args.min_geodesic,
            max_geodesic=args.max_geodesic,
            sim={"render": False, "forward_step": args.forward_step,
                 "turn_angle": args.turn_angle},
        )
        check_output(args.out, cfg, force=args.force)
        generate_dataset(args.out, cfg)
    except GenerationError as err:
        return fail("generate", err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
