r"""VLN-CE evaluation runner: sharded, resumable, scored by :mod:`sim_bridge.metrics`.

As a library::

    cfg = EvalConfig(policy="expert", split="data/r2r/val_unseen/val_unseen.json.gz",
                     output_dir="outputs/eval/expert")
    summary = evaluate(cfg)            # runs this process's shard, returns the merged summary

From the command line (``janus-vln eval`` calls :func:`main`)::

    python -m sim_bridge.evaluate --config config/eval_r2r.yaml --policy expert \\
        --split data/r2r/val_unseen/val_unseen.json.gz --output-dir outputs/eval/expert
    torchrun --nproc_per_node=8 -m sim_bridge.evaluate --config config/eval_r2r.yaml ...
    python -m sim_bridge.evaluate merge --output-dir outputs/eval/expert

How a run is laid out on disk (``output_dir``):

- ``run.json``: the settings that decide the results (policy, episode file, limits, simulator
  geometry). A restart with different settings is refused, naming the fields that differ.
- ``results/shard-III-of-NNN.jsonl``: one complete JSON line per finished episode, appended and
  fsynced as each episode ends (:mod:`sim_bridge.results`). A restart skips every episode found
  in any shard file, so a killed run resumes where it stopped, even with another shard count.
- ``metrics.json`` / ``metrics.md``: means over all finished episodes (``complete`` says whether
  every selected episode is there) and ``episodes.jsonl``, all records sorted; written by
  :func:`merge` at the end of every shard's run and by the ``merge`` subcommand.
- ``videos/{scene}_{episode}.mp4`` with ``--video``: the RGB stream beside a top-down map.

Sharding: episodes are sorted by (scene, episode id) and shard ``i`` of ``n`` takes
``episodes[i::n]``; ``i``/``n`` come from ``--shard/--num-shards`` or torchrun's ``RANK`` /
``WORLD_SIZE``. Shards need no communication: each appends to its own file.

A failing episode (simulator or policy exception) is recorded with ``status: "error"`` and the
run goes on; errored episodes are not retried on restart unless ``retry_errors`` is set.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import time
import traceback
import zlib
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from janus_core.actions import Action
from janus_core.baselines import ForwardOnlyPolicy, RandomPolicy
from janus_core.config import read_yaml_mapping
from janus_core.interface import Observation, Policy, StepResult
from sim_bridge import results as results_mod
from sim_bridge.episodes import (
    Episode,
    EpisodeFormatError,
    episode_sort_key,
    find_gt_path,
    load_split,
)
from sim_bridge.expert import ExpertPolicy
from sim_bridge.metrics import SUCCESS_DISTANCE, EpisodeMetrics, aggregate, format_table
from sim_bridge.results import ResultsFile, shard_file_name
from sim_bridge.simulator import BackendUnavailableError

log = logging.getLogger(__name__)

BASELINES = ("random", "forward", "expert")
# settings that change what a run measures; a resumed run must agree on all of them
RUN_KEYS = (
    "policy", "split", "gt", "languages", "backend", "width", "height", "hfov_deg",
    "forward_step", "turn_angle", "success_distance", "max_steps", "force_stop_at", "seed",
    "limit", "episode_ids", "sim",
)


class EvalError(RuntimeError):
    """The run cannot start or continue (bad config, changed settings, missing backend)."""


@dataclasses.dataclass
class EvalConfig:
    """Everything an evaluation run needs; loadable from YAML (see config/eval_r2r.yaml).

    ``policy``: ``random``, ``forward``, ``expert``, a JanusVLN preset name or a checkpoint
    directory (built by ``janus_core.factory.build_policy``). ``split``: an R2R_VLNCE or RxR_VLNCE
    episode file; ``gt``: its ``_gt`` file (default: the sibling when present). ``languages``:
    RxR language filter (``["en"]`` keeps en-US and en-IN). ``max_steps``: the environment's
    step limit (habitat ``max_episode_steps``; reaching it ends the episode without STOP).
    ``force_stop_at``: replace the action at this 0-based step with STOP (the release forces STOP
    at step 400). ``sim``: extra simulator settings passed to the backend's ``SimConfig``.
    ``limit``: evaluate only the first N episodes (after sorting); ``episode_ids``: only these.
    ``video_ratio``: share of episodes filmed when ``video`` is on (chosen by a hash of the
    episode, so the same ones every run).
    """

    policy: str = "random"
    split: str = ""
    gt: str | None = None
    languages: list[str] | None = None
    backend: str = "embedded"
    width: int = 640
    height: int = 480
    hfov_deg: float = 79.0
    forward_step: float = 0.25
    turn_angle: float = 15.0
    success_distance: float = SUCCESS_DISTANCE
    max_steps: int = 500
    force_stop_at: int | None = None
    output_dir: str = "outputs/eval"
    shard: int | None = None
    num_shards: int | None = None
    limit: int | None = None
    episode_ids: list[str] | None = None
    video: bool = False
    video_ratio: float = 1.0
    video_fps: int = 6
    seed: int = 0
    retry_errors: bool = False
    progress: bool = True
    sim: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        """Check ranges; the message names the field."""
        if self.max_steps <= 0:
            raise EvalError(f"max_steps must be positive, got {self.max_steps}")
        if self.force_stop_at is not None and self.force_stop_at < 0:
            raise EvalError(f"force_stop_at must be >= 0 or null, got {self.force_stop_at}")
        if not 0.0 <= self.video_ratio <= 1.0:
            raise EvalError(f"video_ratio must be in [0, 1], got {self.video_ratio}")
        if self.success_distance <= 0:
            raise EvalError(f"success_distance must be positive, got {self.success_distance}")
        if self.languages is not None and isinstance(self.languages, str):
            self.languages = [self.languages]
        if self.episode_ids is not None:
            self.episode_ids = [str(e) for e in self.episode_ids]
        if not isinstance(self.sim, dict):
            raise EvalError(f"sim must be a mapping of simulator settings, got {self.sim!r}")

    def run_settings(self) -> dict[str, Any]:
        """The settings recorded in ``run.json`` and compared on resume."""
        data = dataclasses.asdict(self)
        return {k: data[k] for k in RUN_KEYS}


def load_eval_config(path: str | Path, **overrides: Any) -> EvalConfig:
    """Read an EvalConfig from YAML (unknown keys are an error), then apply ``overrides``."""
    data = read_yaml_mapping(path, EvalError, "eval config")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return config_from_dict(data, source=str(path))


def config_from_dict(data: dict[str, Any], source: str = "config") -> EvalConfig:
    """Build an EvalConfig from a dict; unknown keys are an error naming them."""
    names = {f.name for f in dataclasses.fields(EvalConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise EvalError(f"{source}: unknown eval config keys {unknown}; known: {sorted(names)}")
    try:
        return EvalConfig(**data)
    except TypeError as err:
        raise EvalError(f"{source}: {err}") from err


# ---- sharding ------------------------------------------------------------------------------------


def resolve_shard(shard: int | None = None, num_shards: int | None = None) -> tuple[int, int]:
    """``(shard, num_shards)`` from the arguments, else torchrun's RANK/WORLD_SIZE, else (0, 1)."""
    if shard is None and num_shards is None:
        shard = int(os.environ.get("RANK", 0))
        num_shards = int(os.environ.get("WORLD_SIZE", 1))
    elif shard is None or num_shards is None:
        raise EvalError("give both --shard and --num-shards (or neither)")
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise EvalError(f"shard {shard} is not in [0, {num_shards})")
    return shard, num_shards


