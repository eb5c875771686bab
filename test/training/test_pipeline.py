"""End to end on the embedded simulator: generate, collect, train, load, evaluate, DAgger."""

import json

import numpy as np
import pytest

from janus_core.factory import build_policy
from janus_core.interface import Observation
from sim_bridge.evaluate import EvalConfig, evaluate
from sim_bridge.generate import main as generate_main
from training import collect, dagger, sft
from training.annotations import load_annotations


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    root = tmp_path_factory.mktemp("episodes")
    assert generate_main(["--out", str(root), "--splits", "train:2", "--seed", "3",
                          "--min-geodesic", "3", "--max-geodesic", "5"]) == 0
    return root / "train" / "train.json.gz"


def test_collect_train_evaluate_dagger(episodes, tmp_path):
    data = tmp_path / "collect"
    assert collect.main(["--config", "config/collect_tiny.yaml", "--split", str(episodes),
                         "--output-dir", str(data), "--no-progress"]) == 0
    aset = load_annotations(data)
    assert len(aset) == 2 and all(t.labels()[-1] == 0 for t in aset.trajectories)
    assert all(t.extra["distance_to_goal"] < 0.5 for t in aset.trajectories)

    model_dir = tmp_path / "model"
    assert sft.main(["--config", "config/train_tiny.yaml", "--data", str(data),
                     "--output-dir", str(model_dir), "--max-steps", "6"]) == 0
    state = json.loads((model_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 6

    policy = build_policy(str(model_dir), device="cpu", dtype="float32")
    policy.reset("walk to the kitchen")
    step = policy.act(Observation(rgb=np.zeros((84, 112, 3), np.uint8)))
    assert step.action in range(4)
    policy.close()

    summary = evaluate(EvalConfig(policy=str(model_dir), split=str(episodes), width=112,
                                  height=84, max_steps=15, output_dir=str(tmp_path / "eval"),
                                  progress=False))
    assert summary["complete"] and summary["finished"] == 2

    out = tmp_path / "dagger"
    assert dagger.main(["--config", "config/dagger_tiny.yaml", "--policy", str(model_dir),
                        "--split", str(episodes), "--base-data", str(data), "--output-dir",
                        str(out), "--no-progress"]) == 0
    record = json.loads((out / "dagger_state.json").read_text())["rounds"]["1"]
    assert record["collected"] and record["trained"]
    assert record["collect_stats"]["episodes"] == 2
    assert record["train_data"][0] == str(data)
    # the random tiny model fails, the expert brings it home: the filter decides what is kept
    kept = load_annotations(out / "round_1" / "data").trajectories
    assert len(kept) == record["collect_stats"]["kept"]
    for t in kept:
        assert t.extra["model_failed"] or t.extra["pl"] < 0.85
        assert t.extra["distance_to_goal"] < 0.5
    round_model = build_policy(str(out / "round_1" / "model"), device="cpu", dtype="float32")
    round_model.close()
