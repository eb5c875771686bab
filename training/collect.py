r"""Expert data collection: roll the simulator's expert through a split, write trajectories.

Each episode is driven by an expert (see ``expert`` below) from its start until the expert says
STOP; the RGB frame seen before every action is written as ``images/<name>/rgb/{step:03d}.jpg``
and the trajectory as one record of the JanusVLN / StreamVLN annotation layout
(:mod:`training.annotations`), named ``{scene}_{dataset}_{episode:06d}`` as in the release.
Episodes whose expert does not stop within ``keep_distance`` of the goal are not kept.

Experts: ``reference`` follows the episode's reference path waypoint by waypoint (the route the
instruction describes; the release's DAgger expert), ``goal`` takes the shortest path to the
goal, ``gt`` replays the ``_gt`` file's dense actions.

Resumable: every finished trajectory is appended to ``annotations.rank<r>.jsonl`` once its frames
are on disk, and a restart skips finished (and rejected) episodes; an interrupted one is redone.
An episode whose rollout raises (a simulator error) is skipped and counted in ``errors``; the run
goes on, and the next run tries it again (the command then exits with code 1).
Sharded by ``torchrun`` rank; rank 0 merges everything into ``annotations.json`` at the end.

Command line (``janus-vln collect`` calls :func:`main`)::

    python -m training.collect --split data/r2r/train/train.json.gz --output-dir data/collect/r2r
    torchrun --nproc_per_node=8 -m training.collect --config config/collect_r2r.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from janus_core.actions import Action
from janus_core.config import dataclass_from_mapping, load_dataclass
from janus_core.console import ArgumentParser, add_verbose, fail, setup_logging
from sim_bridge.episodes import (
    Episode,
    EpisodeFormatError,
    episode_sort_key,
    find_gt_path,
    load_split,
)
from training.annotations import (
    AnnotationError,
    TrajectoryWriter,
    actions_from_executed,
    merge_shards,
    repair_torn_tail,
    trajectory_name,
)
from training.distributed import (
    DistInfo,
    barrier,
    destroy_process_group,
    get_dist_info,
    init_process_group,
    shard,
)
from training.waypoints import WaypointExpert

log = logging.getLogger(__name__)

EXPERTS = ("reference", "goal", "gt")
REJECTED_GLOB = "rejected.rank*.jsonl"


class CollectError(RuntimeError):
    """Collection cannot start (bad config, missing split); the message says which field."""


@dataclasses.dataclass
class SimSettings:
    """Simulator settings shared by collection and DAgger (passed to ``SimConfig``)."""

    backend: str = "embedded"
    width: int = 640
    height: int = 480
    hfov_deg: float = 79.0
    forward_step: float = 0.25
    turn_angle: float = 15.0
    sim: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class CollectConfig:
    """One collection run; loadable from YAML.

    ``split``: an R2R_VLNCE / RxR_VLNCE episode file (``gt``: its ``_gt`` file, default the
    sibling). ``dataset``: the name inside trajectory names (``r2r``, ``rxr``...). ``limit`` /
    ``episode_ids`` select episodes (after sorting by scene and id). ``max_steps``: give up on an
    episode after this many actions. ``keep_distance``: keep only trajectories whose final STOP is
    closer than this to the goal (metres, geodesic).
    """

    split: str = ""
    gt: str | None = None
    languages: list[str] | None = None
    dataset: str = "r2r"
    output_dir: str = "outputs/collect"
    expert: str = "reference"
    waypoint_radius: float = 1.8
    final_radius: float = 0.25
    keep_distance: float = 3.0
    max_steps: int = 500
    limit: int | None = None
    episode_ids: list[str] | None = None
    jpeg_quality: int = 95
    progress: bool = True
    sim: SimSettings = dataclasses.field(default_factory=SimSettings)

    def __post_init__(self):
        """Check values; the message names the field."""
        if isinstance(self.sim, dict):
            self.sim = dataclass_from_mapping(SimSettings, self.sim, "sim", CollectError)
        if self.expert not in EXPERTS:
            raise CollectError(f"expert must be one of {EXPERTS}, got {self.expert!r}")
        if self.max_steps <= 0:
            raise CollectError(f"max_steps must be positive, got {self.max_steps}")
        if isinstance(self.languages, str):
            self.languages = [self.languages]
        if self.episode_ids is not None:
            self.episode_ids = [str(e) for e in self.episode_ids]


def load_collect_config(path: str | Path | None = None, **overrides: Any) -> CollectConfig:
    """Read a :class:`CollectConfig` from YAML (or defaults), then apply non-None ``overrides``."""
    return load_dataclass(CollectConfig, path, overrides, CollectError, "collect config")


# ---- simulator and episodes ---------------------------------------------------------------------


def make_sim(settings: SimSettings) -> Any:
    """The backend's simulator for ``settings``."""
    from sim_bridge.backends import make_simulator
    from sim_bridge.simulator import SimConfig

    known = {f.name for f in dataclasses.fields(SimConfig)}
    values = {
        "backend": settings.backend, "width": settings.width, "height": settings.height,
        "hfov_deg": settings.hfov_deg, "forward_step": settings.forward_step,
        "turn_angle": settings.turn_angle, **settings.sim,
    }
    unknown = sorted(set(settings.sim) - known)
    if unknown:
        raise CollectError(f"sim.sim: unknown simulator settings {unknown}; known: {sorted(known)}")
    try:
        sim_cfg = SimConfig(**{k: v for k, v in values.items() if k in known})
    except (TypeError, ValueError) as err:
        raise CollectError(f"simulator settings: {err}") from None
    return make_simulator(sim_cfg)


