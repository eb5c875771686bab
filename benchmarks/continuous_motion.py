"""Benchmark: time to finish episodes with stop-and-go vs continuous motion, through the ROS nodes.

Runs ``janus-vln sim-eval`` (the sim_bridge and navigator processes) twice on the same
episodes (default: the shipped demo episodes, ``models/janusvln-small/demo``) with the
simulator's expert behind the navigator (``expert:ros``) and the robot's motion limits of
``config/navigator.yaml`` (0.25 m/s, 0.5 m/s^2, 0.5 rad/s, 1.5 rad/s^2, 20 Hz) instead of the
evaluation profile's near-instant ones: once with ``continuous_motion: false`` (each action a
separate ramp up and down, the next step computed at rest) and once with ``continuous_motion:
true`` (the next step computed while moving, same-direction actions blended). The simulator
executes the discrete actions either way, so the actions and the metrics must be identical;
the time per episode is the bridge's ``episode_s`` (instruction to the episode's end).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO_SPLIT = REPO / "models" / "janusvln-small" / "demo" / "val_unseen_demo.json.gz"
ROBOT_MOTION = {  # config/navigator.yaml's limits (config/sim_eval.yaml makes motion instant)
    "max_linear_speed": "0.25", "max_angular_speed": "0.5", "linear_acceleration": "0.5",
    "angular_acceleration": "1.5", "control_rate": "20.0",
}


def run_mode(continuous: bool, args, out: Path) -> tuple[list[dict], float]:
    """One sim-eval run; the episode records and its wall time."""
    from janus_vln_ros import sim_eval

    params = {**ROBOT_MOTION, "continuous_motion": "true" if continuous else "false"}
    argv = ["--model", "expert:ros", "--split", str(args.split), "--output-dir", str(out),
            "--sim-settings", "{furniture: shapes}", "--timeout", str(args.timeout)]
    if args.episode_ids:
        argv += ["--episode-ids", args.episode_ids]
    if args.limit > 0:
        argv += ["--limit", str(args.limit)]
    for key, value in params.items():
        argv += ["--navigator-param", f"{key}:={value}"]
    start = time.perf_counter()
    code = sim_eval.main(argv)
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"sim-eval failed (exit {code}); logs in {out / 'logs'}")
    records = []
    for path in sorted((out / "results").glob("*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(records, key=lambda r: int(r["episode_id"])), wall


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default=str(DEMO_SPLIT))
    parser.add_argument("--episode-ids", default="", help="comma-separated (default: all)")
    parser.add_argument("--limit", type=int, default=-1)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    from benchmarks.common import markdown_table, write_result

    work = Path(tempfile.mkdtemp(prefix="continuous_motion_"))
    results = {}
    for continuous in (False, True):
        results[continuous] = run_mode(continuous, args, work / ("on" if continuous else "off"))
    (before, wall_before), (after, wall_after) = results[False], results[True]
    rows, same = [], True
    for a, b in zip(before, after):
        same &= a["actions"] == b["actions"] and a["metrics"] == b["metrics"]
        ta, tb = a["timings"]["episode_s"], b["timings"]["episode_s"]
        rows.append([a["episode_id"], len(a["actions"]), f"{ta:.1f}", f"{tb:.1f}",
                     f"{100 * (1 - tb / ta):.0f} %", int(a["metrics"]["sr"]),
                     int(b["metrics"]["sr"])])
    total_a = sum(r["timings"]["episode_s"] for r in before)
    total_b = sum(r["timings"]["episode_s"] for r in after)
    steps = sum(len(r["actions"]) for r in before)
    rows.append(["all", steps, f"{total_a:.1f}", f"{total_b:.1f}",
                 f"{100 * (1 - total_b / total_a):.0f} %",
                 f"{sum(r['metrics']['sr'] for r in before) / len(before):.2f}",
                 f"{sum(r['metrics']['sr'] for r in after) / len(after):.2f}"])
    table = markdown_table(
        ["episode", "actions", "stop-and-go (s)", "continuous (s)", "time saved",
         "SR before", "SR after"], rows)
    notes = (
        f"- Episodes: {args.split} ({len(before)}); policy `expert:ros` through sim_bridge + "
        "navigator processes\n"
        f"- Motion limits: {', '.join(f'{k} {v}' for k, v in ROBOT_MOTION.items())}\n"
        f"- Per step: {total_a / steps:.2f} s stop-and-go, {total_b / steps:.2f} s continuous\n"
        f"- Same actions and metrics in both runs: {'yes' if same else 'NO'}\n"
        f"- Wall time of each sim-eval run (start-up included): {wall_before:.0f} s, "
        f"{wall_after:.0f} s"
    )
    sys.stdout.write(table + "\n\n" + notes + "\n")
    if not args.no_write:
        write_result("continuous_motion", "Episode time, stop-and-go vs continuous motion",
                     table, notes)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
