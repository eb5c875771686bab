"""Benchmark: the habitat worker's round trip (pipe + shared-memory frames), per request.

What the out-of-process design costs per step, without habitat-sim's own rendering: the worker
runs the MOCK habitat_sim of the tests (test/sim_bridge/fake_habitat; it fills the frames in
microseconds), so the time is the request/reply over the pipe, the worker writing RGB + depth
into shared memory, and the client copying both out. Reported per request at 640x480 RGB-D:
``step`` (renders), ``is_navigable`` (no frame) and the frame copy alone. Where habitat-sim is
installed, add its rendering time (``JANUS_HABITAT_PYTHON``) to the ``step`` figure.

    python -m benchmarks.habitat_worker [--steps 2000] [--python /path/to/python]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import markdown_table, write_result

FAKE = Path(__file__).resolve().parent.parent / "test" / "sim_bridge" / "fake_habitat"


def run(steps: int, python: str | None) -> list[list]:
    """Time the requests; return table rows."""
    os.environ["PYTHONPATH"] = str(FAKE)  # the worker process imports the MOCK habitat_sim
    from janus_core.actions import Action
    from sim_bridge.backends import make_simulator
    from sim_bridge.episodes import Episode, Goal
    from sim_bridge.simulator import SimConfig

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "s.glb").write_bytes(b"glTF")
        cfg = SimConfig(backend="habitat", scenes_dir=tmp, width=640, height=480,
                        habitat_python=python)
        with make_simulator(cfg) as sim:
            sim.reset(Episode("b", "s.glb", [3.0, 0.0, 3.0], [0, 0, 0, 1], [Goal([0, 0, 0])],
                              "benchmark"))
            rows = []
            for name, call in (
                ("step (TURN_LEFT, RGB-D 640x480)", lambda: sim.step(Action.TURN_LEFT)),
                ("is_navigable (no frame)", lambda: sim.is_navigable([1.0, 0.0, 1.0])),
                ("frame copy out of shared memory", lambda: (sim._rgb.copy(),
                                                             sim._depth.copy())),
            ):
                for _ in range(50):
                    call()
                t = np.empty(steps)
                for i in range(steps):
                    t0 = time.perf_counter()
                    call()
                    t[i] = time.perf_counter() - t0
                rows.append([name, f"{np.median(t) * 1e3:.3f}", f"{np.percentile(t, 95) * 1e3:.3f}",
                             f"{1 / t.mean():.0f}"])
            info = sim.worker.info
    rows.append([f"worker: Python {info['python']}, MOCK habitat_sim {info['habitat_sim']}",
                 "", "", ""])
    return rows


def main() -> None:
    """Run and append the result to benchmarks/results/habitat_worker.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--python", default=None, help="the worker's interpreter")
    args = parser.parse_args()
    rows = run(args.steps, args.python)
    table = markdown_table(["request", "median ms", "p95 ms", "per s"], rows)
    path = write_result("habitat_worker", "Habitat worker round trip (MOCK habitat_sim)", table,
                        "The MOCK fills its RGBA and depth buffers (no rasterisation) and the "
                        "step figure includes that fill and the worker's RGBA->RGB copy into "
                        "shared memory; habitat-sim's render time replaces the fill.")
    print(path.read_text().split("## ")[-1])  # noqa: T201 - a benchmark's table is its output


if __name__ == "__main__":
    main()