def load_episodes(split: str, gt: str | None, languages: Sequence[str] | None,
                  limit: int | None = None,
                  episode_ids: Sequence[str] | None = None) -> list[Episode]:
    """The split's episodes in canonical order (scene, id), filtered and limited."""
    if not split:
        raise CollectError("no episode file: set split (--split) to an R2R/RxR .json(.gz) file")
    gt_path = gt if gt is not None else find_gt_path(split)
    episodes = sorted(load_split(split, gt_path=gt_path, languages=languages),
                      key=episode_sort_key)
    if episode_ids is not None:
        wanted = {str(e) for e in episode_ids}
        missing = wanted - {str(ep.episode_id) for ep in episodes}
        if missing:
            raise CollectError(f"{split}: episode ids not in the split: {sorted(missing)[:10]}")
        episodes = [ep for ep in episodes if str(ep.episode_id) in wanted]
    if limit is not None:
        episodes = episodes[: max(0, int(limit))]
    return episodes


def rejected_names(root: str | Path) -> set[str]:
    """Names of episodes a previous run rolled out but did not keep."""
    names = set()
    for path in Path(root).glob(REJECTED_GLOB):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                names.add(json.loads(line)["name"])
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a torn last line: that episode is simply redone
    return names


def rejected_path(root: str | Path, rank: int) -> Path:
    """The file where rank ``rank`` lists the episodes it rolled out and did not keep."""
    return Path(root) / f"rejected.rank{rank}.jsonl"


def record_rejected(root: str | Path, rank: int, name: str, **info: Any) -> None:
    """Remember that episode ``name`` was rolled out and not kept (so a restart skips it)."""
    with open(rejected_path(root, rank), "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"name": name, **info}) + "\n")


def _progress(items: Sequence[Any], enabled: bool, info: DistInfo, desc: str):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=f"{desc} [rank {info.rank}]", position=info.rank, dynamic_ncols=True)


# ---- one episode ------------------------------------------------------------------------------


def expert_rollout(sim: Any, episode: Episode, cfg: CollectConfig, recorder: Any) -> dict[str, Any]:
    """Drive the expert through ``episode``, writing frames to ``recorder``; return a summary."""
    obs = sim.reset(episode)
    start = np.asarray(obs.position, dtype=float)
    geodesic_start = float(sim.geodesic_distance(start.tolist(), episode.goal_position))
    waypoints = WaypointExpert(sim, episode, cfg.waypoint_radius, cfg.final_radius)
    gt_actions = list(episode.gt_actions or [])
    if cfg.expert == "gt" and not gt_actions:
        raise CollectError(f"episode {episode.episode_id}: expert 'gt' needs a _gt file with "
                           "actions (set gt, or use expert 'reference')")
    executed: list[int] = []
    travelled = 0.0
    stopped = False
    position = start
    for step in range(cfg.max_steps):
        recorder.add_frame(obs.rgb)
        if cfg.expert == "reference":
            waypoints.advance()
            action = waypoints.action()
        elif cfg.expert == "goal":
            action = Action(int(sim.expert_action()))
        else:
            action = Action(gt_actions[step]) if step < len(gt_actions) else Action.STOP
        executed.append(int(action))
        if action == Action.STOP:
            stopped = True
            break
        obs = sim.step(action)
        new = np.asarray(obs.position, dtype=float)
        travelled += float(np.linalg.norm(new - position))
        position = new
    final = float(sim.distance_to_goal())
    return {
        "executed": executed,
        "stopped": stopped,
        "distance_to_goal": final,
        "path_length": travelled,
        "geodesic_start": geodesic_start,
        "keep": stopped and math.isfinite(final) and final < cfg.keep_distance,
    }


# ---- the run ------------------------------------------------------------------------------------


