r"""``janus-vln demo``: one episode with the shipped JanusVLN-small, on a CPU, with a video.

The main job for a newcomer: after ``scripts/setup.sh``, ::

    . .venv/bin/activate
    janus-vln demo                      # episode 1 of the shipped val_unseen episodes
    janus-vln demo --episode 4 --out outputs/demo
    janus-vln demo --ros                # the same episode through the sim_bridge + navigator nodes

runs one episode of the embedded simulator (an apartment the model never saw in training) with
the shipped model (``models/janusvln-small``) on the CPU, prints the instruction and the metrics
(NE, SR, OS, SPL, nDTW, ...) and writes

- ``<out>/episode_<id>.mp4``: the agent's camera, with the instruction, the step, the action
  and (when the policy gives them) its probabilities drawn on it (:mod:`janus_vln_ros.overlay`,
  the navigator's ``~/debug_image`` view), beside the top-down map (its path in red, the
  expert's reference path in green, the goal and its 3 m success circle in blue);
- ``<out>/episode_<id>_map.png``: the top-down map with both paths at the end of the episode;
- ``<out>/run/``: the evaluation run (``episodes.jsonl``, ``metrics.json``).

With ``--ros`` the files are ``episode_<id>_ros.mp4``, ``episode_<id>_ros_map.png`` and
``<out>/ros/``, so the two runs can be compared side by side.

Episodes come from ``models/janusvln-small/demo/val_unseen_demo.json.gz``: the first ten episodes
of the generated ``val_unseen`` split (generator seed 0, apartments 10000 and 10001), shipped so
the demo needs no generation step (``--split`` takes any other episode file).

``--ros`` starts the two ROS nodes as processes (:mod:`janus_vln_ros.sim_eval`): the bridge
publishes the simulator's camera on the robot topics and executes the navigator's actions; the
video is then rendered from the recorded poses. The trained weights of the shipped model are not
in the repository yet (see its MODEL_CARD.md): until they are, the demo says so and runs the
simulator's expert instead, so the rest of the pipeline can still be seen. A ``--model`` folder
without weights is an error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from janus_core.console import ArgumentParser, add_verbose, fail, setup_logging

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "models" / "janusvln-small"
DEFAULT_SPLIT = DEFAULT_MODEL / "demo" / "val_unseen_demo.json.gz"
WEIGHTS = "model.safetensors"
SIM_SETTINGS = {"furniture": "shapes"}  # the look the model was trained on


class DemoError(RuntimeError):
    """The demo cannot run (missing split, bad episode id); the message says what to do."""


def has_weights(model: Path) -> bool:
    """True when ``model`` is a checkpoint folder with its config and weights."""
    return (model / "config.json").exists() and (
        (model / WEIGHTS).exists() or (model / "model.safetensors.index.json").exists())


def choose_policy(model: str | None) -> tuple[str, str, Any]:
    """``(label, eval policy spec, camera config)`` for ``--model`` (default: the shipped one).

    The shipped folder without weights falls back to the simulator's expert, with a warning; a
    ``--model`` folder without weights is a DemoError.
    """
    if model in ("expert", "random", "forward"):
        return model, model, None
    path = Path(model) if model else DEFAULT_MODEL
    if has_weights(path):
        from janus_core.checkpoint import CheckpointError, config_from_checkpoint

        try:
            return path.name, str(path), config_from_checkpoint(path)
        except (CheckpointError, ValueError) as err:
            raise DemoError(f"--model {path}: {err}") from None
    if model:
        what = "no such folder" if not path.exists() else (
            "not a folder" if not path.is_dir() else
            f"not a checkpoint folder (no config.json and {WEIGHTS})")
        raise DemoError(f"--model {model}: {what}; give a checkpoint folder, or one of expert, "
                        "random, forward")
    log.warning(
        "%s has no trained weights (%s): no checkpoint beats the forward-only baseline yet; "
        "the one in training is %s (see %s). Running the simulator's shortest-path EXPERT "
        "instead, to show the pipeline; --model DIR runs a checkpoint", path, WEIGHTS,
        path / "campaign", path / "MODEL_CARD.md")
    return "expert (model weights missing)", "expert", None


def find_episode(split: Path, episode: str | None) -> Any:
    """The episode with id ``episode`` (default: the first) of ``split``, with its ground truth."""
    from sim_bridge.episodes import EpisodeFormatError, episode_sort_key, find_gt_path, load_split

    if not split.exists():
        raise DemoError(f"episode file {split} does not exist")
    try:
        episodes = sorted(load_split(split, gt_path=find_gt_path(split)), key=episode_sort_key)
    except EpisodeFormatError as err:
        raise DemoError(f"--split {err}") from None
    if not episodes:
        raise DemoError(f"{split} holds no episodes")
    if episode is None:
        return episodes[0]
    for ep in episodes:
        if str(ep.episode_id) == str(episode):
            return ep
    ids = ", ".join(str(ep.episode_id) for ep in episodes[:20])
    raise DemoError(f"episode {episode} is not in {split}; its episodes: {ids}")


def _fresh(run_dir: Path) -> None:
    """Empty a previous demo run directory (only one that holds a run of ours)."""
    if run_dir.exists():
        if not (run_dir / "run.json").exists() and any(run_dir.iterdir()):
            raise DemoError(f"{run_dir} exists and is not a demo run; choose another --out")
        shutil.rmtree(run_dir)


class _ProbsRecorder:
    """A policy that passes everything through and keeps each step's probabilities (video)."""

    def __init__(self, policy: Any):
        self.policy, self.probs = policy, []

    def reset(self, instruction: str) -> None:
        self.probs = []
        self.policy.reset(instruction)

    def act(self, observation: Any) -> Any:
        result = self.policy.act(observation)
        self.probs.append(result.probs)
        return result

    def __getattr__(self, name: str) -> Any:  # cfg, close, ...: the wrapped policy's
        return getattr(self.policy, name)


