r"""Simulator worker processes for the small-model recipe: generation, collection, DAgger, eval.

:class:`WorkerPool` starts ``n`` processes (``spawn``, so CUDA works in them). Each keeps its own
simulators and policies between tasks and answers commands:

- ``generate``: one shard of generated episodes (:func:`sim_bridge.generate.generate_dataset`);
- ``collect``: expert trajectories of some episodes (:func:`training.collect.expert_rollout`,
  the package's collection: the waypoint expert, its keep rule), frames resized by the model's
  processor and appended to a :mod:`training.trajectories` store;
- ``dagger_reset`` / ``dagger_step``: environments of a lockstep DAgger wave (the model's actions
  come from the parent's :class:`~training.lockstep.LockstepPolicy`; the release's rule from
  :mod:`training.dagger_rules` and the waypoint expert run here, one simulator per slot);
- ``eval``: one shard of :func:`sim_bridge.evaluate.evaluate` with the real policy (a JanusVLN
  checkpoint through ``build_policy``) or a baseline.

The parent hands tasks to idle workers (:meth:`WorkerPool.run_tasks`) or talks to chosen ones
(:meth:`WorkerPool.call_many`). A task that raises comes back as :class:`WorkerError` with the
worker's traceback.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing as mp
import os
import queue
import random
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class WorkerError(RuntimeError):
    """A worker task failed or a worker died; the message carries its traceback."""


@dataclasses.dataclass
class WorkerSettings:
    """What every worker needs: simulator settings, the model's frame geometry, the store."""

    sim: dict[str, Any]
    geometry: tuple[int, int, int, int, int]  # input w, input h, target width, patch, merge
    store_dir: str = ""
    torch_threads: int = 1
    eval_device: str = "cpu"
    log_level: int = logging.WARNING


# ---- the worker side -----------------------------------------------------------------------------


class _Resizer:
    """The policy's frame preprocessing (``processor.preprocess_frame``) without a tokenizer."""

    def __init__(self, geometry: tuple[int, int, int, int, int]):
        from janus_core.processor import compute_geometry

        w, h, target, patch, merge = geometry
        self.geo = compute_geometry(w, h, target, patch, merge)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        from janus_core.processor import resize_frame

        return resize_frame(rgb, self.geo)


class _Recorder:
    """An in-memory trajectory recorder (``add_frame`` as :mod:`training.annotations` has).

    Also notes the geodesic distance to the goal at every frame (for ``stop_radius``).
    """

    def __init__(self, resize: _Resizer, sim: Any):
        self.resize = resize
        self.sim = sim
        self.frames: list[np.ndarray] = []
        self.distances: list[float] = []

    def add_frame(self, rgb: np.ndarray) -> None:
        self.frames.append(self.resize(rgb))
        self.distances.append(float(self.sim.distance_to_goal()))


def stop_suffix(labels: Sequence[int], distances: Sequence[float], radius: float) -> list[int]:
    """``labels`` with the trailing frames closer than ``radius`` (m) to the goal set to STOP.

    Success in VLN-CE is a STOP within 3 m; the expert stops 0.25 m from the goal, so the frames
    just before its STOP look the same but are labelled MOVE/TURN. Labelling the final approach
    STOP (only the trailing run of close frames, so a route passing the goal early is unchanged)
    removes that ambiguity. ``radius <= 0`` leaves the labels as they are.
    """
    out = [int(a) for a in labels]
    i = len(out) - 1
    while radius > 0 and i >= 0 and distances[i] < radius:
        out[i] = 0  # Action.STOP
        i -= 1
    return out


