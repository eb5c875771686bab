"""What a run's results come from: episode file content, and a policy's identity by content."""

import json

import pytest

from sim_bridge.evaluate import EvalConfig, EvalError, evaluate
from sim_bridge.generate import GenerateConfig, generate_dataset
from sim_bridge.provenance import (
    ProvenanceError,
    compared,
    content_sha256,
    policy_camera,
    policy_identity,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random-weight tiny JanusVLN in the release layout, camera 160x120."""
    from janus_core.checkpoint import save_checkpoint
    from janus_core.config import ImageConfig, load_config
    from janus_core.model import build_model
    from janus_core.tokenizer import build_tokenizer

    cfg = load_config("tiny").replace(
        image=ImageConfig(input_width=160, input_height=120, target_width=112), max_new_tokens=3)
    path = tmp_path_factory.mktemp("ckpt") / "tiny160"
    save_checkpoint(build_model(cfg, device="cpu", dtype="float32"), build_tokenizer(cfg), cfg,
                    path)
    return path


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    return generate_dataset(out, GenerateConfig(splits={"val_unseen": 2}, seed=4,
                                                episodes_per_scene=2))["val_unseen"]


def test_episode_content_not_bytes(tmp_path):
    import gzip

    a, b = tmp_path / "a.json.gz", tmp_path / "b.json"
    a.write_bytes(gzip.compress(b'{"episodes": []}', mtime=1))
    b.write_bytes(b'{"episodes": []}')
    assert content_sha256(a) == content_sha256(b)  # the gzip header's time does not count
    with pytest.raises(ProvenanceError, match="cannot read it"):
        content_sha256(tmp_path / "missing.json.gz")


def test_policy_identity(checkpoint, tmp_path):
    assert policy_identity("expert") == {"kind": "named", "name": "expert"}
    assert policy_identity("expert:ros") == {"kind": "named", "name": "expert:ros"}
    tiny = policy_identity("tiny")
    assert tiny["kind"] == "preset" and tiny["mode"] == "reference" and tiny["config_sha256"]
    ident = policy_identity(str(checkpoint))
    assert ident["kind"] == "checkpoint" and len(ident["sha256"]) == 64
    assert policy_camera(str(checkpoint)) == (160, 120, 79.0)
    # the same files through a symlink: the same identity; the recorded hash is reused
    link = tmp_path / "link"
    link.symlink_to(checkpoint)
    assert compared(policy_identity(str(link), previous=ident)) == compared(ident)
    # a changed weight file changes the identity, even when reusing the record was possible
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in checkpoint.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    assert compared(policy_identity(str(copy))) == compared(ident)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert policy_identity(str(copy), previous=ident)["sha256"] != ident["sha256"]
    with pytest.raises(ProvenanceError, match="not a checkpoint folder"):
        policy_identity(str(tmp_path))
    with pytest.raises(ProvenanceError, match="no such checkpoint folder"):
        policy_identity(str(tmp_path / "gone" / "ckpt"))


def test_a_checkpoint_sets_the_camera_and_is_tied_to_the_run(checkpoint, split, tmp_path):
    """No --width/--height: the checkpoint's 160x120; other sizes are refused before the run."""
    base = dict(split=str(split), limit=1, max_steps=2, progress=False,
                sim={"furniture": "shapes"})
    with pytest.raises(EvalError, match="trained on 160x120 frames, but 640x480 were asked"):
        evaluate(EvalConfig(policy=str(checkpoint), output_dir=str(tmp_path / "bad"),
                            width=640, height=480, **base))
    assert not (tmp_path / "bad").exists()            # the failed run left nothing behind
    out = tmp_path / "run"
    data = evaluate(EvalConfig(policy=str(checkpoint), output_dir=str(out), **base))
    assert data["complete"] and (data["settings"]["width"], data["settings"]["height"]) == (
        160, 120)
    run = json.loads((out / "run.json").read_text())
    assert run["fingerprint"]["policy"]["kind"] == "checkpoint"
    # another checkpoint in the same place: refused, naming the policy
    weights = checkpoint / "model.safetensors"
    original = weights.read_bytes()
    try:
        changed = bytearray(original)
        changed[-1] ^= 0xFF
        weights.write_bytes(bytes(changed))
        with pytest.raises(EvalError, match="policy: checkpoint sha256 .* -> checkpoint sha256"):
            evaluate(EvalConfig(policy=str(checkpoint), output_dir=str(out), **base))
    finally:
        weights.write_bytes(original)
    assert evaluate(EvalConfig(policy=str(checkpoint), output_dir=str(out), **base))["complete"]
