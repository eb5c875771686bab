import json

import pytest
import torch
from transformers import TrainerCallback

from janus_core.checkpoint import load_model
from janus_core.processor import JanusProcessor
from janus_core.tokenizer import build_tokenizer
from training.dataset import NavSFTDataset, SFTCollator
from training.sft import (
    TrainConfigError,
    build_trainer,
    load_train_config,
    main,
    parameter_role,
    run_sft,
    training_arguments,
)


class Interrupted(Exception):
    pass


class InterruptAfterSave(TrainerCallback):
    """Simulates a killed job: stop right after the checkpoint of step ``at`` is on disk."""

    def __init__(self, at):
        self.at = at

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            raise Interrupted


class FirstStep(TrainerCallback):
    def __init__(self):
        self.first = None

    def on_step_end(self, args, state, control, **kwargs):
        if self.first is None:
            self.first = state.global_step


def test_param_groups_follow_release(tiny_train_cfg):
    cfg = tiny_train_cfg(learning_rate=2e-5, merger_lr=1e-5)
    trainer = build_trainer(cfg)
    model = trainer.model
    opt = trainer.create_optimizer()
    by_id = {id(p): g for g in opt.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    for name, param in names.items():
        role = parameter_role(name)
        if name.startswith("vggt.") or (role == "vit"):
            assert not param.requires_grad and id(param) not in by_id, name
            continue
        group = by_id[id(param)]
        assert group["lr"] == (1e-5 if "merger" in name else 2e-5), name
        no_decay = name.endswith("bias") or "norm" in name or "ln_q" in name
        assert group["weight_decay"] == (0.0 if no_decay else 0.01), name
    assert any("qwen.model.visual.merger" in n for n in names if names[n].requires_grad)
    assert any(n.startswith("merger.") for n in names if names[n].requires_grad)


def fixed_batch_loss(model, tiny_set):
    cfg = model.cfg
    ds = NavSFTDataset([tiny_set], JanusProcessor(cfg, build_tokenizer(cfg)))
    batch = SFTCollator(cfg.qwen.pad_token_id)([ds[i] for i in (0, 6, 11, 14)])
    model.eval()
    with torch.no_grad():
        return float(model(**batch).loss)


def test_loss_goes_down_then_checkpoint_loads(tiny_train_cfg, tiny_set, tmp_path):
    cfg = tiny_train_cfg(max_steps=16, save_steps=100)
    trainer = build_trainer(cfg)
    before = fixed_batch_loss(trainer.model, tiny_set)
    trainer.train()
    trainer.save_model(cfg.output_dir)
    after = fixed_batch_loss(trainer.model, tiny_set)
    assert after < before - 0.5, (before, after)
    loaded = load_model(cfg.output_dir, device="cpu", dtype="float32")
    assert loaded.cfg.image.input_width == 112
    for (n1, p1), (n2, p2) in zip(trainer.model.state_dict().items(),
                                  loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architectures"] == ["Qwen2_5_VLForConditionalGenerationForJanusVLN"]
    assert config["lam"] == 0.2


def test_resume_continues_from_last_checkpoint(tiny_train_cfg, tmp_path):
    cfg = tiny_train_cfg(max_steps=6, save_steps=2, save_total_limit=None, logging_steps=1)
    with pytest.raises(Interrupted):
        run_sft(cfg, callbacks=[InterruptAfterSave(at=4)])
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    saved = load_model(out / "checkpoint-4", device="cpu", dtype="float32").state_dict()
    first = FirstStep()
    trainer = build_trainer(cfg, callbacks=[first])
    seen = {}

    class Grab(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            seen["weights"] = {k: v.clone() for k, v in model.state_dict().items()}
            seen["start_step"] = state.global_step

    trainer.add_callback(Grab())
    trainer.train(resume_from_checkpoint=str(out / "checkpoint-4"))
    assert first.first == 5 and trainer.state.global_step == 6
    assert all(torch.equal(saved[k], seen["weights"][k]) for k in saved)
    steps = [e["step"] for e in trainer.state.log_history if "loss" in e]
    assert steps == [1, 2, 3, 4, 5, 6]  # the first run's history, then steps 5 and 6


def test_resume_auto_via_run_sft(tiny_train_cfg, tmp_path):
    cfg = tiny_train_cfg(max_steps=4, save_steps=2)
    with pytest.raises(Interrupted):
        run_sft(cfg, callbacks=[InterruptAfterSave(at=2)])
    first = FirstStep()
    run_sft(cfg, callbacks=[first])
    assert first.first == 3
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert (tmp_path / "out" / "model.safetensors").exists()


def test_cli(tiny_set, tmp_path):
    out = tmp_path / "cli"
    assert main(["--config", "config/train_tiny.yaml", "--data", str(tiny_set.root),
                 "--output-dir", str(out), "--max-steps", "2", "--set", "save_steps=1000",
                 "--set", "per_device_train_batch_size=1"]) == 0
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: tiny\nlerning_rate: 1\n")
    with pytest.raises(TrainConfigError, match="lerning_rate"):
        load_train_config(bad)
    with pytest.raises(TrainConfigError, match="does not exist"):
        load_train_config(tmp_path / "missing.yaml")
    with pytest.raises(TrainConfigError, match="model_dtype"):
        load_train_config("config/train_tiny.yaml", model_dtype="int8")
    with pytest.raises(TrainConfigError, match="not both"):
        load_train_config("config/train_tiny.yaml", deepspeed="a.json", fsdp="b.yaml")
    with pytest.raises(TrainConfigError, match="no training data"):
        build_trainer(load_train_config("config/train_tiny.yaml", output_dir=str(tmp_path)))


@pytest.mark.parametrize("name", ["train_tiny.yaml", "train_small_gpu.yaml", "train_full.yaml"])
def test_shipped_configs_load(name):
    from training.sft import model_config

    cfg = load_train_config(f"config/{name}")
    assert cfg.train_vit is False and cfg.train_vggt is False
    janus = model_config(cfg)
    assert 2 * sum(janus.qwen.mrope_section) == janus.qwen.head_dim
    assert janus.memory.num_history == 8
    if name == "train_full.yaml":
        assert (cfg.learning_rate, cfg.merger_lr, cfg.weight_decay, cfg.warmup_ratio) == \
            (2e-5, 1e-5, 0.01, 0.03)
        assert cfg.per_device_train_batch_size == 1 and cfg.gradient_accumulation_steps == 8
        assert cfg.bf16 and cfg.gradient_checkpointing and cfg.lr_scheduler_type == "cosine"
        assert cfg.deepspeed.endswith("deepspeed_zero3.json")


def test_last_complete_checkpoint_skips_torn_ones(tmp_path):
    from training.sft import last_complete_checkpoint

    assert last_complete_checkpoint(tmp_path / "nothing") is None
    for step, files in ((2, {"config.json": "{}", "trainer_state.json": "{}"}),
                        (4, {"config.json": "{}", "trainer_state.json": "{\"glob"}),
                        (10, {"config.json": "{}"})):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        for name, text in files.items():
            (d / name).write_text(text)
    (tmp_path / "checkpoint-x").mkdir()
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")


def test_gradient_checkpointing_gives_the_same_gradients(tiny_set):
    from train_helpers import tiny_model_config

    from janus_core.model import build_model

    cfg = tiny_model_config()
    ds = NavSFTDataset([tiny_set], JanusProcessor(cfg, build_tokenizer(cfg)))
    batch = SFTCollator(cfg.qwen.pad_token_id)([ds[i] for i in (0, 11)])
    model = build_model(cfg, device="cpu", dtype="float32")
    model.set_trainable()
    grads = []
    for checkpointing in (False, True):
        if checkpointing:
            model.gradient_checkpointing_enable()
        model.train()
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    assert not any(n.startswith("vggt.") for n in grads[0])
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name


def test_numbers_and_set_errors(tmp_path, capsys):
    """``2e-5`` in YAML and ``--set max_grad_norm=5e-1`` are numbers; a bad --set names the flag."""
    config = tmp_path / "lr.yaml"
    config.write_text("model: tiny\nlearning_rate: 2e-5\nmerger_lr: 1e-5\nbf16: false\n"
                      "use_cpu: true\n")
    cfg = load_train_config(config, max_grad_norm=0.5)
    assert (cfg.learning_rate, cfg.merger_lr) == (2e-5, 1e-5)
    assert training_arguments(cfg).max_grad_norm == 0.5
    for item, says in (("learning_rat=1e-5", "--set learning_rat=1e-5: unknown setting"),
                       ("max_grad_norm=big", "--set max_grad_norm=big: max_grad_norm: expected "
                                             "a number, got 'big'")):
        assert main(["--config", str(config), "--set", item]) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith(f"janus-vln train: error: {says}"), line


def test_cli_reports_bad_annotations(tmp_path, capsys):
    import json as _json

    bad = tmp_path / "bad"
    (bad / "images/t/rgb").mkdir(parents=True)
    (bad / "annotations.json").write_text(_json.dumps(
        [{"id": 0, "video": "images/t", "instructions": ["go"], "actions": [-1, 9]}]))
    assert main(["--data", str(bad), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "actions[1]" in err and "unknown action 9" in err
