"""JanusConfig: presets, YAML round trip, validation messages, device/dtype resolution."""

import dataclasses
import re

import pytest
import torch

from janus_core.config import (
    ConfigError,
    ImageConfig,
    JanusConfig,
    MemoryConfig,
    QwenVLConfig,
    VGGTConfig,
    load_config,
    resolve_device,
    resolve_dtype,
)


def test_full_preset_is_the_release_model():
    cfg = load_config("full")
    assert cfg == JanusConfig()
    q = cfg.qwen
    assert (q.hidden_size, q.num_hidden_layers, q.num_attention_heads, q.num_key_value_heads) == (
        3584, 28, 28, 4)
    assert q.head_dim == 128 and q.mrope_section == (16, 24, 24)
    assert (q.image_token_id, q.vision_start_token_id, q.eos_token_id) == (151655, 151652, 151645)
    assert cfg.vggt.feature_dim == 2048 and cfg.vggt.feature_layer == -2
    assert (cfg.memory.spatial_initial, cfg.memory.spatial_recent, cfg.memory.num_history) == (
        8, 48, 8)
    assert (cfg.merger_hidden_dim, cfg.lam, cfg.max_new_tokens, cfg.max_steps) == (
        4096, 0.2, 24, 400)
    image = cfg.image
    assert (image.input_width, image.input_height, image.target_width) == (640, 480, 644)


def test_tiny_preset_uses_qwens_special_token_layout():
    q = load_config("tiny").qwen
    base = q.bos_token_id
    # offsets of <|im_end|>, <|vision_start|>, <|vision_end|>, <|image_pad|>, <|video_pad|>
    # from <|endoftext|>, as in Qwen (151643 + 2, 9, 10, 12, 13)
    assert (q.eos_token_id - base, q.vision_start_token_id - base, q.vision_end_token_id - base,
            q.image_token_id - base, q.video_token_id - base) == (2, 9, 10, 12, 13)
    assert q.pad_token_id == base and q.video_token_id < q.vocab_size


@pytest.mark.parametrize("name", ["full", "tiny"])
def test_yaml_round_trip(tmp_path, name):
    cfg = load_config(name).replace(lam=0.1, mode="reference", prompt_style="train")
    cfg.to_yaml(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert JanusConfig.from_dict(cfg.to_dict()) == cfg


def _qwen(**changes):
    return dataclasses.replace(QwenVLConfig(), **changes)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"prompt_style": "chat"}, "prompt_style"),
        ({"mode": "fast"}, "mode"),
        ({"reference_frame": "middle"}, "reference_frame"),
        ({"vggt": VGGTConfig(feature_layer=24)}, "vggt.feature_layer"),
        ({"vggt": VGGTConfig(embed_dim=1000)}, "vggt.embed_dim"),
        ({"memory": MemoryConfig(spatial_recent=-1)}, "memory.spatial_recent"),
        ({"memory": MemoryConfig(num_history=-1)}, "memory.num_history"),
        ({"qwen": _qwen(mrope_section=(16, 24, 20))}, "qwen.mrope_section"),
        ({"qwen": _qwen(num_attention_heads=27)}, "qwen.hidden_size"),
        ({"qwen": _qwen(num_key_value_heads=3)}, "qwen.num_attention_heads"),
        ({"qwen": _qwen(vision_patch_size=16)}, "qwen.vision_patch_size"),
        ({"qwen": _qwen(vision_fullatt_block_indexes=(7, 32))}, "vision_fullatt_block_indexes"),
        ({"qwen": _qwen(image_token_id=200000)}, "image_token_id"),
        ({"image": ImageConfig(target_width=640)}, "image.target_width"),
        ({"image": ImageConfig(input_width=0)}, "image.input_width"),
        ({"merger_hidden_dim": 0}, "merger_hidden_dim"),
        ({"actions": ("STOP", "FORWARD")}, "actions"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_steps": -1}, "max_steps"),
        ({"dtype": "float64"}, "dtype"),
        ({"device": "tpu"}, "device"),
        ({"attn_implementation": "flash"}, "attn_implementation"),
    ],
)
def test_invalid_values_name_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        JanusConfig(**changes)


