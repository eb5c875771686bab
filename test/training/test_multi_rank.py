"""SFT on 2 gloo ranks (torchrun, the Trainer's DDP on CPUs) equals 1 rank at the same global batch.

The micro batch stays 1 and the gradient accumulation halves with 2 ranks, so each optimizer step
averages the same samples; the loss curves must agree to float32 rounding. A 1-rank run with half
the global batch is the control that shows the comparison can fail.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from slurm_helpers import fake_slurm

from benchmarks.multi_gpu import (
    BenchmarkError,
    StudyOptions,
    combine_train_ranks,
    grad_accum_for,
    loss_differences,
    main,
    train_tables,
)
from benchmarks.train_throughput import write_synthetic_set

REPO = Path(__file__).resolve().parents[2]
STEPS = 3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # train_tiny.yaml's camera (112x84); 12 samples = 3 steps x global batch 4, one epoch
    return write_synthetic_set(tmp_path_factory.mktemp("mr_data"), num_traj=1, traj_len=12,
                               height=84, width=112, seed=3)


def worker_args(data, out, global_batch=4):
    return ["train-worker", "--preset", "tiny", "--strategy", "ddp", "--device", "cpu",
            "--data", str(data), "--steps", str(STEPS), "--warmup", "0",
            "--global-batch", str(global_batch), "--micro-batch", "1", "--seed", "7",
            "--out", str(out)]


def read_ranks(out, n):
    return [json.loads((Path(out) / f"rank{r}.json").read_text()) for r in range(n)]


def test_two_gloo_ranks_give_the_one_rank_loss_curve(data, tmp_path, one_thread):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", "-m", "benchmarks.multi_gpu",
         *worker_args(data, tmp_path / "two")],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert main(worker_args(data, tmp_path / "one")) == 0  # 1 rank, in this process
    assert main(worker_args(data, tmp_path / "half", global_batch=2)) == 0

    two = read_ranks(tmp_path / "two", 2)
    assert [r["world_size"] for r in two] == [2, 2]
    assert {r["accelerate"] for r in two} == {"DistributedType.MULTI_CPU"}  # DDP over gloo
    assert [r["grad_accum"] for r in two] == [2, 2]
    # the ranks trained on different micro batches (a sharded loader, not a copy)
    assert two[0]["losses"] != two[1]["losses"]
    one = combine_train_ranks(read_ranks(tmp_path / "one", 1), 4)
    both = combine_train_ranks(two, 4)
    assert one["grad_accum"] == 4 and len(one["losses"]) == STEPS == len(both["losses"])
    abs_d, rel_d = loss_differences(one["losses"], both["losses"])
    assert rel_d < 1e-5, (one["losses"], both["losses"])
    assert one["losses"][-1] < one["losses"][0]  # it trains
    # control: another global batch gives another curve, far outside the tolerance
    half = combine_train_ranks(read_ranks(tmp_path / "half", 1), 2)
    assert loss_differences(one["losses"], half["losses"])[1] > 1e-3

    scaling, curve = train_tables([one, both], rtol=1e-4)
    assert "| 2 | ddp | cpu | float32 |" in scaling and scaling.count("| yes |") == 2
    assert curve.count("\n") == STEPS + 1


def test_global_batch_arithmetic():
    assert grad_accum_for(8, 1, 1) == 8 and grad_accum_for(8, 1, 4) == 2
    assert grad_accum_for(32, 2, 4) == 4
    with pytest.raises(BenchmarkError, match="not a multiple"):
        grad_accum_for(8, 1, 3)
    with pytest.raises(BenchmarkError, match="not a multiple"):
        StudyOptions(device="cpu", ranks=[1, 2, 4], global_batch=4, micro_batch=2)
    with pytest.raises(BenchmarkError, match="trained needs the SFT part"):
        StudyOptions(device="cpu", ranks=[1], train=False)
    with pytest.raises(BenchmarkError, match="needs GPUs"):
        StudyOptions(device="cpu", strategy="fsdp")
    opts = StudyOptions(device="cpu", ranks=[2, 1, 2], global_batch=4)
    assert opts.ranks == [1, 2] and opts.loss_rtol == 1e-4


def test_combine_and_failed_rows():
    rank = {"world_size": 2, "preset": "tiny", "strategy": "ddp", "device": "cpu", "threads": 1,
            "dtype": "float32", "params_m": 0.4, "trainable_m": 0.2, "micro_batch": 1,
            "grad_accum": 2, "warmup": 1, "step_s": [9.0, 1.0, 3.0], "peak_rss_gib": 0.5}
    row = combine_train_ranks([{**rank, "losses": [2.0, 1.0, 0.5]},
                               {**rank, "losses": [4.0, 3.0, 1.5], "peak_rss_gib": 0.7}], 4)
    assert row["losses"] == [3.0, 2.0, 1.0]  # mean over ranks per step
    assert row["step_s"] == 2.0 and row["samples_per_s"] == 4 * 2 / 4.0  # warm-up step dropped
    assert row["peak_gib"] == [0.5, 0.7]
    failed = {"ranks": 4, "failed": "out of GPU memory", "command": "torchrun ..."}
    scaling, curve = train_tables([failed, row], rtol=1e-4)
    assert "out of GPU memory" in scaling and "speed-up vs 2" in scaling
    assert "loss, 2 ranks" in curve and "loss, 4" not in curve


def test_slurm_train_script_two_ranks(tiny_set, tmp_path):
    """scripts/slurm_train.sbatch with srun/scontrol stand-ins: torchrun + c10d, 2 gloo ranks."""
    out = tmp_path / "sft"
    proc = subprocess.run(
        ["bash", "scripts/slurm_train.sbatch", "--config", "config/train_tiny.yaml",
         "--data", str(tiny_set.root), "--output-dir", str(out), "--max-steps", "2",
         "--resume", "none"],
        cwd=REPO, env={**fake_slurm(tmp_path), "OMP_NUM_THREADS": "1"}, capture_output=True,
        text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "1 node(s) x 2 GPU(s)" in proc.stdout
    # one RNG state per rank in the checkpoint: two processes trained
    assert sorted(p.name for p in (out / "checkpoint-2").glob("rng_state_*.pth")) == [
        "rng_state_0.pth", "rng_state_1.pth"]
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2
    assert (out / "model.safetensors").exists()
