"""Benchmark: embedded simulator RGB-D steps per second at 640x480 on the CPU (llvmpipe).

Each configuration runs in a fresh process, because Mesa reads ``LP_NUM_THREADS`` (llvmpipe's
rasteriser threads) once at start-up. "1 core" pins the process to one CPU with
``sched_setaffinity`` and sets ``LP_NUM_THREADS=1``; "2 threads" lets llvmpipe use two threads on
two cores. The workload is expert-driven episodes in several generated apartments (the step mix
of real episodes: forward steps with collisions and sliding, turns, a render per step). Reported:
``sim.step`` alone (render + motion), and ``sim.step`` plus ``sim.expert_action`` (what expert
data collection pays). Target: >= 150 steps/s for ``sim.step`` on one core.

    python -m benchmarks.sim_steps            # runs every configuration, appends the results
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from benchmarks.common import markdown_table, write_result

SCENES = (3, 7, 11, 19)


def worker(furniture: str, episodes: int, pin: bool) -> dict:
    """Run the workload in this process; return timings."""
    if pin:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    from janus_core.actions import Action
    from sim_bridge.backends import make_simulator
    from sim_bridge.episodes import Episode, Goal
    from sim_bridge.simulator import SimConfig, yaw_to_quaternion

    sim = make_simulator(SimConfig(width=640, height=480, hfov_deg=79.0, furniture=furniture))
    rng = np.random.default_rng(0)
    step_s, expert_s = [], []
    triangles = []
    try:
        for k in range(episodes):
            scene = f"embedded:apt_{SCENES[k % len(SCENES)]:05d}"
            sim.load_scene(scene)
            triangles.append(sim._renderer.triangles)
            a, b = sim.sample_navigable_point(rng), sim.sample_navigable_point(rng)
            ep = Episode(f"b{k}", scene, a.tolist(), yaw_to_quaternion(float(rng.uniform(-3, 3))),
                         [Goal(b.tolist())], "benchmark")
            sim.reset(ep)
            for _ in range(500):
                t0, c0 = time.perf_counter(), time.process_time()
                action = sim.expert_action()
                t1, c1 = time.perf_counter(), time.process_time()
                sim.step(action)
                t2, c2 = time.perf_counter(), time.process_time()
                expert_s.append((t1 - t0, c1 - c0))
                step_s.append((t2 - t1, c2 - c1))
                if action == Action.STOP:
                    break
        renderer = sim._renderer.ctx.info["GL_RENDERER"]
    finally:
        sim.close()
    step = np.array(step_s[5:])  # skip the first steps (shader compile, first uploads)
    expert = np.array(expert_s[5:])
    n = len(step)
    return {"steps": n, "step_p50_ms": float(np.median(step[:, 0]) * 1e3),
            "step_per_s": float(n / step[:, 0].sum()),
            "with_expert_per_s": float(n / (step[:, 0].sum() + expert[:, 0].sum())),
            "step_per_cpu_s": float(n / step[:, 1].sum()),
            "with_expert_per_cpu_s": float(n / (step[:, 1].sum() + expert[:, 1].sum())),
            "triangles": int(np.mean(triangles)), "renderer": renderer}


def run_config(threads: int, pin: bool, furniture: str, episodes: int) -> dict:
    env = dict(os.environ, LP_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "benchmarks.sim_steps", "--worker", "--furniture", furniture,
           "--episodes", str(episodes)] + (["--pin"] if pin else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--furniture", default=None, help="only this furniture mode")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pin", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.furniture or "shapes", args.episodes, args.pin)))  # noqa: T201
        return

    from sim_bridge.furniture import SweetHome3DCatalog

    modes = [args.furniture] if args.furniture else ["shapes"] + (
        ["sweethome3d"] if SweetHome3DCatalog().available else [])
    rows, renderer = [], ""
    for furniture in modes:
        for label, threads, pin in (("1 core", 1, True), ("2 threads", 2, False)):
            r = run_config(threads, pin, furniture, args.episodes)
            renderer = r["renderer"]
            per_cpu = (f"{r['step_per_cpu_s']:.0f}", f"{r['with_expert_per_cpu_s']:.0f}") \
                if pin else ("-", "-")
            rows.append([label, threads, furniture, r["triangles"], r["steps"],
                         f"{r['step_p50_ms']:.2f}", f"{r['step_per_s']:.0f}",
                         f"{r['with_expert_per_s']:.0f}", *per_cpu])
    table = markdown_table(
        ["CPU", "LP_NUM_THREADS", "furniture", "triangles", "steps", "step p50 ms (wall)",
         "sim.step / s (wall)", "step + expert / s (wall)", "sim.step / CPU-s",
         "step + expert / CPU-s"], rows)
    load = os.getloadavg()[0]
    notes = (f"- Renderer: {renderer}; RGB uint8 + depth float32, 640x480, HFOV 79 deg.\n"
             "- Workload: expert-driven episodes in apartments "
             f"{', '.join(str(s) for s in SCENES)}; target >= 150 sim.step/s on one core.\n"
             "- '/ CPU-s' divides by the process's CPU time (all its threads) while pinned to one "
             "core: the rate a dedicated core gives. Wall-clock rates depend on what else runs; "
             f"the 1-minute load average was {load:.1f} at the end of this run.")
    print(table)  # noqa: T201 - a benchmark's table is its output
    if not args.no_write:
        write_result("sim_steps", "Embedded simulator RGB-D steps, 640x480, CPU", table, notes)


if __name__ == "__main__":
    main()