def run_in_process(spec: str, split: Path, episode: Any, run_dir: Path, width: int,
                   height: int, hfov: float, max_steps: int,
                   device: str = "cpu") -> dict[str, Any]:
    """Run the episode through :func:`sim_bridge.evaluate.evaluate`.

    A checkpoint's policy is built here on ``device`` (a baseline is built by the runner); its
    per-step probabilities come back as ``step_probs`` in the returned summary.
    """
    from sim_bridge.evaluate import EvalConfig, evaluate, janus_overrides

    cfg = EvalConfig(policy=spec, split=str(split), episode_ids=[str(episode.episode_id)],
                     output_dir=str(run_dir), width=width, height=height, hfov_deg=hfov,
                     max_steps=max_steps, video=False, progress=False,
                     sim=dict(SIM_SETTINGS))  # the demo renders its own video (with overlay)
    policy = None
    if spec not in ("expert", "random", "forward"):
        from janus_core.factory import build_policy

        try:
            policy = _ProbsRecorder(build_policy(spec, device=device, **janus_overrides(cfg)))
        except (ValueError, OSError) as err:  # CheckpointError, ConfigError, a bad device
            raise DemoError(f"--model {spec}: {err}") from None
    try:
        summary = evaluate(cfg, policy=policy)
        if policy is not None:
            summary["step_probs"] = policy.probs
        return summary
    finally:
        if policy is not None:
            policy.close()


def run_through_ros(model: str, split: Path, episode: Any, run_dir: Path, width: int,
                    height: int, max_steps: int) -> dict[str, Any]:
    """Run the episode through the sim_bridge and navigator nodes (:mod:`sim_eval`)."""
    from janus_vln_ros import sim_eval
    from sim_bridge.evaluate import merge

    argv = ["--model", model, "--split", str(split), "--output-dir", str(run_dir),
            "--episode-ids", str(episode.episode_id), "--width", str(width),
            "--height", str(height), "--max-steps", str(max_steps),
            "--sim-settings", json.dumps(SIM_SETTINGS), "--timeout", "900"]
    code = sim_eval.main(argv)
    if code != 0:
        raise DemoError(f"the ROS run failed (janus-vln sim-eval exit code {code}); node logs in "
                        f"{run_dir / 'logs'}")
    return merge(run_dir)


