"""A training state saved mid-run continues exactly; bad states fail with their reason."""

import json

import numpy as np
import pytest
import torch

from janus_core.model import build_model
from janus_core.processor import JanusProcessor
from janus_core.tokenizer import build_tokenizer
from training.recipe import load_recipe_config, variant_config
from training.train_state import StateError, load_state, save_state
from training.traj_sft import FrameBank, ModelTrainer, SFTSettings
from training.trajectories import StoreWriter, TrajectoryStore


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    rng = np.random.default_rng(0)
    writer = StoreWriter(tmp_path_factory.mktemp("store"), "expert", 0, 84, 112)
    for k in range(4):
        n = 5 + k
        frames = [rng.integers(0, 255, (84, 112, 3), dtype=np.uint8) for _ in range(n)]
        labels = [int(a) for a in rng.integers(1, 4, n - 1)] + [0]
        writer.add(f"t{k}", "walk to the kitchen and stop", frames, labels)
    store = TrajectoryStore(writer.root)
    return FrameBank(store, store.records, torch.device("cpu"))


def _trainer(seed=0):
    cfg = variant_config(load_recipe_config("config/recipe_tiny.yaml"), "full")
    torch.manual_seed(seed)
    model = build_model(cfg, device="cpu", dtype="float32")
    settings = SFTSettings(learning_rate=3e-3, warmup_steps=2, trajectories_per_step=2,
                           samples_per_trajectory=4, aux_weight=0.5, steps=6, vggt_chunk=4)
    return ModelTrainer("full", model, JanusProcessor(cfg, build_tokenizer(cfg)), settings)


def _run(trainer, bank, rng, steps):
    for _ in range(steps):
        chosen = [int(i) for i in rng.choice(len(bank), size=2, replace=False)]
        trainer.train_step(bank, chosen, rng)


def test_a_continued_run_equals_an_uninterrupted_one(bank, tmp_path, one_thread):
    straight = _trainer()
    _run(straight, bank, np.random.default_rng(7), 4)

    first = _trainer()
    rng = np.random.default_rng(7)
    _run(first, bank, rng, 2)
    save_state(first, rng, tmp_path / "state", extra={"note": "half way"})
    del first
    resumed = _trainer(seed=123)  # other initial weights: everything must come from the state
    rng2, extra = load_state(resumed, tmp_path / "state")
    assert extra == {"note": "half way"} and resumed.step_count == 2
    _run(resumed, bank, rng2, 2)

    assert resumed.step_count == straight.step_count == 4
    for (name, a), b in zip(straight.model.state_dict().items(),
                            resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(straight.aux_head.weight, resumed.aux_head.weight)


def test_bf16_state_is_smaller_and_close(bank, tmp_path, one_thread):
    trainer = _trainer()
    rng = np.random.default_rng(0)
    _run(trainer, bank, rng, 1)
    full = save_state(trainer, rng, tmp_path / "f32")
    half = save_state(trainer, rng, tmp_path / "bf16", weight_dtype=torch.bfloat16,
                      moment_dtype=torch.bfloat16)
    size = {p: sum(f.stat().st_size for f in p.glob("*.safetensors")) for p in (full, half)}
    assert size[half] < 0.55 * size[full]
    other = _trainer(seed=5)
    load_state(other, half)
    for (name, a), b in zip(trainer.model.state_dict().items(),
                            other.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3, msg=name)


def test_shards_stay_under_the_limit(bank, tmp_path, one_thread):
    trainer = _trainer()
    path = save_state(trainer, np.random.default_rng(0), tmp_path / "s", shard_bytes=400_000)
    shards = sorted(path.glob("state-*.safetensors"))
    assert len(shards) > 2
    assert all(f.stat().st_size < 400_000 + 100_000 for f in shards)
    load_state(_trainer(), path)


def test_bad_states_name_the_problem(bank, tmp_path, one_thread):
    trainer = _trainer()
    with pytest.raises(StateError, match="no training state"):
        load_state(trainer, tmp_path / "nothing")
    path = save_state(trainer, np.random.default_rng(0), tmp_path / "s")
    meta = json.loads((path / "state.json").read_text())
    shard = path / meta["files"][0]
    shard.rename(path / "moved.safetensors")
    with pytest.raises(StateError, match="is missing"):
        load_state(trainer, path)
    shard.parent.joinpath("moved.safetensors").rename(shard)
    meta["config"]["lam"] = 0.5
    (path / "state.json").write_text(json.dumps(meta))
    with pytest.raises(StateError, match="another model configuration"):
        load_state(trainer, path)
