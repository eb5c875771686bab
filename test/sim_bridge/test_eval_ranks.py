"""Evaluation under torchrun: 2 ranks write the same per-episode records as 1 rank.

test_evaluate.py checks ``--shard/--num-shards`` in one process and that RANK/WORLD_SIZE pick the
shard; here ``torchrun -m sim_bridge.evaluate`` runs the real two-process job, and the records
(timings, finish time and shard dropped) are compared with an in-process single-rank run.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from slurm_helpers import fake_slurm

from benchmarks.multi_gpu import StudyOptions, record_differences, run_study, stable_record
from sim_bridge.episodes import load_split
from sim_bridge.evaluate import EvalConfig, evaluate, merge, select_episodes, shard_episodes
from sim_bridge.generate import GenerateConfig, generate_dataset
from sim_bridge.results import read_records

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    out = tmp_path_factory.mktemp("ranks_data")
    paths = generate_dataset(out, GenerateConfig(splits={"val_unseen": 5}, seed=23,
                                                 episodes_per_scene=3))
    return paths["val_unseen"]


def records(out):
    return [json.loads(line) for line in (Path(out) / "episodes.jsonl").read_text().splitlines()]


def test_two_torchrun_ranks_equal_one(split, tmp_path):
    one = evaluate(EvalConfig(policy="random", split=str(split), output_dir=str(tmp_path / "one"),
                              sim={"render": False}, progress=False, max_steps=80))
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", "-m", "sim_bridge.evaluate",
         "--policy", "random", "--split", str(split), "--output-dir", str(tmp_path / "two"),
         "--max-steps", "80", "--no-progress", "--set", "sim.render=false"],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = merge(tmp_path / "two")
    assert two["complete"] and two["per_shard"] == {"shard-000-of-002.jsonl": 3,
                                                    "shard-001-of-002.jsonl": 2}
    # each rank took every second episode of the canonical order
    ordered = select_episodes(load_split(split))
    for rank in (0, 1):
        got = read_records(tmp_path / "two" / "results" / f"shard-00{rank}-of-002.jsonl")
        assert [r["episode_id"] for r in got] == [
            e.episode_id for e in shard_episodes(ordered, rank, 2)]
        assert {r["shard"] for r in got} == {rank}
    a, b = records(tmp_path / "one"), records(tmp_path / "two")
    assert len(a) == 5 and all(r["status"] == "ok" for r in a)
    assert sum(len(r["actions"]) for r in a) > 10  # episodes with real trajectories
    assert record_differences(a, b) == []
    assert [stable_record(r) for r in a] == [stable_record(r) for r in b]
    assert two["summary"] == one["summary"]
    # the comparison sees a changed trajectory
    b[1]["positions"][-1] = [0.0, 0.0, 0.0]
    assert record_differences(a, b) == [f"{a[1]['scene_id']}/{a[1]['episode_id']}: "
                                        "positions differ"]


@pytest.mark.slow
def test_benchmark_driver_cpu_tiny(tmp_path):
    """The whole benchmark on CPU: SFT on 1 and 2 ranks, then eval of the trained policy."""
    opts = StudyOptions(preset="tiny", device="cpu", ranks=[1, 2], steps=2, warmup=1,
                        global_batch=4, eval_episodes=2, eval_max_steps=6,
                        work_dir=str(tmp_path / "study"))
    result = run_study(opts)
    one, two = result["train"]
    assert one["losses"] == pytest.approx(two["losses"], rel=1e-5)
    ev1, ev2 = result["eval"]
    assert ev1["episodes"] == ev2["episodes"] == 2 and ev1["errors"] == 0
    assert record_differences(ev1["records"], ev2["records"]) == []
    assert (tmp_path / "study" / "summary.json").exists()
    # --reuse: the same settings take the stored rows, nothing runs again
    again = run_study(dataclasses.replace(opts, reuse=True))
    assert again["train"] == result["train"] and [r["records"] for r in again["eval"]] == [
        r["records"] for r in result["eval"]]
    changed = dataclasses.replace(opts, reuse=True, eval_max_steps=5, train=False,
                                  eval_policy=str(tmp_path / "study" / "trained_policy"))
    assert run_study(changed)["eval"][0]["steps"] <= 2 * 5  # other settings: it ran again


def test_slurm_eval_script_runs_two_ranks_and_merges(split, tmp_path):
    out = tmp_path / "slurm_eval"
    proc = subprocess.run(
        ["bash", "scripts/slurm_eval.sbatch", "--policy", "random", "--split", str(split),
         "--output-dir", str(out), "--max-steps", "80", "--set", "sim.render=false"],
        cwd=REPO, env=fake_slurm(tmp_path), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    data = json.loads((out / "metrics.json").read_text())
    assert data["complete"] and sorted(data["per_shard"]) == ["shard-000-of-002.jsonl",
                                                              "shard-001-of-002.jsonl"]
    missing = subprocess.run(["bash", "scripts/slurm_eval.sbatch", "--policy", "random"],
                             cwd=REPO, env=fake_slurm(tmp_path / "x"), capture_output=True,
                             text=True)
    assert missing.returncode == 2 and "--output-dir DIR" in missing.stderr