def select_episodes(
    episodes: Sequence[Episode],
    limit: int | None = None,
    episode_ids: Sequence[str] | None = None,
) -> list[Episode]:
    """The run's episodes in their canonical order: sorted by (scene, id), filtered, limited."""
    eps = sorted(episodes, key=episode_sort_key)
    if episode_ids is not None:
        wanted = {str(e) for e in episode_ids}
        missing = wanted - {str(ep.episode_id) for ep in eps}
        if missing:
            raise EvalError(f"episode ids not in the split: {sorted(missing)[:10]}")
        eps = [ep for ep in eps if str(ep.episode_id) in wanted]
    if limit is not None:
        eps = eps[: max(0, int(limit))]
    return eps


def shard_episodes(episodes: Sequence[Episode], shard: int, num_shards: int) -> list[Episode]:
    """Shard ``shard`` of ``num_shards``: every ``num_shards``-th episode of the canonical order."""
    return list(episodes[shard::num_shards])


def episode_seed(seed: int, episode: Episode) -> int:
    """A per-episode seed that does not depend on which shard or in which order it runs."""
    return zlib.crc32(f"{seed}|{episode.scene_id}|{episode.episode_id}".encode())


# ---- policies ------------------------------------------------------------------------------------


class EpisodeSeededRandomPolicy(Policy):
    """:class:`RandomPolicy` reseeded from the episode, so results do not depend on run order."""

    def __init__(self, stop_prob: float = 0.02):
        self.stop_prob = stop_prob
        self._inner = RandomPolicy(seed=0, stop_prob=stop_prob)

    def seed_episode(self, seed: int) -> None:
        """Called by the runner before ``reset``."""
        self._inner = RandomPolicy(seed=seed, stop_prob=self.stop_prob)

    def reset(self, instruction: str) -> None:
        """Start an episode."""
        self._inner.reset(instruction)

    def act(self, observation: Observation) -> StepResult:
        """A random action."""
        return self._inner.act(observation)


