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

- ``run.json``: what the results come from (:func:`run_fingerprint`): the content hash of the
  episode file and its ``_gt``, the policy's identity (:mod:`sim_bridge.provenance`: a
  checkpoint's files hashed, with its mode; a preset; a baseline's name), the protocol
  (:mod:`sim_bridge.protocol`) and every setting that changes results, plus the run's episodes.
  A restart with anything different is refused in one line naming what changed
  (``overwrite`` / ``--overwrite`` deletes the old results); the same file reached by another
  path resumes. Everything that can be checked (policy, backend and scenes, camera size, the
  split) is checked before the directory is touched (:func:`check_run`).
- ``results/shard-III-of-NNN.jsonl``: one complete JSON line per finished episode, appended and
  fsynced as each episode ends (:mod:`sim_bridge.results`). A restart skips every episode found
  in any shard file, so a killed run resumes where it stopped, even with another shard count.
- ``metrics.json`` / ``metrics.md``: means over the scored episodes of the run, with the
  protocol, the counts (``complete`` only when every episode was scored; errored episodes are
  counted, not averaged) and the degenerate-episode rule, and ``episodes.jsonl``, all records
  sorted; written by :func:`merge` at the end of every shard's run and by ``janus-vln merge``.
- ``videos/{scene}_{episode}.mp4`` with ``--video``: the RGB stream beside a top-down map.

Sharding: episodes are sorted by (scene, episode id) and shard ``i`` of ``n`` takes
``episodes[i::n]``; ``i``/``n`` come from ``--shard/--num-shards`` or torchrun's ``RANK`` /
``WORLD_SIZE``. Shards need no communication: each appends to its own file.

A failing episode (simulator or policy exception) is recorded with ``status: "error"`` and the
run goes on; errored episodes are not retried on restart unless ``retry_errors`` is set. The
command exits 1 when an episode of its shard errored or none was scored, 2 on a mistake (one
line on stderr), 130 when interrupted (the finished episodes and partial metrics are kept).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import traceback
import zlib
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from janus_core.actions import Action
from janus_core.baselines import ForwardOnlyPolicy, RandomPolicy
from janus_core.config import check_types, parse_sets, read_yaml_mapping
from janus_core.console import (
    ArgumentParser,
    add_verbose,
    fail,
    interrupted,
    one_line,
    setup_logging,
)
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
from sim_bridge.protocol import DEFAULT_PROTOCOL, DEGENERATE_RULE, PROTOCOLS, check_protocol
from sim_bridge.protocol import describe as describe_protocol
from sim_bridge.provenance import (
    ProvenanceError,
    compared,
    content_sha256,
    policy_camera,
    policy_identity,
)
from sim_bridge.results import ResultsFile, shard_file_name
from sim_bridge.simulator import BackendUnavailableError

log = logging.getLogger(__name__)

BASELINES = ("random", "forward", "expert")
# settings that change what a run measures; a resumed run must agree on all of them (the episode
# files and the policy are compared by content: see run_fingerprint)
COMPARED_KEYS = (
    "languages", "backend", "width", "height", "hfov_deg", "forward_step", "turn_angle",
    "success_distance", "max_steps", "protocol", "force_stop_at", "seed", "limit", "episode_ids",
    "sim",
)
RUN_KEYS = ("policy", "split", "gt", *COMPARED_KEYS)  # recorded in run.json
MANIFEST_FORMAT = 2
DEFAULT_CAMERA = (640, 480)  # JanusVLN's 640x480 RGB, for policies that take any size
# what --overwrite removes from a run directory (nothing else is touched)
RUN_FILES = ("run.json", "metrics.json", "metrics.md", "episodes.jsonl", results_mod.RESULTS_DIR,
             "videos", "logs")


class EvalError(RuntimeError):
    """The run cannot start or continue (bad config, changed settings, missing backend)."""