def episode_record(run_dir: Path) -> dict[str, Any]:
    """The (single) episode record of a run directory."""
    lines = (run_dir / "episodes.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    if not records:
        raise DemoError(f"{run_dir}: no episode record")
    rec = records[0]
    if rec.get("status") != "ok":
        raise DemoError(f"the episode failed: {rec.get('error')} (its traceback is in "
                        f"{run_dir / 'episodes.jsonl'})")
    return rec


def write_outputs(episode: Any, record: dict[str, Any], out: Path, width: int, height: int,
                  hfov: float, fps: int, step_probs: Sequence[Any] | None = None,
                  suffix: str = "") -> tuple[Path, Path]:
    """The episode's mp4 (rendered from the recorded poses, with the overlay) and map PNG.

    Named ``episode_<id><suffix>.mp4`` / ``episode_<id><suffix>_map.png`` in ``out``.
    """
    import numpy as np
    from PIL import Image

    from janus_core.actions import Action
    from janus_vln_ros.overlay import draw_overlay
    from sim_bridge.backends import make_simulator
    from sim_bridge.simulator import SimConfig
    from sim_bridge.video import EpisodeVideo, compose_frame

    name = f"episode_{episode.episode_id}{suffix}"
    video_path, map_path = out / f"{name}.mp4", out / f"{name}_map.png"
    expert_path = episode.gt_locations or episode.reference_path or None
    positions, yaws, actions = record["positions"], record["yaws"], record.get("actions", [])
    probs = list(step_probs or [])
    sim = make_simulator(SimConfig(width=width, height=height, hfov_deg=hfov, render=True,
                                   **SIM_SETTINGS))
    try:
        sim.reset(episode)
        video = EpisodeVideo(video_path, fps=fps, expert_path=expert_path,
                             goal=episode.goal_position)
        for k, (pos, yaw) in enumerate(zip(positions, yaws)):  # replay the recorded poses
            obs = sim.set_agent_state(pos, yaw)
            action = Action(actions[k]).name if k < len(actions) else ""
            rgb = draw_overlay(obs.rgb, episode.instruction, k, action,
                               probs[k] if k < len(probs) else None)
            video.add(dataclasses.replace(obs, rgb=rgb), sim, positions[: k + 1])
        video.close()
        top = sim.top_down_map()
        side = 720
        canvas = compose_frame(np.zeros((side, 0, 3), np.uint8), top, positions, float(yaws[-1]),
                               expert_path, episode.goal_position,
                               text=f"episode {episode.episode_id}: {len(positions) - 1} moves")
        Image.fromarray(canvas).save(map_path)
    finally:
        sim.close()
    return video_path, map_path


def report(episode: Any, label: str, record: dict[str, Any], summary: dict[str, Any],
           video: Path, map_png: Path, seconds: float, ros: bool) -> str:
    """The text printed at the end: instruction, outcome, metrics table, files."""
    from sim_bridge.evaluate import table_notes
    from sim_bridge.metrics import format_table

    m = record["metrics"]
    outcome = "SUCCESS" if m.get("sr") else "not successful"
    steps = record.get("timings", {}).get("policy_step_mean_s")
    lines = [
        "",
        f"Episode {episode.episode_id} in {episode.scene_id} (an apartment never seen in "
        "training)",
        f"Instruction: {episode.instruction}",
        f"Policy: {label}{' through the ROS nodes' if ros else ''}",
        f"Outcome: {outcome}: stopped {m['ne']:.2f} m from the goal after {m['steps']} actions "
        f"(success = STOP within 3 m); {seconds:.0f} s"
        + (f", {1000 * steps:.0f} ms per policy step" if steps else ""),
        "",
        format_table(summary["summary"], title="Metrics (this episode)",
                     notes=table_notes(summary)).rstrip(),
        "",
        f"Video:        {video}",
        f"Top-down map: {map_png}",
        "",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The ``janus-vln demo`` argument parser."""
    p = ArgumentParser(prog="janus-vln demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="checkpoint folder (default: the shipped models/"
                   f"{DEFAULT_MODEL.name}); or expert, random, forward")
    p.add_argument("--episode", help="episode id (default: the first of the split)")
    p.add_argument("--split", default=str(DEFAULT_SPLIT),
                   help="episode file (default: the shipped val_unseen demo episodes)")
    p.add_argument("--out", default="outputs/demo", help="output folder")
    p.add_argument("--ros", action="store_true",
                   help="run through the sim_bridge + navigator ROS nodes (janus-vln sim-eval)")
    p.add_argument("--max-steps", type=int, default=500, help="episode step limit (VLN-CE: 500)")
    p.add_argument("--device", default="cpu", help="torch device of the policy (default: cpu)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: all)")
    p.add_argument("--fps", type=int, default=8, help="video frames per second")
    return add_verbose(p)


def check_arguments(args: argparse.Namespace) -> None:
    """DemoError (one line) for values that cannot work, before anything runs."""
    for name in ("max_steps", "fps"):
        if getattr(args, name) < 1:
            raise DemoError(f"--{name.replace('_', '-')} must be at least 1, got "
                            f"{getattr(args, name)}")
    if args.threads < 0:
        raise DemoError(f"--threads must be >= 0 (0: all), got {args.threads}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise DemoError(f"--out {out} is a file; give a folder for the video, map and run")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``janus-vln demo``; returns the exit code."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    setup_logging(args.verbose)
    from janus_core.config import ConfigError
    from sim_bridge.evaluate import EvalError

    try:
        check_arguments(args)
        label, spec, model_cfg = choose_policy(args.model)
        split = Path(args.split)
        episode = find_episode(split, args.episode)
        if args.threads > 0:
            import torch

            torch.set_num_threads(args.threads)
        width, height, hfov = 640, 480, 79.0
        if model_cfg is not None:
            im = model_cfg.image
            width, height, hfov = im.input_width, im.input_height, im.hfov_deg
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        run_dir = out / ("ros" if args.ros else "run")
        _fresh(run_dir)
        log.info("episode %s (%s), policy %s; output in %s", episode.episode_id,
                 episode.scene_id, label, out)
        start = time.perf_counter()
        step_probs = None
        if args.ros:
            ros_model = spec if model_cfg is not None else "expert:ros"
            summary = run_through_ros(ros_model, split, episode, run_dir, width, height,
                                      args.max_steps)
        else:
            summary = run_in_process(spec, split, episode, run_dir, width, height, hfov,
                                     args.max_steps, args.device)
            step_probs = summary.pop("step_probs", None)
        record = episode_record(run_dir)
        seconds = time.perf_counter() - start
        video, map_png = write_outputs(episode, record, out, width, height, hfov, args.fps,
                                       step_probs, suffix="_ros" if args.ros else "")
    except (DemoError, EvalError, ConfigError) as err:
        return fail("demo", err)
    sys.stdout.write(report(episode, label, record, summary, video, map_png, seconds, args.ros))
    return 0


if __name__ == "__main__":
    sys.exit(main())
