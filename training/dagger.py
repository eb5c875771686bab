r"""DAgger as the release runs it: the model drives, the expert corrects, kept rollouts retrain it.

One round (reference digest §5.5):

1. **Collect.** The current model drives every episode of the split (``beta = 0``). The
   waypoint expert (:mod:`training.waypoints`) runs alongside; the rule of
   :mod:`training.dagger_rules` hands control to the expert after a model error and back at the
   next waypoint, and replaces a premature STOP. Each frame is labelled with the action actually
   executed. Episodes are kept by the release's filter (final distance < 0.5 m and an inefficient
   path) and written in the annotation layout to ``<output_dir>/round_<k>/data``; the others are
   listed in ``rejected.rank<r>.jsonl`` so a restart does not roll them out again.
2. **Merge.** The round's set joins the training set: ``base_data`` + every round's data so far.
3. **Train.** SFT (:mod:`training.sft`) from the previous round's model (``train_from:
   previous``) or the initial one, into ``<output_dir>/round_<k>/model``, which drives round k+1.

``rounds`` rounds run in one command. ``<output_dir>/dagger_state.json`` records finished stages,
and collection and training each resume, so an interrupted run picks up where it stopped.

Command line (``janus-vln dagger`` calls :func:`main`)::

    python -m training.dagger --config config/dagger_tiny.yaml
    torchrun --nproc_per_node=8 -m training.dagger --config config/dagger_r2r.yaml --rounds 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from janus_core.actions import Action
from janus_core.checkpoint import CheckpointError
from janus_core.config import dataclass_from_mapping, load_dataclass
from janus_core.console import ArgumentParser, add_verbose, fail, setup_logging
from janus_core.interface import Observation, Policy
from sim_bridge.episodes import Episode, EpisodeFormatError
from training.annotations import (
    AnnotationError,
    TrajectoryWriter,
    actions_from_executed,
    merge_shards,
    repair_torn_tail,
    trajectory_name,
)
from training.collect import (
    CollectError,
    SimSettings,
    load_episodes,
    make_sim,
    record_rejected,
    rejected_names,
    rejected_path,
)
from training.dagger_rules import (
    DaggerController,
    DaggerRule,
    keep_episode,
    path_ratio,
    segment_gt_actions,
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

STATE_FILE = "dagger_state.json"


class DaggerError(RuntimeError):
    """DAgger cannot start or continue; the message names the field or file."""


@dataclasses.dataclass
class DaggerConfig:
    """A DAgger run; loadable from YAML (see ``config/dagger_*.yaml``).

    ``policy``: the model that drives round 1 (a checkpoint folder, or a preset for tests).
    ``split``/``gt``/``languages``/``limit``/``episode_ids``: the episodes rolled out each round
    (release: R2R ``train`` or English RxR ``train_guide``). ``dataset``: the name inside
    trajectory names. ``rule``: :class:`training.dagger_rules.DaggerRule` fields. ``max_steps``:
    environment step limit (habitat's 500); ``force_stop_at``: the model's action becomes STOP
    from this step on (the release's 400). ``base_data``: the SFT set the DAgger data joins.
    ``train_config``: the SFT YAML of the retraining, with ``train_overrides`` on top.
    """

    policy: str = ""
    split: str = ""
    gt: str | None = None
    languages: list[str] | None = None
    dataset: str = "r2r"
    limit: int | None = None
    episode_ids: list[str] | None = None
    output_dir: str = "outputs/dagger"
    rounds: int = 1
    rule: DaggerRule = dataclasses.field(default_factory=DaggerRule)
    max_steps: int = 500
    force_stop_at: int | None = 400
    sim: SimSettings = dataclasses.field(default_factory=SimSettings)
    base_data: list[str] = dataclasses.field(default_factory=list)
    train_config: str = "config/train_tiny.yaml"
    train_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    train_from: str = "previous"
    jpeg_quality: int = 95
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        """Build nested settings and check values; the message names the field."""
        if isinstance(self.rule, dict):
            self.rule = dataclass_from_mapping(DaggerRule, self.rule, "rule", DaggerError)
        if isinstance(self.sim, dict):
            self.sim = dataclass_from_mapping(SimSettings, self.sim, "sim", DaggerError)
        if isinstance(self.base_data, (str, Path)):
            self.base_data = [str(self.base_data)]
        if self.rounds < 1:
            raise DaggerError(f"rounds must be >= 1, got {self.rounds}")
        if self.train_from not in ("previous", "initial"):
            raise DaggerError(
                f"train_from must be 'previous' or 'initial', got {self.train_from!r}"
            )
        if self.max_steps <= 0:
            raise DaggerError(f"max_steps must be positive, got {self.max_steps}")
        if isinstance(self.languages, str):
            self.languages = [self.languages]
        if self.episode_ids is not None:
            self.episode_ids = [str(e) for e in self.episode_ids]


def load_dagger_config(path: str | Path | None = None, **overrides: Any) -> DaggerConfig:
    """Read a :class:`DaggerConfig` from YAML (or defaults), then apply non-None ``overrides``."""
    return load_dataclass(DaggerConfig, path, overrides, DaggerError, "dagger config")


# ---- one episode ------------------------------------------------------------------------------


@dataclasses.dataclass
class RolloutResult:
    """What one DAgger rollout did and whether the filter keeps it."""

    executed: list[int]
    by: list[str]  # "model" / "expert" per step
    stopped: bool
    distance_to_goal: float
    path_length: float
    geodesic_start: float
    pl: float
    model_failed: bool
    errors: list[tuple[int, str]]
    keep: bool


def dagger_rollout(
    sim: Any,
    policy: Policy,
    episode: Episode,
    rule: DaggerRule,
    on_frame: Callable[[np.ndarray], None],
    max_steps: int = 500,
    force_stop_at: int | None = 400,
    rng: random.Random | None = None,
) -> RolloutResult:
    """Roll ``policy`` through ``episode`` under the release's DAgger rule.

    ``on_frame`` receives every frame the agent acts on (the frames of the trajectory). The model
    is asked at every step, also while the expert drives, so its memory sees every frame.
    """
    obs = sim.reset(episode)
    policy.reset(episode.instruction)
    expert = WaypointExpert(sim, episode, rule.waypoint_radius, rule.final_waypoint_radius)
    counts = segment_gt_actions(
        episode.reference_path, episode.gt_locations, episode.gt_actions,
        getattr(getattr(sim, "cfg", None), "forward_step", 0.25),
        getattr(getattr(sim, "cfg", None), "turn_angle", 15.0),
    )
    if len(counts) != expert.num_segments:  # a reference path of fewer than 2 points
        counts = [sum(counts)] * expert.num_segments
    ctrl = DaggerController(rule, counts, rng=rng)
    position = np.asarray(obs.position, dtype=float)
    geodesic_start = float(sim.geodesic_distance(position.tolist(), episode.goal_position))
    executed: list[int] = []
    by: list[str] = []
    errors: list[tuple[int, str]] = []
    travelled = 0.0
    stopped = False
    for step in range(max_steps):
        on_frame(obs.rgb)
        before = expert.index
        expert.advance()
        expert_action = expert.action()
        for _ in range(expert.index - before):
            ctrl.waypoint_reached()
        observation = Observation(
            rgb=obs.rgb, depth=getattr(obs, "depth", None),
            pose=(float(obs.position[0]), float(obs.position[1]), float(obs.position[2]),
                  float(getattr(obs, "yaw", 0.0))),
            stamp=float(step),
        )
        model_action = Action(int(policy.act(observation).action))
        if force_stop_at is not None and step >= force_stop_at:
            model_action = Action.STOP
        decision = ctrl.decide(model_action, expert_action, float(sim.distance_to_goal()))
        if decision.error:
            errors.append((step, decision.error))
        executed.append(int(decision.action))
        by.append(decision.by)
        if decision.action == Action.STOP:
            stopped = True
            break
        obs = sim.step(decision.action)
        new = np.asarray(obs.position, dtype=float)
        travelled += float(np.linalg.norm(new - position))
        position = new
    final = float(sim.distance_to_goal())
    pl = path_ratio(geodesic_start, travelled)
    keep = math.isfinite(final) and keep_episode(rule, final, pl, ctrl.model_failed)
    return RolloutResult(
        executed=executed, by=by, stopped=stopped, distance_to_goal=final,
        path_length=travelled, geodesic_start=geodesic_start, pl=pl,
        model_failed=ctrl.model_failed, errors=errors, keep=keep,
    )


# ---- one round ---------------------------------------------------------------------------------


def collect_round(
    cfg: DaggerConfig,
    policy: Policy,
    out: str | Path,
    round_index: int,
    sim: Any | None = None,
    info: DistInfo | None = None,
) -> dict[str, Any]:
    """Roll ``policy`` through this rank's episodes into annotation folder ``out`` (resumable)."""
    info = info or get_dist_info()
    out = Path(out)
    episodes = load_episodes(cfg.split, cfg.gt, cfg.languages, cfg.limit, cfg.episode_ids)
    if not episodes:
        raise DaggerError(f"{cfg.split}: no episodes after filtering")
    writer = TrajectoryWriter(out, rank=info.rank, jpeg_quality=cfg.jpeg_quality)
    repair_torn_tail(rejected_path(out, info.rank))
    done = writer.finished() | rejected_names(out)
    mine = shard(episodes, info)
    todo = [ep for ep in mine
            if trajectory_name(ep.scene_id, cfg.dataset, ep.episode_id) not in done]
    log.info("round %d, rank %d/%d: %d episodes, %d done, %d to roll out into %s", round_index,
             info.rank, info.world_size, len(mine), len(mine) - len(todo), len(todo), out)
    own_sim = sim is None
    sim = sim if sim is not None else make_sim(cfg.sim)
    stats = {"episodes": len(mine), "skipped": len(mine) - len(todo), "kept": 0, "rejected": 0,
             "model_failed": 0, "success": 0, "errors": 0}
    items: Sequence[Episode] = todo
    if cfg.progress and todo:
        from tqdm import tqdm

        items = tqdm(todo, desc=f"dagger round {round_index} [rank {info.rank}]",
                     position=info.rank, dynamic_ncols=True)
    try:
        for ep in items:
            name = trajectory_name(ep.scene_id, cfg.dataset, ep.episode_id)
            rng = random.Random(f"{cfg.seed}|{round_index}|{ep.scene_id}|{ep.episode_id}")
            recorder = writer.begin(name)
            try:
                result = dagger_rollout(sim, policy, ep, cfg.rule, recorder.add_frame,
                                        cfg.max_steps, cfg.force_stop_at, rng)
            except Exception as err:  # noqa: BLE001 - one failing episode must not stop the round
                recorder.discard()  # not recorded as done: a rerun of the round tries it again
                stats["errors"] += 1
                log.warning("%s: DAgger rollout failed (%s: %s); skipped", name,
                            type(err).__name__, err)
                continue
            except BaseException:
                recorder.discard()
                raise
            stats["model_failed"] += int(result.model_failed)
            stats["success"] += int(result.stopped and result.distance_to_goal < 3.0)
            summary = {
                "episode_id": str(ep.episode_id), "round": round_index,
                "model_failed": result.model_failed, "pl": round(result.pl, 4),
                "distance_to_goal": round(result.distance_to_goal, 4)
                if math.isfinite(result.distance_to_goal) else None,
                "expert_steps": result.by.count("expert"),
                "model_steps": result.by.count("model"),
            }
            if not result.keep:
                recorder.discard()
                record_rejected(out, info.rank, name, **summary)
                stats["rejected"] += 1
                continue
            recorder.finish(
                [ep.instruction], actions_from_executed(result.executed),
                scene_id=str(ep.scene_id), trajectory_id=ep.trajectory_id, source="dagger",
                path_length=round(result.path_length, 4), **summary,
            )
            stats["kept"] += 1
    finally:
        if own_sim and hasattr(sim, "close"):
            sim.close()
    barrier(info)
    if info.is_main:
        merged = merge_shards(out)
        stats["total"] = len(merged)
        if not len(merged):
            log.warning(
                "DAgger round %d kept no rollout (%d rejected by the filter %s, %d errors): the "
                "round adds no training data", round_index, stats["rejected"], cfg.rule,
                stats["errors"])
    log.info("round %d collection: %s", round_index, stats)
    return stats


# ---- several rounds ---------------------------------------------------------------------------


def _read_state(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"rounds": {}}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DaggerError(f"{path} is not valid JSON ({err}); remove it to start over") from err


def _write_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def default_policy_factory(spec: str) -> Policy:
    """The policy that drives a round: a checkpoint folder or preset via ``build_policy``."""
    from janus_core.factory import build_policy

    return build_policy(spec)


def round_dir(cfg: DaggerConfig, k: int) -> Path:
    """The folder of round ``k`` (1-based): ``data/`` (annotations) and ``model/`` (checkpoint)."""
    return Path(cfg.output_dir) / f"round_{k}"


def run_dagger(
    cfg: DaggerConfig,
    policy_factory: Callable[[str], Policy] = default_policy_factory,
    sim: Any | None = None,
    train: Callable[[Any], Path] | None = None,
) -> dict[str, Any]:
    """Run ``cfg.rounds`` rounds (resuming finished stages); returns the state record.

    ``policy_factory`` builds the driving policy from a model spec; ``sim`` reuses a simulator;
    ``train`` replaces :func:`training.sft.run_sft` (it receives the round's TrainConfig).
    """
    from training.sft import load_train_config, run_sft

    if not cfg.policy:
        raise DaggerError("no policy: set policy (--policy) to the checkpoint that drives round 1")
    info = get_dist_info()
    root = Path(cfg.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    state_path = root / STATE_FILE
    state = _read_state(state_path)
    train = train or run_sft
    model = cfg.policy
    data = list(cfg.base_data)
    for k in range(1, cfg.rounds + 1):
        entry = state["rounds"].setdefault(str(k), {})
        rdir = round_dir(cfg, k)
        if not entry.get("collected"):
            policy = policy_factory(model)
            try:
                stats = collect_round(cfg, policy, rdir / "data", k, sim=sim, info=info)
            finally:
                policy.close()
            if info.is_main:
                entry.update(collected=True, driver=str(model), data=str(rdir / "data"),
                             collect_stats=stats)
                _write_state(state_path, state)
            barrier(info)
            state = _read_state(state_path)
            entry = state["rounds"][str(k)]
        data.append(str(rdir / "data"))
        if not entry.get("trained"):
            start = model if cfg.train_from == "previous" else cfg.policy
            sets = [d for d in data if _has_trajectories(d)]
            if not sets:
                raise DaggerError(f"round {k}: no training data (base_data is empty and no "
                                  "rollout was kept)")
            overrides = {**cfg.train_overrides, "model": str(start), "data": sets,
                         "output_dir": str(rdir / "model")}
            train(load_train_config(cfg.train_config, **overrides))
            if info.is_main:
                entry.update(trained=True, model=str(rdir / "model"), train_data=sets,
                             started_from=str(start))
                _write_state(state_path, state)
            barrier(info)
            state = _read_state(state_path)
        model = str(rdir / "model")
        log.info("DAgger round %d done: model %s", k, model)
    return state


def _has_trajectories(path: str) -> bool:
    spec = path.rpartition("%")[0] if "%" in path else path
    file = Path(spec) if spec.endswith(".json") else Path(spec) / "annotations.json"
    if not file.exists():
        return False
    try:
        return bool(json.loads(file.read_text()))
    except json.JSONDecodeError:
        return True  # let the loader report the broken file


def build_parser() -> argparse.ArgumentParser:
    """The ``janus-vln dagger`` argument parser."""
    p = ArgumentParser(prog="janus-vln dagger", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="DAgger YAML (DaggerConfig keys)")
    p.add_argument("--policy", help="checkpoint folder (or preset) that drives round 1")
    p.add_argument("--split", help="R2R/RxR episode file")
    p.add_argument("--base-data", nargs="+", help="annotation folders of the SFT set")
    p.add_argument("--output-dir")
    p.add_argument("--rounds", type=int)
    p.add_argument("--limit", type=int)
    p.add_argument("--train-config", help="SFT YAML used to retrain after each round")
    p.add_argument("--no-progress", action="store_true")
    return add_verbose(p)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``janus-vln dagger`` / ``python -m training.dagger``."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        cfg = load_dagger_config(
            args.config, policy=args.policy, split=args.split, base_data=args.base_data,
            output_dir=args.output_dir, rounds=args.rounds, limit=args.limit,
            train_config=args.train_config, progress=False if args.no_progress else None,
        )
    except DaggerError as err:
        return fail("dagger", err)
    from sim_bridge.backends import BackendError
    from sim_bridge.simulator import BackendUnavailableError
    from training.sft import TrainConfigError

    info = get_dist_info()
    created = init_process_group(info)
    try:
        state = run_dagger(cfg)
    except (DaggerError, CollectError, TrainConfigError, AnnotationError, EpisodeFormatError,
            CheckpointError, BackendError, BackendUnavailableError) as err:
        return fail("dagger", err)
    finally:
        destroy_process_group(created)
    log.info("DAgger finished: %s", json.dumps(state["rounds"], sort_keys=True))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise SystemExit(main())
