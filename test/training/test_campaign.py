"""The campaign: two calls continue one schedule from the carried state, one curve row each."""

import json

from training.campaign import main
from training.train_state import read_meta

TINY = ["--config", "config/recipe_tiny.yaml", "--set", "heldout_episodes=3",
        "--set", "sr_episodes=2", "--set", "heldout_seed=7", "--set", "cnn_baseline_steps=20",
        "--set", "sft={learning_rate: 3.0e-3, warmup_steps: 2, trajectories_per_step: 2, "
        "samples_per_trajectory: 8, steps: 6, log_every: 2, vggt_chunk: 4, aux_weight: 0.5}"]


def test_two_calls_continue_one_schedule(tmp_path, one_thread):
    work = tmp_path / "work"
    # the first call stops at 3 steps (its horizon), the second goes on to the horizon of 6
    assert main(TINY + ["--work-dir", str(work), "--out-dir", str(tmp_path / "a"),
                        "--set", "sft={learning_rate: 3.0e-3, warmup_steps: 2, "
                        "trajectories_per_step: 2, samples_per_trajectory: 8, steps: 3, "
                        "log_every: 1, vggt_chunk: 4, aux_weight: 0.5}"]) == 0
    first = read_meta(tmp_path / "a" / "state")
    assert first["step"] == 3
    assert main(TINY + ["--work-dir", str(work), "--out-dir", str(tmp_path / "b"),
                        "--state", str(tmp_path / "a" / "state")]) == 0
    second = read_meta(tmp_path / "b" / "state")
    assert second["step"] == 6 and second["total_steps"] == 6
    rows = [json.loads(x) for x in (tmp_path / "b" / "state" / "curve.jsonl").read_text()
            .splitlines()]
    assert [(r["steps_from"], r["steps_to"]) for r in rows] == [(0, 3), (3, 6)]
    assert rows[1]["train_minutes_total"] >= rows[0]["train_minutes_total"]
    for r in rows:
        held = r["heldout"]
        assert set(held) == {"model", "previous_action", "majority"}
        assert held["model"]["steps"] == held["majority"]["steps"] > 0
        assert 0 <= held["model"]["early_stop_rate"] <= 1
        assert r["closed_loop"]["finished"] == 2
        assert "accuracy" in r["cnn_baseline"]
    # the exported checkpoint is the release layout the policy loads
    out = tmp_path / "ckpt"
    assert main(["export", "--config", "config/recipe_tiny.yaml", "--state",
                 str(tmp_path / "b" / "state"), "--out-dir", str(out)]) == 0
    assert (out / "model.safetensors").exists()
    kept = read_meta(out / "train_state")
    assert kept["weights"] == "checkpoint" and kept["step"] == 6
    assert (out / "train_state" / "curve.jsonl").exists()
    # a later session continues from the shipped checkpoint + the kept state
    assert main(TINY + ["--work-dir", str(work), "--out-dir", str(tmp_path / "c"),
                        "--state", str(out / "train_state"), "--set", "sft={learning_rate: "
                        "3.0e-3, warmup_steps: 2, trajectories_per_step: 2, "
                        "samples_per_trajectory: 8, steps: 8, log_every: 1, vggt_chunk: 4, "
                        "aux_weight: 0.5}", "--set", "sr_episodes=0"]) == 0
    assert read_meta(tmp_path / "c" / "state")["step"] == 8


def test_a_state_of_another_model_is_one_line(tmp_path, caplog):
    bad = tmp_path / "state"
    bad.mkdir()
    (bad / "state.json").write_text("{not json")
    assert main(["export", "--config", "config/recipe_tiny.yaml", "--state", str(bad),
                 "--out-dir", str(tmp_path / "o")]) == 2
    assert "not valid JSON" in caplog.text