@dataclasses.dataclass
class EvalConfig:
    """Everything an evaluation run needs; loadable from YAML (see config/eval_r2r.yaml).

    ``policy`` (required): ``random``, ``forward``, ``expert``, a JanusVLN preset name or a
    checkpoint directory (built by ``janus_core.factory.build_policy``). ``split``: an R2R_VLNCE
    or RxR_VLNCE episode file; ``gt``: its ``_gt`` file (default: the sibling when present).
    ``languages``: RxR language filter (``["en"]`` keeps en-US and en-IN). ``protocol``:
    ``vlnce`` (default) or ``release`` (:mod:`sim_bridge.protocol`). ``max_steps``: the
    environment's step limit (habitat ``max_episode_steps``; reaching it ends the episode without
    STOP). ``force_stop_at``: the 0-based step whose action becomes STOP; null takes the
    protocol's (release: 400, vlnce: never); only the release protocol forces STOP. ``width`` /
    ``height``: the camera; null takes the checkpoint's (640x480 for baselines). ``sim``: extra
    simulator settings passed to the backend's ``SimConfig``. ``limit``: evaluate only the first N
    episodes (after sorting); ``episode_ids``: only these. ``video_ratio``: share of episodes
    filmed when ``video`` is on (chosen by a hash of the episode, so the same ones every run).
    ``overwrite``: delete an earlier run's results in ``output_dir`` before starting.
    """

    policy: str = ""
    split: str = ""
    gt: str | None = None
    languages: list[str] | None = None
    backend: str = "embedded"
    width: int | None = None
    height: int | None = None
    hfov_deg: float = 79.0
    forward_step: float = 0.25
    turn_angle: float = 15.0
    success_distance: float = SUCCESS_DISTANCE
    max_steps: int = 500
    protocol: str = DEFAULT_PROTOCOL
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
    overwrite: bool = False
    sim: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        """Check ranges; the message names the field."""
        if self.policy is None:
            self.policy = ""
        if not isinstance(self.policy, str):
            self.policy = str(self.policy)
        if self.max_steps <= 0:
            raise EvalError(f"max_steps must be positive, got {self.max_steps}")
        if self.force_stop_at is not None and self.force_stop_at < 0:
            raise EvalError(f"force_stop_at must be >= 0 or null, got {self.force_stop_at}")
        try:
            self.force_stop_at = check_protocol(self.protocol, self.force_stop_at)
        except ValueError as err:
            raise EvalError(str(err)) from None
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise EvalError(f"{name} must be a positive number of pixels, got {value}")
        if not 0.0 < self.hfov_deg < 180.0:
            raise EvalError(f"hfov_deg must be in (0, 180) degrees, got {self.hfov_deg}")
        if not 0.0 <= self.video_ratio <= 1.0:
            raise EvalError(f"video_ratio must be in [0, 1], got {self.video_ratio}")
        if self.success_distance <= 0:
            raise EvalError(f"success_distance must be positive, got {self.success_distance}")
        if self.limit is not None and self.limit < 1:
            raise EvalError(f"limit must be at least 1 (or null for every episode), got "
                            f"{self.limit}")
        if self.languages is not None and isinstance(self.languages, str):
            self.languages = [self.languages]
        if self.episode_ids is not None:
            self.episode_ids = [str(e) for e in self.episode_ids]
        if not isinstance(self.sim, dict):
            raise EvalError(f"sim must be a mapping of simulator settings, got {self.sim!r}")

    def run_settings(self) -> dict[str, Any]:
        """The settings recorded in ``run.json`` (paths as given; see :func:`run_fingerprint`)."""
        data = dataclasses.asdict(self)
        return {k: data[k] for k in RUN_KEYS}

    def protocol_line(self) -> str:
        """The sentence naming this run's protocol (printed with every table)."""
        return describe_protocol(self.protocol, self.force_stop_at, self.max_steps,
                                 self.success_distance)


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
    data = check_types(EvalConfig, data, source, EvalError)
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


def janus_overrides(cfg: EvalConfig) -> dict[str, Any]:
    """Config overrides for a JanusVLN policy driven by an evaluation.

    A JanusVLN policy forces STOP at its own ``max_steps`` (400, the release's loop). Under an
    evaluation the protocol decides that (``force_stop_at``: 400 for ``release``, never for
    ``vlnce``), so the policy's own limit is moved to the episode's step limit, where it never
    fires: otherwise a "VLN-CE" number would silently carry the release's forced STOP.
    """
    return {"max_steps": cfg.max_steps}