def _select_local_device() -> None:
    """Under torchrun, pin this process to GPU ``LOCAL_RANK`` before a model is built."""
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is None:
        return
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(local_rank) % torch.cuda.device_count())


def build_policy(spec: str, sim: Any) -> Policy:
    """A baseline (``random``, ``forward``, ``expert``) or a JanusVLN policy from a preset/dir."""
    if spec == "random":
        return EpisodeSeededRandomPolicy()
    if spec == "forward":
        return ForwardOnlyPolicy()
    if spec == "expert":
        return ExpertPolicy(sim)
    try:
        from janus_core.factory import build_policy as build_janus_policy
    except ImportError as err:
        raise EvalError(
            f"policy {spec!r} is not a baseline {BASELINES} and janus_core.policy cannot be "
            f"imported ({err})"
        ) from err
    path = Path(spec).expanduser()
    if not path.exists() and (len(path.parts) > 1 or path.suffix):
        raise EvalError(f"policy {spec!r}: checkpoint directory {path} does not exist (a policy "
                        f"is one of {BASELINES}, a preset name or a checkpoint directory)")
    _select_local_device()
    try:
        return build_janus_policy(spec)
    except (ValueError, OSError) as err:  # ConfigError, missing or mismatched checkpoint files
        raise EvalError(f"policy {spec!r} cannot be built: {err}") from err


def check_frame_size(policy: Policy, cfg: EvalConfig) -> None:
    """Fail before the first episode when the policy expects another camera size than the sim's."""
    image = getattr(getattr(policy, "cfg", None), "image", None)
    size = (getattr(image, "input_width", None), getattr(image, "input_height", None))
    if None not in size and size != (cfg.width, cfg.height):
        raise EvalError(
            f"policy {cfg.policy!r} expects {size[0]}x{size[1]} frames but the simulator renders "
            f"{cfg.width}x{cfg.height}; set width/height to match"
        )


# ---- simulator -----------------------------------------------------------------------------------


def make_sim(cfg: EvalConfig) -> Any:
    """The backend's simulator for ``cfg`` (imported here so ``merge`` needs no simulator)."""
    from sim_bridge.simulator import SimConfig, make_simulator

    known = {f.name for f in dataclasses.fields(SimConfig)}
    settings = {
        "backend": cfg.backend,
        "width": cfg.width,
        "height": cfg.height,
        "hfov_deg": cfg.hfov_deg,
        "forward_step": cfg.forward_step,
        "turn_angle": cfg.turn_angle,
        "success_distance": cfg.success_distance,
        "seed": cfg.seed,
    }
    unknown = sorted(set(cfg.sim) - known)
    if unknown:
        raise EvalError(f"sim: unknown simulator settings {unknown}; known: {sorted(known)}")
    settings.update(cfg.sim)
    return make_simulator(SimConfig(**{k: v for k, v in settings.items() if k in known}))


