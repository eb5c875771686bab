from benchmarks.train_throughput import pick_strategy, run_config


def test_benchmark_code_path_runs_tiny_on_cpu(tmp_path):
    row = run_config("tiny", steps=2, warmup=1, num_traj=2, traj_len=10, work_dir=tmp_path)
    assert row["config"] == "tiny" and row["timed_steps"] == 2
    assert row["samples_per_s"] > 0 and row["samples_per_step"] == 2
    assert 1 < row["images_per_sample"] <= 9


def test_strategy_choice():
    assert pick_strategy("fsdp", 1) == "fsdp"
    assert pick_strategy("auto", 1) in ("plain", "zero3_offload")
    assert pick_strategy("auto", 8) in ("fsdp", "zero3")
