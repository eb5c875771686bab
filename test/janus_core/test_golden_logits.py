"""A tiny checkpoint in the release's layout gives the golden outputs under any supported versions.

The golden file was written under the pinned torch / transformers (``golden_logits.py``);
``scripts/test_compat.sh`` runs this test again on the newest transformers 5 and on the oldest
versions of setup.py's ranges. Both checkpoint key layouts must give the same outputs.
"""

import json
import shutil

import pytest
import torch
from golden_logits import CHECKPOINT, GOLDEN, compute
from safetensors import safe_open
from safetensors.torch import load_file, save_file

# float32 on the CPU; kernels differ between torch and transformers releases (SDPA, RMSNorm
# order), so only rounding-level differences are allowed
TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}


@pytest.fixture(scope="module")
def golden():
    with safe_open(str(GOLDEN), framework="pt") as f:
        produced_by = f.metadata()
    return load_file(str(GOLDEN)), produced_by


def test_the_checkpoint_is_in_the_release_layout():
    config = json.loads((CHECKPOINT / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl" and "text_config" not in config
    assert config["rope_scaling"]["type"] == "mrope" and "lam" in config
    with safe_open(str(CHECKPOINT / "model.safetensors"), framework="pt") as f:
        roots = {k.split(".")[0] for k in f.keys()}
        assert any(k.startswith("model.layers.") for k in f.keys())
    assert roots == {"model", "visual", "lm_head", "vggt", "merger"}


def test_release_checkpoint_gives_the_golden_outputs(golden):
    expected, produced_by = golden
    got = compute(CHECKPOINT)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], **TOLERANCE,
                                   msg=lambda m, n=name: f"{n} vs golden from {produced_by}: {m}")


def test_newer_key_prefixes_give_the_same_outputs(tmp_path, golden):
    expected, _ = golden
    folder = shutil.copytree(CHECKPOINT, tmp_path / "renamed")
    tensors = load_file(str(folder / "model.safetensors"))
    renamed = {}
    for key, tensor in tensors.items():  # the transformers >= 4.52 names
        if key.startswith("model."):
            key = "model.language_model." + key.removeprefix("model.")
        elif key.startswith("visual."):
            key = "model." + key
        renamed[key] = tensor
    save_file(renamed, str(folder / "model.safetensors"), metadata={"format": "pt"})
    got = compute(folder)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], **TOLERANCE)