class _DaggerEnv:
    """One DAgger episode, stepped from outside (the loop of ``training.dagger.dagger_rollout``).

    The frame the agent acts on and the expert's action are ready before each :meth:`step`.
    ``label``: ``expert`` records the expert's action at every frame (classic DAgger; STOP on the
    final segment closer than ``stop_radius`` to the goal), ``executed`` the action actually taken
    (the release).
    """

    def __init__(self, sim: Any, episode: Any, rule: Any, resize: _Resizer, max_steps: int,
                 force_stop_at: int | None, label: str, seed: str, stop_radius: float = 0.0):
        from training.dagger_rules import DaggerController, segment_gt_actions
        from training.waypoints import WaypointExpert

        self.sim, self.episode, self.rule = sim, episode, rule
        self.resize, self.max_steps, self.force_stop_at, self.label = (
            resize, max_steps, force_stop_at, label)
        self.stop_radius = float(stop_radius)
        self.obs = sim.reset(episode)
        self.expert = WaypointExpert(sim, episode, rule.waypoint_radius,
                                     rule.final_waypoint_radius)
        counts = segment_gt_actions(episode.reference_path, episode.gt_locations,
                                    episode.gt_actions, sim.config.forward_step,
                                    sim.config.turn_angle)
        if len(counts) != self.expert.num_segments:
            counts = [sum(counts)] * self.expert.num_segments
        self.ctrl = DaggerController(rule, counts, rng=random.Random(seed))
        self.position = np.asarray(self.obs.position, dtype=float)
        self.geodesic_start = float(sim.geodesic_distance(self.position.tolist(),
                                                          episode.goal_position))
        self.frames: list[np.ndarray] = []
        self.labels: list[int] = []
        self.executed: list[int] = []
        self.by: list[str] = []
        self.travelled = 0.0
        self.stopped = False
        self.done = False
        self._prepare()

    def _prepare(self) -> None:
        from janus_core.actions import Action

        self.frames.append(self.resize(self.obs.rgb))
        before = self.expert.index
        self.expert.advance()
        self.expert_action = Action(int(self.expert.action()))
        for _ in range(self.expert.index - before):
            self.ctrl.waypoint_reached()

    def step(self, model_action: int) -> None:
        from janus_core.actions import Action

        step = len(self.executed)
        action = Action(int(model_action))
        if self.force_stop_at is not None and step >= self.force_stop_at:
            action = Action.STOP
        decision = self.ctrl.decide(action, self.expert_action, float(self.sim.distance_to_goal()))
        self.executed.append(int(decision.action))
        self.by.append(decision.by)
        if self.label == "executed":
            label = decision.action
        elif (self.ctrl.final_segment and self.stop_radius > 0
              and float(self.sim.distance_to_goal()) < self.stop_radius):
            label = Action.STOP  # the final approach, as in the expert data (stop_suffix)
        else:
            label = self.expert_action
        self.labels.append(int(label))
        if decision.action == Action.STOP:
            self.stopped = self.done = True
            return
        self.obs = self.sim.step(decision.action)
        new = np.asarray(self.obs.position, dtype=float)
        self.travelled += float(np.linalg.norm(new - self.position))
        self.position = new
        if len(self.executed) >= self.max_steps:
            self.done = True
            return
        self._prepare()

    def truncate(self) -> None:
        """End the episode before its next action (the frame waiting for it is dropped)."""
        del self.frames[len(self.labels):]
        self.done = True

    def summary(self) -> dict[str, Any]:
        from training.dagger_rules import keep_episode, path_ratio

        final = float(self.sim.distance_to_goal())
        pl = path_ratio(self.geodesic_start, self.travelled)
        # an episode cut by a deadline before its first action has no frame to keep
        keep = (bool(self.labels) and math.isfinite(final)
                and keep_episode(self.rule, final, pl, self.ctrl.model_failed))
        return {
            "episode_id": str(self.episode.episode_id), "scene_id": str(self.episode.scene_id),
            "steps": len(self.executed), "model_steps": self.by.count("model"),
            "expert_steps": self.by.count("expert"), "model_failed": self.ctrl.model_failed,
            "stopped": self.stopped, "distance_to_goal": round(final, 4)
            if math.isfinite(final) else None,
            "success": bool(self.stopped and final < 3.0), "pl": round(pl, 4), "keep": keep,
        }


