"""The small-model recipe end to end at CPU scale, and its trainer's pieces."""

import json
import math
import tarfile

import numpy as np
import pytest
import torch

from janus_core.actions import Action
from janus_core.config import load_config
from janus_core.model import build_model
from janus_core.processor import JanusProcessor
from janus_core.tokenizer import build_tokenizer
from training.recipe import (
    RecipeError,
    load_recipe_config,
    main,
    run_eval,
    run_train,
    scene_seed,
    variant_config,
)
from training.traj_sft import FrameBank, ModelTrainer, SFTSettings, train_models
from training.trajectories import StoreError, StoreWriter, TrajectoryStore

# ---- the trainer on synthetic trajectories (no simulator) ------------------------------------


def _store(tmp_path, n=3, T=7, h=84, w=112):
    rng = np.random.default_rng(0)
    writer = StoreWriter(tmp_path / "store", "expert", 0, h, w)
    for k in range(n):
        # one colour per trajectory, so the label is predictable from the image
        frames = [np.full((h, w, 3), 60 * k + 20, np.uint8) + rng.integers(0, 5, (h, w, 3),
                  dtype=np.uint8) for _ in range(T)]
        labels = [1 + (k % 3) if k % 3 else 1] * (T - 1) + [0]
        writer.add(f"traj{k}", f"walk to room {k} and stop", frames, labels)
    return TrajectoryStore(tmp_path / "store")


def _tiny_variant(variant="full"):
    cfg = load_recipe_config("config/recipe_tiny.yaml")
    return variant_config(cfg, variant)


def test_store_round_trip_and_errors(tmp_path):
    store = _store(tmp_path)
    assert len(store) == 3 and store.num_frames == 21
    rec = store.records[1]
    assert rec.labels[-1] == int(Action.STOP) and store.frames(rec).shape == (7, 84, 112, 3)
    assert int(store.frames(rec)[0, 0, 0, 0]) >= 80
    with pytest.raises(StoreError, match="labels"):
        StoreWriter(tmp_path / "store", "expert", 0, 84, 112).add(
            "bad", "x", [np.zeros((84, 112, 3), np.uint8)], [1, 0])
    with pytest.raises(StoreError, match="cannot add"):
        StoreWriter(tmp_path / "store", "other", 0, 10, 10)


def test_sft_loss_goes_down_for_every_variant(tmp_path):
    store = _store(tmp_path, n=3, T=5)
    bank = FrameBank(store, store.records, torch.device("cpu"))
    settings = SFTSettings(learning_rate=5e-3, warmup_steps=2, trajectories_per_step=3,
                           samples_per_trajectory=5, steps=10, log_every=1, vggt_chunk=4)
    trainers = []
    for variant in ("full", "novggt", "nohistory"):
        cfg = _tiny_variant(variant)
        torch.manual_seed(0)
        model = build_model(cfg, device="cpu", dtype="float32")
        trainers.append(ModelTrainer(variant, model, JanusProcessor(cfg, build_tokenizer(cfg)),
                                     settings))
    assert trainers[1].model.vggt is None and trainers[2].cfg.memory.num_history == 0
    pools = {t.name: [0, 1, 2] for t in trainers}
    out = train_models(trainers, pools, bank, settings)
    assert out["steps"] == 10
    for t in trainers:
        losses = [e["loss"] for e in out["log"][t.name]]
        first, last = np.mean(losses[:2]), np.mean(losses[-2:])
        assert math.isfinite(last) and last < 0.65 * first, (t.name, losses)
        # every part is trained, VGGT included
        assert all(p.requires_grad for p in t.model.parameters())


def test_time_budget_fits_the_number_of_steps(tmp_path):
    store = _store(tmp_path, n=2, T=4)
    bank = FrameBank(store, store.records, torch.device("cpu"))
    cfg = _tiny_variant("novggt")
    settings = SFTSettings(time_budget_s=2.0, timing_steps=2, trajectories_per_step=1,
                           samples_per_trajectory=4, warmup_steps=1, log_every=1000)
    model = build_model(cfg, device="cpu", dtype="float32")
    trainer = ModelTrainer("novggt", model, JanusProcessor(cfg, build_tokenizer(cfg)), settings)
    out = train_models([trainer], {"novggt": [0, 1]}, bank, settings)
    assert out["steps"] == trainer.total_steps >= 3
    assert out["seconds"] < 30
    assert trainer.lr_at(trainer.total_steps - 1) < 0.2 * settings.learning_rate


def test_stop_suffix_labels_the_final_approach():
    from training.workers import stop_suffix

    labels = [2, 1, 1, 1, 1, 3, 1, 0]
    dist = [4.0, 0.9, 3.0, 2.0, 1.2, 0.8, 0.6, 0.2]  # passes close to the goal early, too
    assert stop_suffix(labels, dist, 1.0) == [2, 1, 1, 1, 1, 0, 0, 0]
    assert stop_suffix(labels, dist, 0.0) == labels