def build_policy(spec: str, sim: Any, cfg: EvalConfig | None = None) -> Policy:
    """A baseline (``random``, ``forward``, ``expert``) or a JanusVLN policy from a preset/dir.

    With ``cfg``, a JanusVLN policy gets :func:`janus_overrides` (the protocol decides STOP).
    """
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
        return build_janus_policy(spec, **(janus_overrides(cfg) if cfg is not None else {}))
    except (ValueError, OSError) as err:  # ConfigError, missing or mismatched checkpoint files
        raise EvalError(f"policy {spec!r} cannot be built: {err}") from err


def check_frame_size(policy: Policy, cfg: EvalConfig) -> None:
    """Fail before the first episode when the policy expects another camera size than the sim's."""
    image = getattr(getattr(policy, "cfg", None), "image", None)
    size = (getattr(image, "input_width", None), getattr(image, "input_height", None))
    if None not in size and size != (cfg.width, cfg.height):
        raise EvalError(
            f"policy {cfg.policy!r} expects {size[0]}x{size[1]} frames but the simulator renders "
            f"{cfg.width}x{cfg.height}; leave --width/--height out to use the policy's size"
        )


def resolve_camera(cfg: EvalConfig) -> EvalConfig:
    """``cfg`` with width/height set: the checkpoint's (or preset's) camera when not given.

    Given sizes that differ from a checkpoint's raise EvalError (one line) before anything runs.
    """
    try:
        camera = policy_camera(cfg.policy)
    except ProvenanceError as err:
        raise EvalError(str(err)) from None
    if camera is None:
        width, height = cfg.width or DEFAULT_CAMERA[0], cfg.height or DEFAULT_CAMERA[1]
    else:
        want = camera[:2]
        width, height = cfg.width or want[0], cfg.height or want[1]
        if (width, height) != want:
            raise EvalError(
                f"policy {cfg.policy!r} was trained on {want[0]}x{want[1]} frames, but "
                f"{width}x{height} were asked for; leave --width/--height out (or set them to "
                f"{want[0]} and {want[1]})")
    if (width, height) == (cfg.width, cfg.height):
        return cfg
    return dataclasses.replace(cfg, width=width, height=height)


# ---- simulator -----------------------------------------------------------------------------------