def collect(cfg: CollectConfig, sim: Any | None = None,
            info: DistInfo | None = None) -> dict[str, int]:
    """Collect this rank's share of ``cfg``'s episodes; rank 0 merges; returns counts."""
    info = info or get_dist_info()
    out = Path(cfg.output_dir)
    episodes = load_episodes(cfg.split, cfg.gt, cfg.languages, cfg.limit, cfg.episode_ids)
    if not episodes:
        raise CollectError(f"{cfg.split}: no episodes after filtering")
    writer = TrajectoryWriter(out, rank=info.rank, jpeg_quality=cfg.jpeg_quality)
    repair_torn_tail(rejected_path(out, info.rank))
    done = writer.finished() | rejected_names(out)
    mine = shard(episodes, info)
    todo = [ep for ep in mine if trajectory_name(ep.scene_id, cfg.dataset, ep.episode_id)
            not in done]
    log.info("rank %d/%d: %d episodes, %d already done, %d to collect into %s", info.rank,
             info.world_size, len(mine), len(mine) - len(todo), len(todo), out)
    own_sim = sim is None
    sim = sim if sim is not None else make_sim(cfg.sim)
    counts = {"episodes": len(mine), "skipped": len(mine) - len(todo), "kept": 0, "rejected": 0,
              "errors": 0}
    try:
        for ep in _progress(todo, cfg.progress and bool(todo), info, "collect"):
            name = trajectory_name(ep.scene_id, cfg.dataset, ep.episode_id)
            recorder = writer.begin(name)
            try:
                result = expert_rollout(sim, ep, cfg, recorder)
            except Exception as err:  # noqa: BLE001 - one failing episode must not stop the run
                recorder.discard()  # not recorded as done: the next run tries it again
                counts["errors"] += 1
                log.warning("%s: expert rollout failed (%s: %s); skipped in this run", name,
                            type(err).__name__, err)
                continue
            except BaseException:
                recorder.discard()
                raise
            if not result["keep"]:
                recorder.discard()
                record_rejected(out, info.rank, name, episode_id=str(ep.episode_id),
                                stopped=result["stopped"],
                                distance_to_goal=_finite(result["distance_to_goal"]))
                counts["rejected"] += 1
                log.info("%s: not kept (stopped %s, %.2f m from the goal)", name,
                         result["stopped"], result["distance_to_goal"])
                continue
            recorder.finish(
                [ep.instruction], actions_from_executed(result["executed"]),
                scene_id=str(ep.scene_id), episode_id=str(ep.episode_id),
                trajectory_id=ep.trajectory_id, source=f"expert:{cfg.expert}",
                distance_to_goal=round(result["distance_to_goal"], 4),
                path_length=round(result["path_length"], 4),
                geodesic_distance=round(result["geodesic_start"], 4),
            )
            counts["kept"] += 1
    finally:
        if own_sim and hasattr(sim, "close"):
            sim.close()
    barrier(info)
    if info.is_main:
        merged = merge_shards(out)
        counts["total"] = len(merged)
        log.info("%s: %d trajectories (%d frames) in annotations.json", out, len(merged),
                 merged.num_frames)
    return counts


def _finite(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None


def build_parser() -> argparse.ArgumentParser:
    """The ``janus-vln collect`` argument parser."""
    p = ArgumentParser(prog="janus-vln collect", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="collection YAML (CollectConfig keys)")
    p.add_argument("--split", help="R2R/RxR episode file (.json or .json.gz)")
    p.add_argument("--gt", help="its _gt file (default: the sibling when present)")
    p.add_argument("--dataset", help="name used in trajectory names (r2r, rxr, ...)")
    p.add_argument("--output-dir")
    p.add_argument("--expert", choices=EXPERTS)
    p.add_argument("--limit", type=int)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--backend", help="simulator backend (embedded | habitat)")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--merge-only", action="store_true",
                   help="only fold the shard files of --output-dir into annotations.json")
    return add_verbose(p)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``janus-vln collect`` / ``python -m training.collect``."""
    from sim_bridge.backends import BackendError
    from sim_bridge.simulator import BackendUnavailableError

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        return _run(args)
    except (CollectError, AnnotationError, EpisodeFormatError, BackendError,
            BackendUnavailableError) as err:
        return fail("collect", err)


def _run(args: argparse.Namespace) -> int:
    if args.merge_only:
        if not args.output_dir:
            raise CollectError("--merge-only needs --output-dir")
        merge_shards(args.output_dir)
        return 0
    cfg = load_collect_config(
        args.config, split=args.split, gt=args.gt, dataset=args.dataset,
        output_dir=args.output_dir, expert=args.expert, limit=args.limit,
        max_steps=args.max_steps, progress=False if args.no_progress else None,
    )
    for key in ("backend", "width", "height"):
        if getattr(args, key) is not None:
            setattr(cfg.sim, key, getattr(args, key))
    info = get_dist_info()
    created = init_process_group(info, backend="gloo")
    try:
        counts = collect(cfg, info=info)
    finally:
        destroy_process_group(created)
    log.info("collect: %s", counts)
    if counts["errors"]:
        log.error("collect: %d episode(s) failed (see the warnings); run the same command "
                  "again to retry them", counts["errors"])
        return 1
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise SystemExit(main())
