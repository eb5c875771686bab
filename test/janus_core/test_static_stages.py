"""The fixed-shape stages: same outputs as the eager code, and nothing that stops a CUDA graph.

A CUDA graph cannot capture a host sync (``.item()``, ``.tolist()``, a bool-mask index, a
``repeat_interleave`` without ``output_size``, ``nonzero``) nor a tensor made from host data
(``torch.tensor(list)``). On a CPU these show up as aten calls (``_local_scalar_dense``,
``lift_fresh``, ...), so :class:`NoHostSync` records every aten call of a stage's ``run`` and
fails on those: the check that the GPU capture will not die on a sync, runnable here.
"""

import dataclasses

import pytest
import torch
from janus_test_utils import frames, small_cfg, tokenizer_for
from torch.utils._python_dispatch import TorchDispatchMode

from janus_core.interface import Observation
from janus_core.model import build_model
from janus_core.processor import JanusProcessor
from janus_core.static_stages import (
    StaticVGGTStep,
    StaticViT,
    bucket_length,
    padded_structure,
)
from janus_core.streaming import StreamingPolicy
from janus_core.vggt_step import feature_depth, lean_vggt_embeds, new_lean_spatial_cache

SYNCING = {"aten._local_scalar_dense.default", "aten.lift_fresh.default",
           "aten.lift_fresh_copy.default", "aten.nonzero.default", "aten.masked_select.default",
           "aten._unique2.default", "aten.unique_consecutive.default", "aten.item.default",
           "aten.unique_dim.default"}


# Tensor methods that read values on the host (below the dispatcher on a CPU).
HOST_READS = ("tolist", "item", "numpy", "__bool__", "__int__", "__float__", "__index__")


class NoHostSync(TorchDispatchMode):
    """Record aten calls and host reads; collect those that would sync (or read host data)."""

    def __init__(self):
        super().__init__()
        self.bad: list[str] = []
        self.calls = 0
        self._saved = {}

    def __enter__(self):
        for name in HOST_READS:
            original = self._saved[name] = getattr(torch.Tensor, name)

            def spy(tensor, *args, _name=name, _original=original, **kwargs):
                self.bad.append(f"Tensor.{_name}")
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, spy)
        return super().__enter__()

    def __exit__(self, *exc):
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        self.calls += 1
        if name in SYNCING:
            self.bad.append(name)
        if name.startswith("aten.index") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool
            for i in (args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else [])
        ):
            self.bad.append(name + " (bool index)")
        if name == "aten.repeat_interleave.Tensor" and kwargs.get("output_size") is None:
            self.bad.append(name + " (no output_size)")
        return func(*args, **kwargs)


def test_the_checker_catches_syncs():
    x = torch.arange(4.0)
    for fn in (lambda: x.sum().item(), lambda: x.tolist(), lambda: x[x > 1],
               lambda: torch.tensor([1, 2]), lambda: torch.repeat_interleave(x.long()),
               lambda: int(x.max())):
        with NoHostSync() as mode:
            fn()
        assert mode.bad, fn


def streaming_policy(seed=0, **options):
    cfg = small_cfg(mode="streaming")
    torch.manual_seed(seed)
    model = build_model(cfg, device="cpu", dtype="float32")
    opts = dataclasses.replace(cfg.streaming, **options)
    return StreamingPolicy(model, JanusProcessor(cfg, tokenizer_for(cfg)), opts)


@pytest.mark.parametrize("attention", ["grouped", "repeat"])
def test_stages_make_no_host_sync(attention):
    policy = streaming_policy(static_shapes=True, llm_attention=attention)
    policy.reset("go to the kitchen and stop")
    for rgb in frames(policy.cfg, 2, seed=1):
        policy.act(Observation(rgb=rgb))
    policy.semantic_cache.begin(policy.semantic_cache.step_tokens)
    for stage in (policy._vggt_step, policy._vit_step, policy._llm_step):
        with NoHostSync() as mode:
            stage.run()
        assert mode.calls > 10 and mode.bad == [], (type(stage).__name__, mode.bad)


def test_static_vit_equals_the_stock_tower():
    policy = streaming_policy(seed=1, static_shapes=True)
    model, proc = policy.model, policy.processor
    vit = policy._vit_step
    for rgb in frames(policy.cfg, 2, seed=2):
        pixel_values, grid = proc.qwen_inputs([proc.preprocess_frame(rgb)])
        vit.load(pixel_values)
        vit.run()
        with torch.no_grad():
            expected = model.encode_images(pixel_values, grid)
        torch.testing.assert_close(vit.out, expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="pixel_values"):
        vit.load(pixel_values[1:])


def test_static_vit_needs_packed_attention():
    model = build_model(small_cfg(), device="cpu", dtype="float32")
    model.qwen.model.visual.blocks[0].attn = torch.nn.Identity()  # as with flash_attention_2
    with pytest.raises(ValueError, match="packed window attention"):
        StaticViT(model, (1, 6, 8))


def test_static_vggt_step_equals_lean_step_through_eviction():
    policy = streaming_policy(seed=2, static_shapes=True)
    model, proc = policy.model, policy.processor
    step, cache = policy._vggt_step, policy.spatial_cache
    assert cache.num_layers == feature_depth(model.cfg)
    dynamic = new_lean_spatial_cache(model)
    for rgb in frames(policy.cfg, 10, seed=3):  # windows 2 + 4: evictions
        image = proc.vggt_input(proc.preprocess_frame(rgb))
        step.load(image)
        step.run()
        cache.mark_written()
        cache.commit()
        expected = lean_vggt_embeds(model, image, dynamic)
        torch.testing.assert_close(step.out, expected, rtol=1e-5, atol=1e-5)
        assert cache.frame_ids == dynamic.frame_ids
    with pytest.raises(ValueError, match="VGGT frame"):
        StaticVGGTStep(model, cache, None).load(image[:, 1:])


def test_bucket_length_and_padded_structure():
    assert [bucket_length(n) for n in (0, 64, 65, 200, 1024, 1025, 1600)] == [
        64, 64, 128, 256, 1024, 1536, 2048]
    with pytest.raises(ValueError):
        bucket_length(-1)
    allowed = torch.tril(torch.ones(3, 3, dtype=torch.bool))
    padded = padded_structure(allowed, 5)
    assert torch.equal(padded[:3, :3], allowed)
    assert padded[3:, :3].sum() == 0 and padded[:3, 3:].sum() == 0
    assert torch.equal(padded[3:, 3:], torch.eye(2, dtype=torch.bool))
    with pytest.raises(ValueError):
        padded_structure(allowed, 2)