def sim_config(cfg: EvalConfig) -> Any:
    """The backend's ``SimConfig`` for ``cfg``; EvalError naming a bad simulator setting."""
    from sim_bridge.simulator import SimConfig

    known = {f.name for f in dataclasses.fields(SimConfig)}
    settings = {
        "backend": cfg.backend,
        "width": cfg.width or DEFAULT_CAMERA[0],
        "height": cfg.height or DEFAULT_CAMERA[1],
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
    try:
        return SimConfig(**{k: v for k, v in settings.items() if k in known})
    except (TypeError, ValueError) as err:
        raise EvalError(f"simulator settings: {err}") from None


def make_sim(cfg: EvalConfig) -> Any:
    """The backend's simulator for ``cfg`` (imported here so ``merge`` needs no simulator)."""
    from sim_bridge.backends import BackendError, make_simulator

    try:
        return make_simulator(sim_config(cfg))
    except BackendError as err:  # an unknown name; a backend that cannot start raises its own
        raise EvalError(str(err)) from None


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

NO_POLICY = ("no policy: give --policy (random | forward | expert | a preset name | a checkpoint "
             "folder)")
START_OVER = "add --overwrite to delete them and start over, or choose another --output-dir"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def gt_file(cfg: EvalConfig) -> Path | None:
    """The run's ``_gt`` file: ``cfg.gt``, else the sibling of the split when present."""
    gt = cfg.gt if cfg.gt is not None else find_gt_path(cfg.split)
    return Path(gt) if gt is not None else None


def load_episodes(cfg: EvalConfig) -> list[Episode]:
    """The split's episodes with their ground truth joined (``cfg.gt`` or the ``_gt`` sibling)."""
    if not cfg.split:
        raise EvalError("no episode file: set split (--split) to an R2R/RxR .json(.gz) file")
    gt = gt_file(cfg)
    episodes = load_split(cfg.split, gt_path=gt, languages=cfg.languages)
    if gt is None:
        log.warning("%s: no _gt file beside it; nDTW falls back to reference_path", cfg.split)
    return episodes


def run_fingerprint(cfg: EvalConfig, policy_id: dict[str, Any]) -> dict[str, Any]:
    """What must be equal for a run directory's results to be resumed.

    The content of the episode and ``_gt`` files, the policy's identity and every setting that
    changes results.
    """
    gt = gt_file(cfg)
    try:
        fingerprint = {"episodes_sha256": content_sha256(cfg.split),
                       "gt_sha256": content_sha256(gt) if gt is not None else None,
                       "policy": compared(policy_id)}
    except ProvenanceError as err:
        raise EvalError(str(err)) from None
    data = dataclasses.asdict(cfg)
    fingerprint.update({k: data[k] for k in COMPARED_KEYS})
    return fingerprint


def _policy_text(identity: Any) -> str:
    if not isinstance(identity, dict):
        return repr(identity)
    if identity.get("kind") == "checkpoint":
        return f"checkpoint sha256 {str(identity.get('sha256'))[:12]} ({identity.get('mode')} mode)"
    if identity.get("kind") == "preset":
        return f"preset {identity.get('name')} ({identity.get('mode')} mode, random weights)"
    return str(identity.get("name"))


def describe_changes(before: dict[str, Any], after: dict[str, Any]) -> str:
    """The differences between two run fingerprints, in words ("" when equal)."""
    labels = {"episodes_sha256": "the episode file's content",
              "gt_sha256": "the _gt file's content"}
    parts = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if key in labels:
            parts.append(f"{labels[key]} changed (sha256 {str(old)[:12]} -> {str(new)[:12]})")
        elif key == "policy":
            parts.append(f"policy: {_policy_text(old)} -> {_policy_text(new)}")
        else:
            parts.append(f"{key}: {old!r} -> {new!r}")
    return "; ".join(parts)


def read_manifest(out: Path) -> dict[str, Any] | None:
    """``out/run.json`` (None when there is none); EvalError when it is not valid JSON."""
    path = Path(out) / "run.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EvalError(f"{path} is not valid JSON ({err}); {START_OVER}") from None
    return data if isinstance(data, dict) else {}


def _check_manifest(out: Path, manifest: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Refuse a run directory that holds results of another run; write ``run.json``."""
    if old is None:
        if any(results_mod.read_records(p) for p in results_mod.shard_files(out)):
            raise EvalError(f"{out} holds results without a run.json (their inputs are unknown); "
                            f"{START_OVER}")
    elif old.get("format") != MANIFEST_FORMAT:
        raise EvalError(f"{out} holds results written before runs recorded their inputs "
                        f"(run.json format {old.get('format', 1)}); {START_OVER}")
    else:
        changes = describe_changes(old.get("fingerprint", {}), manifest["fingerprint"])
        if changes:
            raise EvalError(f"{out} holds results of another run ({changes}); {START_OVER}")
    _write_atomic(out / "run.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def clear_run(out: Path) -> None:
    """Delete what an earlier run wrote in ``out`` (:data:`RUN_FILES`), nothing else.

    Refuses (EvalError) while another process writes one of its results files.
    """
    import shutil

    for path in results_mod.shard_files(out):
        try:
            ResultsFile(path).close()  # takes and drops the writer's lock
        except results_mod.ResultsError as err:
            raise EvalError(f"--overwrite: {err}; stop that run first") from None
    removed = []
    for name in RUN_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(name)
    if removed:
        log.warning("--overwrite: deleted %s in %s", ", ".join(removed), out)


def _wants_video(cfg: EvalConfig, episode: Episode) -> bool:
    if not cfg.video:
        return False
    h = zlib.crc32(f"video|{cfg.seed}|{episode.scene_id}|{episode.episode_id}".encode())
    return h / 2**32 < cfg.video_ratio


def _running_postfix(records: dict) -> dict[str, str]:
    ok = [r["metrics"] for r in records.values() if r.get("status") == "ok"]
    errors = sum(1 for r in records.values() if r.get("status") != "ok")
    out = {"errors": str(errors)} if errors else {}
    if ok:
        sr = sum(m["sr"] for m in ok) / len(ok)
        spl = sum((m["spl"] or 0.0) for m in ok) / len(ok)
        out.update({"SR": f"{100 * sr:.1f}", "SPL": f"{100 * spl:.1f}"})
    return out


@dataclasses.dataclass
class RunPlan:
    """One process's share of a run: its episodes, what is finished, its open results file.

    Built by :func:`plan_run`; used by :func:`evaluate` and by the ROS ``sim_bridge`` node, so
    both select, skip and record episodes the same way. ``cfg`` is the resolved config (the
    backend ``auto`` chose, the camera size of the policy). Call :meth:`close` when done.
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

    def shard_outcome(self) -> dict[str, int]:
        """This shard's episodes: how many there are, were scored, errored."""
        records = [self.finished.get(ep.key) for ep in self.mine]
        return {"episodes": len(self.mine),
                "scored": sum(1 for r in records if r and r.get("status") == "ok"),
                "errors": sum(1 for r in records if r and r.get("status") != "ok")}

    def append(self, record: dict[str, Any]) -> None:
        """Stamp ``finished_at`` and append ``record`` durably to this shard's results file."""
        record["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.results_file.append(record)
        self.finished[results_mod.record_key(record)] = record

    def close(self) -> None:
        """Close the results file."""
        self.results_file.close()


def check_run(cfg: EvalConfig) -> tuple[EvalConfig, list[Episode]]:
    """Everything that can be checked before a run directory is touched.

    Returns the resolved config (the backend ``auto`` chose, the policy's camera size) and the
    selected episodes. Raises EvalError (one line) for a missing policy, a backend that cannot
    run here or cannot load the split's scenes, a camera size the checkpoint was not trained on,
    a bad simulator setting, an empty selection.
    """
    from sim_bridge.backends import AUTO, BackendError, check_available, choose_backend

    if not cfg.policy:
        raise EvalError(NO_POLICY)
    sim_cfg = sim_config(cfg)
    try:
        if cfg.backend != AUTO:
            check_available(cfg.backend, sim_cfg)  # before reading anything: install it first
        episodes = select_episodes(load_episodes(cfg), cfg.limit, cfg.episode_ids)
        if not episodes:
            raise EvalError(f"{cfg.split}: no episodes to evaluate after filtering")
        backend = choose_backend(cfg.backend, [ep.scene_id for ep in episodes],
                                 where=Path(cfg.split).name, cfg=sim_cfg)
    except (BackendError, BackendUnavailableError) as err:
        raise EvalError(str(err)) from None
    if backend != cfg.backend:
        cfg = dataclasses.replace(cfg, backend=backend)
    cfg = resolve_camera(cfg)
    sim_config(cfg)
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise EvalError(f"--output-dir {out} is a file; give a directory")
    return cfg, episodes


def plan_run(cfg: EvalConfig, given_policy: bool = False) -> RunPlan:
    """Check the run (:func:`check_run`), tie the run directory to it, open this shard's file.

    ``run.json`` records what the results come from (:func:`run_fingerprint`); a directory
    holding results of anything else is refused in one line (``cfg.overwrite`` deletes them
    first). Raises ResultsError when another process writes the same shard file.
    ``given_policy``: the caller built the policy, so ``cfg.policy`` may be a mere label (it is
    still hashed when it names a checkpoint or preset).
    """
    shard, num_shards = resolve_shard(cfg.shard, cfg.num_shards)
    if cfg.overwrite and num_shards > 1:
        raise EvalError("--overwrite with several shards would let each shard delete the others' "
                        "results; delete the run directory once, then start the shards")
    cfg, episodes = check_run(cfg)
    out = Path(cfg.output_dir)
    old = None if cfg.overwrite else read_manifest(out)
    try:
        policy_id = policy_identity(cfg.policy, (old or {}).get("policy_identity"))
    except ProvenanceError as err:
        if not given_policy:
            raise EvalError(str(err)) from None
        policy_id = {"kind": "named", "name": cfg.policy}
    manifest = {
        "format": MANIFEST_FORMAT,
        "settings": cfg.run_settings(),
        "fingerprint": run_fingerprint(cfg, policy_id),
        "policy_identity": policy_id,
        "protocol": cfg.protocol_line(),
        "num_episodes": len(episodes),
        "episodes": [list(ep.key) for ep in episodes],
    }
    if cfg.overwrite:
        clear_run(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_manifest(out, manifest, old)
    mine = shard_episodes(episodes, shard, num_shards)
    finished = results_mod.collect(out)  # every shard's file: resume across shard counts
    results_file = ResultsFile(out / results_mod.RESULTS_DIR / shard_file_name(shard, num_shards))
    finished.update(results_file.records)
    plan = RunPlan(cfg, out, shard, num_shards, episodes, mine, finished, results_file)
    todo = plan.todo()
    log.info(
        "shard %d/%d: %d episodes, %d already finished, %d to run (%s, policy %s, %s backend, "
        "protocol %s)", shard, num_shards, len(mine), len(mine) - len(todo), len(todo), cfg.split,
        cfg.policy, cfg.backend, cfg.protocol_line(),
    )
    return plan


def evaluate(
    cfg: EvalConfig,
    policy: Policy | None = None,
    sim: Any | None = None,
) -> dict[str, Any]:
    """Run this process's shard of ``cfg`` and return :func:`merge`'s summary of the run dir.

    ``policy`` / ``sim`` may be given (already built) instead of being built from ``cfg``; the
    caller then keeps ownership of them. The summary's ``shard`` key holds this shard's counts
    (episodes, scored, errors).
    """
    plan = plan_run(cfg, given_policy=policy is not None)
    cfg = plan.cfg
    todo = plan.todo()
    own_sim = own_policy = False
    try:
        if todo:
            if sim is None:
                sim, own_sim = make_sim(cfg), True
            if policy is None:
                policy, own_policy = build_policy(cfg.policy, sim, cfg), True
            check_frame_size(policy, cfg)
            _run_shard(plan, sim, policy, todo)
    finally:
        plan.close()
        if own_policy and policy is not None:
            policy.close()
        if own_sim and sim is not None:
            sim.close()
    data = merge(plan.out)
    data["shard"] = plan.shard_outcome()
    return data


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
                log.error("episode %s (%s) failed: %s: %s (traceback in the record)",
                          episode.episode_id, episode.scene_id, type(err).__name__, err)
                log.debug("episode %s failed", episode.episode_id, exc_info=True)
                record.update({
                    "status": "error",
                    "error": f"{type(err).__name__}: {err}",
                    "traceback": traceback.format_exc(limit=8)[-4000:],
                })
                if writer is not None:
                    writer.close(discard=True)
            except BaseException:  # interrupted: nothing of this episode is kept
                if writer is not None:
                    writer.close(discard=True)
                raise
            plan.append(record)
            shown[episode.key] = record
            if bar is not None:
                bar.update(1)
                bar.set_postfix(_running_postfix(shown))
            elif record["status"] == "ok":
                m = record["metrics"]
                log.info("episode %s: SR %.0f SPL %.2f NE %s steps %d | running %s",
                         episode.episode_id, m["sr"], m["spl"] or 0.0,
                         "-" if m["ne"] is None else f"{m['ne']:.2f}", m["steps"],
                         _running_postfix(shown))
    finally:
        if bar is not None:
            bar.close()


def _safe(text: Any) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text))


def degenerate_line(summary: dict[str, Any]) -> str:
    """How degenerate episodes were counted, with their numbers in this table."""
    counts = summary.get("degenerate", {})
    return (f"Degenerate episodes: {counts.get('start_at_goal', 0)} start at the goal, "
            f"{counts.get('unreachable_goal', 0)} have an unreachable goal; {DEGENERATE_RULE}.")


def merge(output_dir: str | Path, write: bool = True) -> dict[str, Any]:
    """Combine every shard file of a run into one summary (and write metrics.json/.md).

    Only records of the run's own episodes (``run.json``) count. Returns ``{"summary":
    aggregate(...), "complete": bool, "expected": n, "finished": n, "scored": n, "errors": n,
    "protocol": str, "per_shard": {...}, "settings": {...}}``: ``finished`` counts episodes with
    a record (scored or errored), ``complete`` is true only when every episode was scored.
    ``episodes.jsonl`` gets all records sorted by (scene, episode id).
    """
    out = Path(output_dir)
    files = results_mod.shard_files(out)
    if not files:
        raise EvalError(f"{out}: no results files under {out / results_mod.RESULTS_DIR}")
    manifest = read_manifest(out) or {}
    records = results_mod.collect(out)
    if manifest.get("episodes") is not None:
        wanted = {tuple(str(v) for v in key) for key in manifest["episodes"]}
        ignored = sorted(k for k in records if k not in wanted)
        if ignored:
            log.warning("%s: %d record(s) are not episodes of this run (e.g. %s); ignored", out,
                        len(ignored), ignored[0])
        records = {k: v for k, v in records.items() if k in wanted}
    per_shard = {p.name: len(results_mod.latest_by_key(results_mod.read_records(p)))
                 for p in files}
    expected = manifest.get("num_episodes")
    summary = aggregate(records.values())
    settings = manifest.get("settings", {})
    protocol = manifest.get("protocol") or "unknown (run.json predates protocols)"
    data = {
        "summary": summary,
        "complete": expected is not None and summary["episodes"] == expected,
        "expected": expected,
        "finished": len(records),
        "scored": summary["episodes"],
        "errors": summary["errors"],
        "protocol": protocol,
        "degenerate_rule": DEGENERATE_RULE,
        "per_shard": per_shard,
        "settings": settings,
    }
    if write:
        _write_atomic(out / "metrics.json", json.dumps(data, indent=2, sort_keys=True) + "\n")
        md = format_table(summary, title=table_title(settings), notes=table_notes(data))
        md += f"\nShards: {', '.join(f'{k}: {v}' for k, v in per_shard.items())}.\n"
        _write_atomic(out / "metrics.md", md)
        ordered = sorted(records.values(), key=lambda r: episode_sort_key(
            Episode(r["episode_id"], r["scene_id"], [], [], [], "")))
        _write_atomic(out / "episodes.jsonl",
                      "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in ordered))
    return data


def table_title(settings: dict[str, Any]) -> str:
    """``<policy> on <episode file>``."""
    return f"{settings.get('policy', '?')} on {Path(str(settings.get('split', '?'))).name}"


def table_notes(data: dict[str, Any]) -> list[str]:
    """The lines printed under every table: the protocol, the counts, the degenerate rule."""
    expected = data["expected"] if data["expected"] is not None else "?"
    count = f"{data['scored']} of {expected} episodes scored"
    if data["errors"]:
        count += f", {data['errors']} errored (status error in episodes.jsonl; not in the means)"
    if not data["complete"]:
        count += " (incomplete run)"
    return [f"Protocol: {data['protocol']}.", count + ".", degenerate_line(data["summary"])]


def outcome_code(scored: int, errors: int) -> int:
    """The exit code of a run: 1 when any episode errored or none was scored, else 0."""
    return 1 if errors or not scored else 0


# ---- command line --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="janus-vln eval",
        description="Evaluate a policy on VLN-CE episodes (sharded, resumable); the results "
        "table goes to stdout, logs to stderr. `janus-vln merge --output-dir DIR` combines "
        "the shards of a run.",
    )
    p.add_argument("--config", help="eval YAML (config/eval_r2r.yaml, config/eval_rxr.yaml)")
    p.add_argument("--policy", help="required: random | forward | expert | a preset | a "
                   "checkpoint folder")
    p.add_argument("--split", help="episode file (R2R_VLNCE or RxR_VLNCE .json/.json.gz)")
    p.add_argument("--gt", help="_gt file (default: the sibling of --split when present)")
    p.add_argument("--languages", nargs="+", help="RxR language filter, e.g. en or en-US hi-IN")
    p.add_argument("--protocol", choices=sorted(PROTOCOLS),
                   help=f"episode-ending rules (default {DEFAULT_PROTOCOL}): vlnce = VLN-CE, "
                   "release = the JanusVLN release (STOP forced at step 400)")
    p.add_argument("--backend", help="embedded | habitat | auto (by the split's scenes)")
    p.add_argument("--output-dir", dest="output_dir", help="run directory (resumable)")
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="delete the results of an earlier run in --output-dir first")
    p.add_argument("--max-steps", dest="max_steps", type=int)
    p.add_argument("--force-stop-at", dest="force_stop_at", type=int,
                   help="release protocol only: the step whose action becomes STOP (400)")
    p.add_argument("--width", type=int, help="camera width (default: the checkpoint's, or 640)")
    p.add_argument("--height", type=int, help="camera height (default: the checkpoint's, or 480)")
    p.add_argument("--shard", type=int)
    p.add_argument("--num-shards", dest="num_shards", type=int)
    p.add_argument("--limit", type=int, help="only the first N episodes (sorted by scene, id)")
    p.add_argument("--episode-ids", dest="episode_ids", nargs="+")
    p.add_argument("--video", action="store_true", default=None)
    p.add_argument("--video-ratio", dest="video_ratio", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--retry-errors", dest="retry_errors", action="store_true", default=None)
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="any other EvalConfig field (YAML value), e.g. --set sim.render=false")
    return add_verbose(p)


def _merge_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="janus-vln merge",
        description="Combine the shard results of an evaluation run into metrics.json / "
        "metrics.md / episodes.jsonl; the table goes to stdout.")
    p.add_argument("--output-dir", dest="output_dir", required=True, help="the run directory")
    return add_verbose(p)


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """EvalConfig from parsed CLI arguments (YAML file first, then the flags, then --set)."""
    data: dict[str, Any] = {}
    if args.config:
        data = read_yaml_mapping(args.config, EvalError, "eval config")
    names = {f.name for f in dataclasses.fields(EvalConfig)}
    for key, value in vars(args).items():
        if key in names and value is not None:
            data[key] = value
    for key, value in parse_sets(EvalConfig, args.sets, EvalError, nested=("sim",)).items():
        if key == "sim":
            data["sim"] = {**(data.get("sim") or {}), **value}
        else:
            data[key] = value
    return config_from_dict(data, source=args.config or "command line")