# ---- one episode ---------------------------------------------------------------------------------


def _r(values: Sequence[float], nd: int = 5) -> list[float]:
    return [round(float(v), nd) for v in values]


def _clean(value: Any) -> Any:
    """JSON-safe metrics: NaN/inf become None so every line is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class EpisodeRunner:
    """One episode's loop, driven from outside: :meth:`observation`, a policy, :meth:`step`.

    Construction resets ``sim`` to ``episode``. Each :meth:`step` executes one action (STOP ends
    the episode; ``cfg.force_stop_at`` turns an action into STOP; ``cfg.max_steps`` actions end
    it) and updates :class:`~sim_bridge.metrics.EpisodeMetrics`. :meth:`result` gives the
    record's result fields. :func:`run_episode` (in-process) and the ROS ``sim_bridge`` node both
    drive episodes through it, so an episode is executed and scored the same way whoever chooses
    the actions.
    """

    def __init__(self, sim: Any, episode: Episode, cfg: EvalConfig, video: Any | None = None):
        self.t_start = time.perf_counter()
        self.sim, self.episode, self.cfg, self.video = sim, episode, cfg, video
        self.obs = sim.reset(episode)
        start = [float(v) for v in self.obs.position]
        geodesic_start = float(sim.geodesic_distance(start, episode.goal_position))
        if episode.gt_locations:
            reference, source = episode.gt_locations, "gt"
        elif episode.reference_path:
            reference, source = episode.reference_path, "reference_path"
        else:
            reference, source = None, None
        self.metrics = EpisodeMetrics(
            start_position=start,
            start_distance_to_goal=float(sim.distance_to_goal()),
            geodesic_start=geodesic_start,
            reference=reference,
            reference_source=source or "none",
            success_distance=cfg.success_distance,
        )
        self.actions: list[int] = []
        self.positions = [_r(start)]
        self.yaws = [round(float(self.obs.yaw), 5)]
        self.stage_s: dict[str, float] = {}
        self.policy_s = 0.0
        self.sim_s = 0.0
        self.parse_failures: int | None = 0
        self.forced_stop = False
        self.end_reason: str | None = None  # set when the episode is over
        if video is not None:
            video.add(self.obs, sim, self.positions)

    @property
    def done(self) -> bool:
        """Whether the episode is over (STOP, forced STOP or the step limit)."""
        return self.end_reason is not None

    @property
    def num_steps(self) -> int:
        """Actions executed so far (the index of the next step)."""
        return len(self.actions)

    def observation(self, stamp: float | None = None) -> Observation:
        """The policy's view of the current state (``stamp`` defaults to the step index)."""
        obs = self.obs
        return Observation(
            rgb=obs.rgb,
            depth=obs.depth,
            pose=(float(obs.position[0]), float(obs.position[1]), float(obs.position[2]),
                  float(obs.yaw)),
            stamp=float(self.num_steps) if stamp is None else float(stamp),
        )

    def add_policy_time(
        self, seconds: float, timings: dict[str, float] | None = None, parsed: bool | None = True
    ) -> None:
        """Account one policy step: its duration, its stage timings, whether its reply parsed.

        ``parsed=None``: not known (the ROS node cannot see it); ``parse_failures`` becomes None.
        """
        self.policy_s += float(seconds)
        for stage, value in (timings or {}).items():
            self.stage_s[stage] = self.stage_s.get(stage, 0.0) + float(value)
        if parsed is None:
            self.parse_failures = None
        elif self.parse_failures is not None:
            self.parse_failures += int(not parsed)

    def step(self, action: Action | int) -> Action:
        """Execute ``action`` (or STOP when forced); return the action actually taken."""
        if self.done:
            raise RuntimeError(
                f"episode {self.episode.episode_id} is over ({self.end_reason}); no more steps"
            )
        cfg, sim = self.cfg, self.sim
        action = Action(int(action))
        step = len(self.actions)
        if cfg.force_stop_at is not None and step >= cfg.force_stop_at and action != Action.STOP:
            action, self.forced_stop = Action.STOP, True
        self.actions.append(int(action))
        if action == Action.STOP:
            self.metrics.update(sim.position, sim.distance_to_goal(), collided=False, stop=True)
            self.end_reason = "forced_stop" if self.forced_stop else "stop"
            return action
        t0 = time.perf_counter()
        self.obs = obs = sim.step(action)
        self.sim_s += time.perf_counter() - t0
        self.metrics.update(obs.position, sim.distance_to_goal(), collided=bool(obs.collided))
        self.positions.append(_r(obs.position))
        self.yaws.append(round(float(obs.yaw), 5))
        if self.video is not None:
            self.video.add(obs, sim, self.positions)
        if len(self.actions) >= cfg.max_steps:
            self.end_reason = "max_steps"
        return action

    def end(self, reason: str) -> None:
        """End the episode without STOP (e.g. the driver gave up); no-op when already over."""
        if self.end_reason is None:
            self.end_reason = reason

    def result(self) -> dict[str, Any]:
        """The record's result fields (status, metrics, end_reason, path, timings)."""
        scores = {k: _clean(v) for k, v in self.metrics.result().items()}
        steps = max(1, len(self.actions))
        return {
            "status": "ok",
            "metrics": scores,
            "end_reason": self.end_reason or "max_steps",
            "actions": list(self.actions),
            "positions": list(self.positions),
            "yaws": list(self.yaws),
            "parse_failures": self.parse_failures,
            "timings": {
                "episode_s": time.perf_counter() - self.t_start,
                "policy_s": self.policy_s,
                "sim_s": self.sim_s,
                "policy_step_mean_s": self.policy_s / steps,
                "stages_s": dict(self.stage_s),
            },
        }