def _failed(where: str, episode: Any, err: Exception, steps: int = 0) -> dict[str, Any]:
    """The summary of a DAgger episode whose simulator raised (logged; never kept)."""
    log.warning("DAgger episode %s: %s failed (%s: %s); skipped", episode.episode_id, where,
                type(err).__name__, err)
    return {"episode_id": str(episode.episode_id), "scene_id": str(episode.scene_id),
            "steps": steps, "model_steps": 0, "expert_steps": 0, "model_failed": False,
            "stopped": False, "distance_to_goal": None, "success": False, "pl": 0.0,
            "keep": False, "error": f"{where}: {type(err).__name__}: {err}"}


class _Worker:
    """State of one worker process: simulators, loaded splits, policies, store writers."""

    def __init__(self, wid: int, settings: WorkerSettings):
        self.wid = wid
        self.settings = settings
        self.resize = _Resizer(settings.geometry)
        self._sims: dict[Any, Any] = {}
        self._splits: dict[str, dict[str, Any]] = {}
        self._writers: dict[str, Any] = {}
        self._policies: dict[str, Any] = {}
        self._envs: dict[int, _DaggerEnv] = {}

    # -- shared pieces --
    def sim(self, key: Any = "main", render: bool = True) -> Any:
        if key not in self._sims:
            from sim_bridge.backends import make_simulator
            from sim_bridge.simulator import SimConfig

            values = {**self.settings.sim, "render": render}
            self._sims[key] = make_simulator(SimConfig(**values))
        return self._sims[key]

    def episodes(self, split: str) -> dict[str, Any]:
        if split not in self._splits:
            from sim_bridge.episodes import find_gt_path, load_split

            eps = load_split(split, gt_path=find_gt_path(split))
            self._splits[split] = {str(ep.episode_id): ep for ep in eps}
        return self._splits[split]

    def writer(self, tag: str) -> Any:
        if tag not in self._writers:
            from training.trajectories import StoreWriter

            geo = self.resize.geo
            self._writers[tag] = StoreWriter(self.settings.store_dir, tag, self.wid,
                                             geo.vggt_height, geo.vggt_width)
        return self._writers[tag]

    # -- tasks --
    def generate(self, out: str, split: str, count: int, seed: int,
                 overrides: dict[str, Any]) -> dict[str, Any]:
        from sim_bridge.generate import GenerateConfig, generate_dataset

        sim = {k: v for k, v in self.settings.sim.items()
               if k in ("forward_step", "turn_angle", "agent_radius", "grid_cell")}
        cfg = GenerateConfig(splits={split: count}, seed=seed,
                             sim={**sim, "render": False}, **overrides)
        written = generate_dataset(out, cfg)
        return {"split": str(written[split])}

    def collect(self, split: str, episode_ids: Sequence[str], tag: str,
                options: dict[str, Any], stop_radius: float = 0.0) -> list[dict[str, Any]]:
        from training.annotations import trajectory_name
        from training.collect import CollectConfig, expert_rollout

        cfg = CollectConfig(split=split, progress=False, **options)
        sim = self.sim()
        episodes = self.episodes(split)
        out = []
        for eid in episode_ids:
            ep = episodes[str(eid)]
            rec = _Recorder(self.resize, sim)
            name = trajectory_name(ep.scene_id, "r2r", ep.episode_id)
            try:
                result = expert_rollout(sim, ep, cfg, rec)
            except Exception as err:  # a simulator failure skips this episode, not the collection
                log.warning("collect: episode %s failed (%s: %s); skipped", ep.episode_id,
                            type(err).__name__, err)
                out.append({"name": name, "kept": False, "frames": 0, "error": str(err),
                            "distance_to_goal": float("nan")})
                continue
            item = {"name": name, "kept": bool(result["keep"]), "frames": len(rec.frames),
                    "distance_to_goal": float(result["distance_to_goal"])}
            if result["keep"]:
                labels = stop_suffix(result["executed"], rec.distances, stop_radius)
                self.writer(tag).add(name, ep.instruction, rec.frames, labels,
                                     source="expert", scene_id=str(ep.scene_id),
                                     episode_id=str(ep.episode_id),
                                     stop_frames=labels.count(0))
            out.append(item)
        return out

    def dagger_reset(self, split: str, slots: Sequence[tuple[int, str]], rule: dict[str, Any],
                     options: dict[str, Any]) -> dict[int, dict[str, Any]]:
        from training.dagger_rules import DaggerRule

        episodes = self.episodes(split)
        dr = DaggerRule(**rule)
        out = {}
        self._envs = {}
        for slot, eid in slots:
            ep = episodes[str(eid)]
            try:
                env = _DaggerEnv(self.sim(("slot", slot)), ep, dr, self.resize,
                                 options["max_steps"], options.get("force_stop_at"),
                                 options["label"], f"{options.get('seed', 0)}|{ep.episode_id}",
                                 options.get("stop_radius", 0.0))
            except Exception as err:  # a simulator failure skips this episode, not the wave
                out[slot] = {"error": _failed("reset", ep, err)}
                continue
            self._envs[slot] = env
            out[slot] = {"frame": env.frames[-1], "instruction": ep.instruction}
        return out

    def dagger_step(self, actions: dict[int, int], tag: str) -> dict[int, dict[str, Any]]:
        out = {}
        for slot, action in actions.items():
            env = self._envs[slot]
            try:
                env.step(action)
            except Exception as err:  # a simulator failure ends this episode, unkept
                out[slot] = {"done": True, "summary": _failed("step", env.episode, err,
                                                              steps=len(env.executed))}
                continue
            if not env.done:
                out[slot] = {"frame": env.frames[-1], "done": False}
                continue
            out[slot] = self._finish_dagger(env, tag)
        return out

    def dagger_truncate(self, slots: Sequence[int], tag: str) -> dict[int, dict[str, Any]]:
        """End these episodes where they are (a deadline passed); kept ones are written."""
        out = {}
        for slot in slots:
            env = self._envs[slot]
            env.truncate()
            out[slot] = self._finish_dagger(env, tag)
        return out

    def _finish_dagger(self, env: _DaggerEnv, tag: str) -> dict[str, Any]:
        from training.annotations import trajectory_name

        summary = env.summary()
        if summary["keep"]:
            ep = env.episode
            name = trajectory_name(ep.scene_id, "dagger", ep.episode_id)
            self.writer(tag).add(name, ep.instruction, env.frames, env.labels,
                                 source="dagger", **summary)
        return {"done": True, "summary": summary}

    def eval(self, spec: str, checkpoint: str | None, cfg: dict[str, Any]) -> dict[str, Any]:
        from sim_bridge.evaluate import EvalConfig, evaluate, janus_overrides, make_sim

        ecfg = EvalConfig(**cfg)
        key = ("eval", ecfg.width, ecfg.height)
        if key not in self._sims:
            self._sims[key] = make_sim(ecfg)
        policy = None
        if checkpoint is not None:
            if spec not in self._policies:
                import torch

                from janus_core.factory import build_policy

                device = self.settings.eval_device
                if device == "auto":
                    device = "cuda" if torch.cuda.is_available() else "cpu"
                self._policies[spec] = build_policy(checkpoint, device=device,
                                                    **janus_overrides(ecfg))
            policy = self._policies[spec]
        data = evaluate(ecfg, policy=policy, sim=self._sims[key])
        return {"finished": data["finished"], "expected": data["expected"]}

    def close(self) -> None:
        for p in self._policies.values():
            p.close()
        for s in self._sims.values():
            s.close()