def test_tokenizer_extra_corpus_makes_instruction_words_whole():
    cfg = load_config("small")
    text = "Walk past the teal armchair and stop next to the washing machine in the bathroom."
    plain = build_tokenizer(cfg)
    tuned = build_tokenizer(cfg, extra_corpus=[text] * 20)
    # one token per word (with its leading space) and one for the full stop
    assert len(tuned(text)["input_ids"]) == len(text.split()) + 1 < len(plain(text)["input_ids"])
    assert tuned.convert_tokens_to_ids("<|image_pad|>") == cfg.qwen.image_token_id


def test_small_preset_is_the_janusvln_architecture_at_a_small_size():
    cfg = load_config("small")
    model = build_model(cfg, device="meta", dtype="bfloat16", empty=True)
    n = sum(p.numel() for p in model.parameters())
    assert 6e6 < n < 8e6 and 2 * n < 25e6  # bf16 checkpoint under 25 MB
    assert model.vggt is not None and model.merger is not None and cfg.use_vggt
    assert (cfg.memory.spatial_initial, cfg.memory.spatial_recent) == (8, 48)
    geo = model.geometry
    assert (geo.vggt_width, geo.vggt_height, geo.tokens_per_image) == (224, 168, 48)
    assert geo.vggt_tokens_per_frame(cfg.vggt.num_register_tokens) == 197


def test_recipe_config_errors_name_the_field(tmp_path):
    with pytest.raises(RecipeError, match="models"):
        load_recipe_config(None, models=["full", "big"])
    with pytest.raises(RecipeError, match="train_seed"):
        load_recipe_config(None, train_seed=0, val_seed=0)
    with pytest.raises(RecipeError, match="unknown keys"):
        load_recipe_config(None, sft_steps=3)
    assert main(["--config", "config/recipe_tiny.yaml", "--stage", "eval", "--work-dir",
                 str(tmp_path / "w"), "--out-dir", str(tmp_path / "o")]) == 2


# ---- the whole recipe, tiny ------------------------------------------------------------------


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    cfg = load_recipe_config(
        "config/recipe_tiny.yaml", train_episodes=4, val_episodes=2, dagger_episodes=2,
        dagger_batch=2, dagger_max_steps=12, eval_max_steps=40,
        eval_baselines=["random", "expert"],
        sft={"learning_rate": 3e-3, "warmup_steps": 1, "trajectories_per_step": 2,
             "samples_per_trajectory": 4, "steps": 2, "log_every": 1, "vggt_chunk": 4},
        sft2={"learning_rate": 1e-3, "warmup_steps": 1, "trajectories_per_step": 2,
              "samples_per_trajectory": 4, "steps": 1, "log_every": 1, "vggt_chunk": 4})
    work, out = root / "work", root / "out"
    train = run_train(cfg, work, out)
    checkpoints = {v: c["tar"] for v, c in train["checkpoints"].items()}
    evaluation = run_eval(cfg, checkpoints, work, out)
    return cfg, work, out, train, evaluation


def test_recipe_trains_saves_and_evaluates(recipe_run):
    from janus_core.factory import build_policy

    cfg, work, out, train, evaluation = recipe_run
    assert json.loads((out / "recipe_train.json").read_text())["models"] == {
        "full": "janusvln-tiny", "novggt": "janusvln-tiny-novggt",
        "nohistory": "janusvln-tiny-nohistory"}
    assert train["expert"]["kept"] >= 3 and train["train_split"]["episodes"] == 4
    for variant in ("full", "novggt", "nohistory"):
        assert train["sft"]["log"][variant] and train["sft2"]["log"][variant]
        tag = f"dagger-{variant}-r1"
        assert train["dagger"][tag]["episodes"] == 2
        assert train["sft2"]["trajectories"][variant] > train["expert"]["kept"]
        tar = out / f"{train['models'][variant]}.tar"
        with tarfile.open(tar) as fh:
            assert any(n.endswith("model.safetensors") for n in fh.getnames())
    policy = build_policy(train["checkpoints"]["novggt"]["dir"], device="cpu")
    assert policy.model.vggt is None and policy.model.dtype == torch.float32
    policy = build_policy(train["checkpoints"]["nohistory"]["dir"], device="cpu")
    assert policy.cfg.memory.num_history == 0
    # DAgger data: resized frames, one label per frame
    store = TrajectoryStore(work / "store")
    dagger = [r for r in store.records if r.source == "dagger"]
    assert dagger and all(len(r.labels) == r.length for r in dagger)
    assert store.frames(dagger[0]).shape[1:] == (84, 112, 3)


def test_recipe_eval_table_and_unseen_apartments(recipe_run):
    cfg, work, out, _, evaluation = recipe_run
    runs = evaluation["runs"]
    assert list(runs) == ["random", "expert", "full", "novggt", "nohistory"]
    assert all(r["complete"] and r["episodes"] == 2 for r in runs.values())
    assert runs["expert"]["metrics"]["sr"] == 1.0
    table = (out / "eval_metrics.md").read_text()
    for name in runs:
        assert f"| {name} |" in table
    scenes = evaluation["scenes"]
    assert scenes["val_seed_range"][1] < scenes["train_seed_range"][0]
    with tarfile.open(out / "eval_runs.tar") as fh:
        assert "full/episodes.jsonl" in fh.getnames()
    # the train split's apartments come from generator seeds train_seed.., val from val_seed
    from sim_bridge.episodes import load_split

    train = {scene_seed(e.scene_id) for e in load_split(work / "data/train/train.json.gz")}
    assert min(train) >= cfg.train_seed * 100_000