def test_unknown_yaml_keys_and_presets_are_named(tmp_path):
    (tmp_path / "bad.yaml").write_text("lam: 0.2\nqwen:\n  hiden_size: 8\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*qwen\.hiden_size"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="unknown preset 'huge'.*'full'.*'tiny'"):
        load_config("huge")
    (tmp_path / "broken.yaml").write_text("lam: [0.2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")


def test_device_and_dtype_resolution():
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    assert resolve_dtype(torch.float16, cpu) == torch.float16
    with pytest.raises(ConfigError, match="dtype"):
        resolve_dtype("int8", cpu)
    assert resolve_device("cpu") == cpu
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
    else:
        assert resolve_device("auto") == cpu
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_yaml_dataclass_loading_errors_name_the_file(tmp_path):
    import dataclasses

    from janus_core.config import ConfigError, load_dataclass, read_yaml_mapping

    @dataclasses.dataclass
    class Settings:
        steps: int = 1

    with pytest.raises(ConfigError, match="thing config .*nope.yaml does not exist"):
        read_yaml_mapping(tmp_path / "nope.yaml", what="thing config")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        read_yaml_mapping(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: expected a mapping"):
        read_yaml_mapping(bad)
    good = tmp_path / "good.yaml"
    good.write_text("steps: 3\n")
    assert load_dataclass(Settings, good, {"steps": None}) == Settings(3)
    assert load_dataclass(Settings, None, {"steps": 5}) == Settings(5)
    with pytest.raises(ConfigError, match="unknown keys"):
        load_dataclass(Settings, None, {"stpes": 5})


def test_numbers_in_yaml_and_set_are_numbers(tmp_path):
    """``2e-5`` is a number (PyYAML alone reads it as text), ``--set`` errors name the flag."""
    import dataclasses

    from janus_core.config import ConfigError, load_dataclass, load_yaml, parse_sets

    @dataclasses.dataclass
    class Settings:
        learning_rate: float = 1.0
        steps: int = 1
        limit: int | None = None
        bf16: bool = True
        name: str = "run"
        extra: dict = dataclasses.field(default_factory=dict)

    assert load_yaml("a: 2e-5\nb: -5E-1\nc: 1e3\nd: 1.5\ne: e5\nf: 1e\ng: 7") == {
        "a": 2e-5, "b": -0.5, "c": 1000.0, "d": 1.5, "e": "e5", "f": "1e", "g": 7}
    config = tmp_path / "c.yaml"
    config.write_text("learning_rate: 2e-5\nsteps: 1e3\n")
    loaded = load_dataclass(Settings, config, {})
    assert loaded.learning_rate == 2e-5 and loaded.steps == 1000 and type(loaded.steps) is int
    config.write_text("learning_rate: fast\n")
    with pytest.raises(ConfigError, match="c.yaml: learning_rate: expected a number, got 'fast'"):
        load_dataclass(Settings, config, {})
    sets = parse_sets(Settings, ["learning_rate=5e-1", "steps=10", "limit=null", "name=0001",
                                 "extra.depth=2", "bf16=false"], nested=("extra",))
    assert sets == {"learning_rate": 0.5, "steps": 10, "limit": None, "name": "0001",
                    "extra": {"depth": 2}, "bf16": False}
    for item, says in (("learning_rat=1", "--set learning_rat=1: unknown setting"),
                       ("steps=1.5", "--set steps=1.5: steps: expected a whole number"),
                       ("bf16=2", "--set bf16=2: bf16: expected true or false"),
                       ("steps", "--set 'steps': expected KEY=VALUE")):
        with pytest.raises(ConfigError, match=re.escape(says)):
            parse_sets(Settings, [item])


def test_reading_a_config_does_not_import_torch():
    """The CLIs read their configs first; a mistake must not wait for torch to load."""
    import subprocess
    import sys

    code = ("import sys, janus_core.config, sim_bridge.evaluate; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