def _worker_main(wid: int, commands: Any, results: Any, settings: WorkerSettings) -> None:
    """Process entry point: answer commands until ``stop``."""
    logging.basicConfig(level=settings.log_level,
                        format=f"%(asctime)s %(levelname)s [w{wid}] %(name)s: %(message)s")
    os.environ.setdefault("OMP_NUM_THREADS", str(settings.torch_threads))
    import torch

    torch.set_num_threads(settings.torch_threads)
    worker = _Worker(wid, settings)
    try:
        while True:
            kind, payload = commands.get()
            if kind == "stop":
                break
            try:
                result = getattr(worker, kind)(**payload)
                results.put((wid, "ok", result))
            except Exception:  # noqa: BLE001 - reported to the parent with the traceback
                results.put((wid, "error", traceback.format_exc()))
    finally:
        worker.close()


# ---- the parent side -----------------------------------------------------------------------------


class WorkerPool:
    """``n`` worker processes (see the module docstring); use as a context manager."""

    def __init__(self, n: int, settings: WorkerSettings):
        if n < 1:
            raise ValueError(f"need at least one worker, got {n}")
        ctx = mp.get_context("spawn")
        self.results = ctx.Queue()
        self.commands = [ctx.Queue() for _ in range(n)]
        self.procs = [
            ctx.Process(target=_worker_main, args=(i, self.commands[i], self.results, settings),
                        daemon=True, name=f"recipe-worker-{i}")
            for i in range(n)
        ]
        for p in self.procs:
            p.start()
        self.n = n

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _get(self, timeout: float = 5.0) -> tuple[int, Any]:
        while True:
            try:
                wid, status, result = self.results.get(timeout=timeout)
            except queue.Empty:
                dead = [p.name for p in self.procs if not p.is_alive()]
                if dead:
                    raise WorkerError(f"worker(s) {dead} died (exit codes "
                                      f"{[p.exitcode for p in self.procs]})") from None
                continue
            if status == "error":
                raise WorkerError(f"worker {wid} failed:\n{result}")
            return wid, result

    def run_tasks(self, kind: str, payloads: Sequence[dict[str, Any]],
                  deadline: float | None = None,
                  on_result: Callable[[int, Any], None] | None = None) -> list[Any]:
        """Run ``kind`` once per payload on idle workers; results in payload order.

        Tasks not started by ``deadline`` (``time.monotonic()``) are skipped (result None).
        """
        out: list[Any] = [None] * len(payloads)
        running: dict[int, int] = {}
        next_task = 0
        idle = list(range(self.n))
        while next_task < len(payloads) or running:
            while idle and next_task < len(payloads):
                if deadline is not None and time.monotonic() > deadline:
                    log.warning("%s: deadline reached; %d of %d tasks not started", kind,
                                len(payloads) - next_task, len(payloads))
                    next_task = len(payloads)
                    break
                wid = idle.pop()
                self.commands[wid].put((kind, payloads[next_task]))
                running[wid] = next_task
                next_task += 1
            if not running:
                break
            wid, result = self._get()
            task = running.pop(wid)
            out[task] = result
            idle.append(wid)
            if on_result is not None:
                on_result(task, result)
        return out

    def call_many(self, kind: str, payloads: dict[int, dict[str, Any]]) -> dict[int, Any]:
        """Send ``kind`` to the workers in ``payloads`` (worker id -> payload); wait for all."""
        for wid, payload in payloads.items():
            self.commands[wid].put((kind, payload))
        out = {}
        while len(out) < len(payloads):
            wid, result = self._get()
            out[wid] = result
        return out

    def close(self) -> None:
        """Stop every worker (they close their simulators and policies)."""
        for q in self.commands:
            q.put(("stop", None))
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)


def default_workers() -> int:
    """All CPUs but one (at least one)."""
    return max(1, (os.cpu_count() or 2) - 1)


def chunked(items: Sequence[Any], size: int) -> list[list[Any]]:
    """``items`` in consecutive pieces of at most ``size``."""
    return [list(items[i : i + size]) for i in range(0, len(items), max(1, size))]


def store_path(root: str | Path) -> Path:
    """The trajectory store directory under a recipe work dir."""
    return Path(root) / "store"