def test_a_failure_after_sft_still_saves_the_models(recipe_run, tmp_path, monkeypatch):
    """DAgger raising (after minutes of SFT on a GPU) keeps the SFT models, then re-raises."""
    import shutil

    from training import recipe

    cfg, work, _, _, _ = recipe_run
    for part in ("data", "store"):  # reuse the episodes and expert data
        shutil.copytree(work / part, tmp_path / "work" / part)

    def broken(*args, **kwargs):
        raise RuntimeError("simulator lost")

    monkeypatch.setattr(recipe, "dagger_round", broken)
    one = load_recipe_config("config/recipe_tiny.yaml", **{
        **{k: getattr(cfg, k) for k in ("train_episodes", "sft", "sft2")}, "models": ["novggt"]})
    with pytest.raises(RuntimeError, match="simulator lost"):
        run_train(one, tmp_path / "work", tmp_path / "out")
    record = json.loads((tmp_path / "out" / "recipe_train_novggt.json").read_text())
    assert record["failed"] == "dagger: RuntimeError: simulator lost"
    assert record["sft"]["log"]["novggt"] and "sft2" not in record
    with tarfile.open(tmp_path / "out" / "janusvln-tiny-novggt.tar") as fh:
        assert "janusvln-tiny-novggt/model.safetensors" in fh.getnames()


class _ClockAfter:
    """A stand-in for the ``time`` module whose monotonic clock jumps after ``calls`` reads."""

    def __init__(self, calls):
        self.calls = calls

    def monotonic(self):
        self.calls -= 1
        return 0.0 if self.calls >= 0 else 1.0e12


@pytest.mark.parametrize("reads, steps", [(3, 1), (2, 0)])
def test_dagger_deadline_ends_a_wave_mid_way(recipe_run, tmp_path, monkeypatch, reads, steps):
    """A deadline passing inside a lockstep wave ends its episodes at once (frames == labels).

    With ``steps == 0`` the deadline passes between the wave's reset and its first action (seen
    on a GPU run): the episodes have no labelled frame and are not kept.
    """
    from sim_bridge.episodes import load_split
    from training import recipe
    from training.workers import WorkerPool, WorkerSettings

    cfg, work, _, _, _ = recipe_run
    c = variant_config(cfg, "full")
    split = work / "data" / "train" / "train.json.gz"
    ids = [str(ep.episode_id) for ep in load_split(split)][:2]
    torch.manual_seed(0)
    model = build_model(c, device="cpu", dtype=torch.float32)
    processor = JanusProcessor(c, build_tokenizer(c))
    settings = WorkerSettings(sim=recipe.sim_settings(cfg, c), geometry=recipe._geometry(c),
                              store_dir=str(tmp_path / "store"))
    # reads: t0, the wave's check, the first step's check -> one step; then the deadline is past
    monkeypatch.setattr(recipe, "time", _ClockAfter(reads))
    with WorkerPool(1, settings) as pool:
        stats = recipe.dagger_round(pool, model, processor, cfg, split, ids, "dagger-cut", 1.0)
    assert stats["episodes"] == 2 and stats["steps"] == 2 * steps
    if steps == 0:
        assert stats["kept"] == 0
        assert not (tmp_path / "store" / "store.json").exists() or not len(
            TrajectoryStore(tmp_path / "store"))
    else:
        store = TrajectoryStore(tmp_path / "store")
        assert all(r.length == len(r.labels) <= 1 for r in store.records)


def test_dagger_episode_whose_simulator_fails_is_skipped(recipe_run, tmp_path):
    """A scene the simulator cannot load ends that episode (logged, unkept), not the round."""
    from sim_bridge.episodes import find_gt_path, gt_path_for, load_split, save_split
    from training import recipe
    from training.workers import WorkerPool, WorkerSettings

    cfg, work, _, _, _ = recipe_run
    c = variant_config(cfg, "novggt")
    src = work / "data" / "train" / "train.json.gz"
    episodes = load_split(src, gt_path=find_gt_path(src))[:2]
    episodes[0].scene_id = "embedded:no_such_apartment"
    split = tmp_path / "broken" / "train.json.gz"
    split.parent.mkdir()
    save_split(split, episodes, gt_path=gt_path_for(split))
    torch.manual_seed(0)
    model = build_model(c, device="cpu", dtype=torch.float32)
    settings = WorkerSettings(sim=recipe.sim_settings(cfg, c), geometry=recipe._geometry(c),
                              store_dir=str(tmp_path / "store"))
    ids = [str(ep.episode_id) for ep in episodes]
    with WorkerPool(1, settings) as pool:
        stats = recipe.dagger_round(pool, model, JanusProcessor(c, build_tokenizer(c)), cfg,
                                    split, ids, "dagger-broken")
    assert stats["episodes"] == 2 and stats["steps"] >= 1  # the good episode ran