def run_episode(
    sim: Any,
    policy: Policy,
    episode: Episode,
    cfg: EvalConfig,
    video: Any | None = None,
) -> dict[str, Any]:
    """Drive ``policy`` through ``episode`` in ``sim``; return the record's result fields."""
    runner = EpisodeRunner(sim, episode, cfg, video=video)
    if hasattr(policy, "seed_episode"):
        policy.seed_episode(episode_seed(cfg.seed, episode))
    policy.reset(episode.instruction)
    while not runner.done:
        observation = runner.observation()
        t0 = time.perf_counter()
        result = policy.act(observation)
        runner.add_policy_time(time.perf_counter() - t0, result.timings, bool(result.parsed))
        runner.step(result.action)
    return runner.result()


def record_header(episode: Episode, cfg: EvalConfig, shard: int) -> dict[str, Any]:
    """The identifying fields every results record starts with (episode, policy, shard)."""
    return {
        "scene_id": str(episode.scene_id),
        "episode_id": str(episode.episode_id),
        "trajectory_id": episode.trajectory_id,
        "instruction_id": episode.instruction_id,
        "language": episode.language,
        "instruction": episode.instruction,
        "policy": cfg.policy,
        "shard": shard,
    }


_record_header = record_header  # the name earlier callers use


# ---- the run -------------------------------------------------------------------------------------


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _check_manifest(out: Path, settings: dict[str, Any], num_episodes: int) -> None:
    manifest = out / "run.json"
    data = {"settings": settings, "num_episodes": num_episodes}
    if manifest.exists():
        try:
            old = json.loads(manifest.read_text())
        except json.JSONDecodeError as err:
            raise EvalError(f"{manifest} is not valid JSON ({err}); remove it to start over") \
                from err
        before = old.get("settings", {})
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        if changed:
            diffs = "; ".join(f"{k}: {before.get(k)!r} -> {settings.get(k)!r}" for k in changed)
            raise EvalError(
                f"{out} holds results of a run with other settings ({diffs}); use another "
                "output_dir or remove it"
            )
        return
    _write_atomic(manifest, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _wants_video(cfg: EvalConfig, episode: Episode) -> bool:
    if not cfg.video:
        return False
    h = zlib.crc32(f"video|{cfg.seed}|{episode.scene_id}|{episode.episode_id}".encode())
    return h / 2**32 < cfg.video_ratio


def _running_postfix(records: dict) -> dict[str, str]:
    ok = [r["metrics"] for r in records.values() if r.get("status") == "ok"]
    if not ok:
        return {}
    sr = sum(m["sr"] for m in ok) / len(ok)
    spl = sum((m["spl"] or 0.0) for m in ok) / len(ok)
    return {"SR": f"{100 * sr:.1f}", "SPL": f"{100 * spl:.1f}"}


def load_episodes(cfg: EvalConfig) -> list[Episode]:
    """The split's episodes with their ground truth joined (``cfg.gt`` or the ``_gt`` sibling)."""
    if not cfg.split:
        raise EvalError("no episode file: set split (--split) to an R2R/RxR .json(.gz) file")
    gt = cfg.gt if cfg.gt is not None else find_gt_path(cfg.split)
    if gt is None:
        log.warning("%s: no _gt file beside it; nDTW falls back to reference_path", cfg.split)
    return load_split(cfg.split, gt_path=gt, languages=cfg.languages)


@dataclasses.dataclass
class RunPlan:
    """One process's share of a run: its episodes, what is finished, its open results file.

    Built by :func:`plan_run`; used by :func:`evaluate` and by the ROS ``sim_bridge`` node, so
    both select, skip and record episodes the same way. Call :meth:`close` when done.
    """

    cfg: EvalConfig
    out: Path
    shard: int
    num_shards: int
    episodes: list[Episode]  # every selected episode of the run (all shards), canonical order
    mine: list[Episode]  # this shard's episodes
    finished: dict[tuple[str, str], dict[str, Any]]  # every record found, keyed by episode
    results_file: ResultsFile

    def is_done(self, episode: Episode) -> bool:
        """Whether ``episode`` has a result (an error counts unless ``retry_errors``)."""
        rec = self.finished.get(episode.key)
        return rec is not None and (rec.get("status") == "ok" or not self.cfg.retry_errors)

    def todo(self) -> list[Episode]:
        """This shard's episodes without a result, in order."""
        return [ep for ep in self.mine if not self.is_done(ep)]

    def append(self, record: dict[str, Any]) -> None:
        """Stamp ``finished_at`` and append ``record`` durably to this shard's results file."""
        record["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.results_file.append(record)
        self.finished[results_mod.record_key(record)] = record

    def close(self) -> None:
        """Close the results file."""
        self.results_file.close()


def plan_run(cfg: EvalConfig) -> RunPlan:
    """Select and shard the episodes, check ``run.json``, open this shard's results file.

    Raises EvalError for an empty selection or a run directory holding other settings, and
    ResultsError when another process writes the same shard file.
    """
    shard, num_shards = resolve_shard(cfg.shard, cfg.num_shards)
    episodes = select_episodes(load_episodes(cfg), cfg.limit, cfg.episode_ids)
    if not episodes:
        raise EvalError(f"{cfg.split}: no episodes to evaluate after filtering")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_manifest(out, cfg.run_settings(), len(episodes))
    mine = shard_episodes(episodes, shard, num_shards)
    finished = results_mod.collect(out)  # every shard's file: resume across shard counts
    results_file = ResultsFile(out / results_mod.RESULTS_DIR / shard_file_name(shard, num_shards))
    finished.update(results_file.records)
    plan = RunPlan(cfg, out, shard, num_shards, episodes, mine, finished, results_file)
    todo = plan.todo()
    log.info(
        "shard %d/%d: %d episodes, %d already finished, %d to run (%s, policy %s)",
        shard, num_shards, len(mine), len(mine) - len(todo), len(todo), cfg.split, cfg.policy,
    )
    return plan


def evaluate(
    cfg: EvalConfig,
    policy: Policy | None = None,
    sim: Any | None = None,
) -> dict[str, Any]:
    """Run this process's shard of ``cfg`` and return :func:`merge`'s summary of the run dir.

    ``policy`` / ``sim`` may be given (already built) instead of being built from ``cfg``; the
    caller then keeps ownership of them.
    """
    plan = plan_run(cfg)
    todo = plan.todo()
    own_sim = own_policy = False
    try:
        if todo:
            if sim is None:
                sim, own_sim = make_sim(cfg), True
            if policy is None:
                policy, own_policy = build_policy(cfg.policy, sim), True
            check_frame_size(policy, cfg)
            _run_shard(plan, sim, policy, todo)
    finally:
        plan.close()
        if own_policy and policy is not None:
            policy.close()
        if own_sim and sim is not None:
            sim.close()
    return merge(plan.out)


def _run_shard(plan: RunPlan, sim, policy, todo: list[Episode]) -> None:
    cfg, mine, shard, out = plan.cfg, plan.mine, plan.shard, plan.out
    mine_keys = {ep.key for ep in mine}
    shown = {k: v for k, v in plan.finished.items() if k in mine_keys}
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=f"eval[{shard}]",
                   unit="ep", dynamic_ncols=True)
    try:
        for episode in todo:
            record = record_header(episode, cfg, shard)
            writer = None
            try:
                if _wants_video(cfg, episode):
                    from sim_bridge.video import EpisodeVideo

                    name = f"{_safe(episode.scene_id)}_{_safe(episode.episode_id)}.mp4"
                    writer = EpisodeVideo(
                        out / "videos" / name, fps=cfg.video_fps,
                        expert_path=episode.gt_locations or episode.reference_path or None,
                        goal=episode.goal_position, success_distance=cfg.success_distance,
                    )
                record.update(run_episode(sim, policy, episode, cfg, video=writer))
                if writer is not None:
                    writer.close()
                    record["video"] = str(Path("videos") / writer.path.name)
            except BackendUnavailableError:
                if writer is not None:
                    writer.close(discard=True)
                raise  # the backend is gone for good: stop, keeping the finished episodes
            except Exception as err:  # noqa: BLE001 - a bad episode must not stop the run
                log.exception("episode %s (%s) failed", episode.episode_id, episode.scene_id)
                record.update({
                    "status": "error",
                    "error": f"{type(err).__name__}: {err}",
                    "traceback": traceback.format_exc(limit=8)[-4000:],
                })
                if writer is not None:
                    writer.close(discard=True)
            plan.append(record)
            shown[episode.key] = record
            if bar is not None:
                bar.update(1)
                bar.set_postfix(_running_postfix(shown))
            elif record["status"] == "ok":
                m = record["metrics"]
                log.info("episode %s: SR %.0f SPL %.2f NE %.2f steps %d | running %s",
                         episode.episode_id, m["sr"], m["spl"], m["ne"], m["steps"],
                         _running_postfix(shown))
    finally:
        if bar is not None:
            bar.close()


def _safe(text: Any) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text))