def _print_table(data: dict[str, Any]) -> None:
    sys.stdout.write(format_table(data["summary"], title=table_title(data["settings"]),
                                  notes=table_notes(data)))
    sys.stdout.flush()


USER_ERRORS = (EvalError, EpisodeFormatError, results_mod.ResultsError)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: ``[run] [options]`` or ``merge --output-dir DIR``; returns an exit code.

    Exit codes: 0 every episode of this shard scored; 1 an episode errored or none was scored;
    2 a mistake in what was asked (one line on stderr); 130 interrupted (partial metrics kept).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "eval"
    if argv and argv[0] in ("run", "merge"):
        command = "merge" if argv.pop(0) == "merge" else "eval"
    args = (_merge_parser() if command == "merge" else _parser()).parse_args(argv)
    setup_logging(args.verbose)
    if command == "merge":
        try:
            data = merge(Path(args.output_dir))
        except USER_ERRORS as err:
            return fail(command, err)
        _print_table(data)
        return outcome_code(data["scored"], data["errors"])
    out = None
    previous = signal.getsignal(signal.SIGTERM)
    try:
        cfg = config_from_args(args)
        out = Path(cfg.output_dir)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _raise_interrupt)
        data = evaluate(cfg)
    except USER_ERRORS as err:
        return fail(command, err)
    except BackendUnavailableError as err:  # the backend died for good mid-run: results kept
        text = _interrupted_text(out).replace("rerun the same command", "fix it and rerun")
        return fail(command, f"{one_line(err)} ({text})", code=1)
    except KeyboardInterrupt:
        return interrupted(command, _interrupted_text(out))
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
    _print_table(data)
    log.info("metrics in %s", out / "metrics.json")
    shard = data["shard"]
    if shard["errors"]:
        log.error("%d of %d episodes of this shard errored (see 'error' in %s)", shard["errors"],
                  shard["episodes"], out / "episodes.jsonl")
    elif not shard["scored"]:
        log.error("no episode of this shard was scored")
    return outcome_code(shard["scored"], shard["errors"])


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _interrupted_text(out: Path | None) -> str:
    """What an interrupted run kept: its finished episodes (partial metrics are written)."""
    if out is None or not results_mod.shard_files(out):
        return "nothing finished"
    try:
        data = merge(out)
    except (*USER_ERRORS, OSError) as err:
        return f"results kept in {out}, metrics not written ({one_line(err)}); rerun to resume"
    return (f"{data['finished']} of {data['expected']} episodes finished, partial metrics in "
            f"{out / 'metrics.json'}; rerun the same command to resume")


def merge_main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point for ``janus-vln merge --output-dir DIR`` (``main(["merge", ...])``)."""
    return main(["merge", *list(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