def merge(output_dir: str | Path, write: bool = True) -> dict[str, Any]:
    """Combine every shard file of a run into one summary (and write metrics.json/.md).

    Returns ``{"summary": aggregate(...), "complete": bool, "expected": n, "finished": n,
    "per_shard": {...}, "settings": {...}}``. ``episodes.jsonl`` gets all records sorted by
    (scene, episode id).
    """
    out = Path(output_dir)
    files = results_mod.shard_files(out)
    if not files:
        raise EvalError(f"{out}: no results files under {out / results_mod.RESULTS_DIR}")
    per_shard = {p.name: len(results_mod.latest_by_key(results_mod.read_records(p)))
                 for p in files}
    records = results_mod.collect(out)
    manifest = {}
    if (out / "run.json").exists():
        manifest = json.loads((out / "run.json").read_text())
    expected = manifest.get("num_episodes")
    summary = aggregate(records.values())
    data = {
        "summary": summary,
        "complete": expected is not None and len(records) >= expected,
        "expected": expected,
        "finished": len(records),
        "per_shard": per_shard,
        "settings": manifest.get("settings", {}),
    }
    if write:
        _write_atomic(out / "metrics.json", json.dumps(data, indent=2, sort_keys=True) + "\n")
        settings = data["settings"]
        title = f"{settings.get('policy', '?')} on {Path(str(settings.get('split', '?'))).name}"
        md = format_table(summary, title=title)
        md += (f"\n{len(records)} of {expected if expected is not None else '?'} episodes "
               f"finished{'' if data['complete'] else ' (incomplete run)'}; "
               f"shards: {', '.join(f'{k}: {v}' for k, v in per_shard.items())}.\n")
        _write_atomic(out / "metrics.md", md)
        ordered = sorted(records.values(), key=lambda r: episode_sort_key(
            Episode(r["episode_id"], r["scene_id"], [], [], [], "")))
        _write_atomic(out / "episodes.jsonl",
                      "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in ordered))
    return data


# ---- command line --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="janus-vln eval",
        description="Evaluate a policy on VLN-CE episodes (sharded, resumable). "
        "Subcommands: run (default), merge.",
    )
    p.add_argument("--config", help="eval YAML (config/eval_r2r.yaml, config/eval_rxr.yaml)")
    p.add_argument("--policy", help="random | forward | expert | a preset | a checkpoint dir")
    p.add_argument("--split", help="episode file (R2R_VLNCE or RxR_VLNCE .json/.json.gz)")
    p.add_argument("--gt", help="_gt file (default: the sibling of --split when present)")
    p.add_argument("--languages", nargs="+", help="RxR language filter, e.g. en or en-US hi-IN")
    p.add_argument("--backend", choices=("embedded", "habitat", "auto"))
    p.add_argument("--output-dir", dest="output_dir")
    p.add_argument("--max-steps", dest="max_steps", type=int)
    p.add_argument("--force-stop-at", dest="force_stop_at", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--shard", type=int)
    p.add_argument("--num-shards", dest="num_shards", type=int)
    p.add_argument("--limit", type=int, help="only the first N episodes (sorted)")
    p.add_argument("--episode-ids", dest="episode_ids", nargs="+")
    p.add_argument("--video", action="store_true", default=None)
    p.add_argument("--video-ratio", dest="video_ratio", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--retry-errors", dest="retry_errors", action="store_true", default=None)
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="any other EvalConfig field (YAML value), e.g. --set sim.render=false")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _apply_sets(data: dict[str, Any], sets: Sequence[str]) -> None:
    for item in sets:
        if "=" not in item:
            raise EvalError(f"--set {item!r}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw)
        if key.startswith("sim."):
            data.setdefault("sim", {})[key[4:]] = value
        else:
            data[key] = value


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """EvalConfig from parsed CLI arguments (YAML file first, then the flags)."""
    data: dict[str, Any] = {}
    if args.config:
        data = read_yaml_mapping(args.config, EvalError, "eval config")
    names = {f.name for f in dataclasses.fields(EvalConfig)}
    for key, value in vars(args).items():
        if key in names and value is not None:
            data[key] = value
    _apply_sets(data, args.sets)
    return config_from_dict(data, source=args.config or "command line")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: ``[run] [options]`` or ``merge --output-dir DIR``; returns an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "run"
    if argv and argv[0] in ("run", "merge"):
        command = argv.pop(0)
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if command == "merge":
            if not args.output_dir:
                raise EvalError("merge needs --output-dir")
            out = Path(args.output_dir)
            data = merge(out)
        else:
            cfg = config_from_args(args)
            out = Path(cfg.output_dir)
            data = evaluate(cfg)
    except (EvalError, EpisodeFormatError, results_mod.ResultsError,
            BackendUnavailableError) as err:
        log.error("%s", err)
        return 1
    log.info("%d of %s episodes finished%s; metrics in %s\n%s", data["finished"],
             data["expected"], "" if data["complete"] else " (incomplete)",
             out / "metrics.json", format_table(data["summary"]))
    return 0


def merge_main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point for ``janus-vln merge --output-dir DIR`` (``main(["merge", ...])``)."""
    return main(["merge", *list(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
