"""Benchmark: one JanusVLN ``act`` step with 0, 8 and 56 frames in the spatial cache.

Full size by default (Qwen2.5-VL-7B + VGGT-1B, random weights, bf16 on CUDA), reference mode
(the release's loop): per-stage latency (CUDA-synchronised) and peak GPU memory of the timed
step. For N cached frames the policy is reset and driven N untimed steps, then step N+1 is
timed (the LLM then sees ``min(N + 1, 9)`` images); ``--repeats`` such runs give the median.

Random weights decode arbitrary text, so by default the reply length is fixed
(``--decode-tokens 4``, about "MOVE_FORWARD<|im_end|>" in Qwen's tokenizer) by disabling the
stop token; ``--decode-tokens 0`` decodes as the policy does (up to 24 tokens, stop at eos).

    python -m benchmarks.act_step --device cuda                  # full size, GPU
    python -m benchmarks.act_step --preset tiny --device cpu     # the same code path on a CPU
"""

from __future__ import annotations

import argparse
import logging
import statistics

import numpy as np
import torch
import transformers

from benchmarks.common import markdown_table, write_result
from janus_core.factory import build_policy
from janus_core.interface import Observation
from janus_core.policy import JanusVLNPolicy
from janus_core.processor import sample_history

log = logging.getLogger(__name__)

INSTRUCTION = (
    "Walk out of the bedroom and turn left. Go down the hallway past the kitchen and stop in "
    "front of the wooden door at the end."
)
STAGES = ("preprocess", "vggt", "vit", "llm", "action", "total")


def synthetic_frames(width: int, height: int, seed: int = 0):
    """Endless smooth, slightly noisy RGB frames (uint8) that change from step to step."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    step = 0
    while True:
        base = np.stack([(xx + 7 * step) % 256, (yy + 3 * step) % 256, (xx + yy) % 256], -1)
        noise = rng.integers(-6, 7, base.shape)
        yield np.clip(base + noise, 0, 255).astype(np.uint8)
        step += 1


def timed_step(policy: JanusVLNPolicy, frames, cached: int) -> dict:
    """Reset, drive ``cached`` untimed steps, then time one step; returns timings and sizes."""
    policy.reset(INSTRUCTION)
    for _ in range(cached):
        policy.act(Observation(rgb=next(frames)))
    device = policy.model.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    result = policy.act(Observation(rgb=next(frames)))
    n_images = len(sample_history(cached, policy.cfg.memory.num_history))
    cache = policy.spatial_cache
    return {
        **{k: result.timings.get(k, float("nan")) for k in STAGES},
        "images": n_images,
        "prompt_tokens": policy.processor.prompt_ids(INSTRUCTION, n_images).shape[1],
        "new_tokens": len(policy.last_token_ids),
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda" else float("nan"),
        "cache_gib": (cache.nbytes / 2**30) if cache is not None else 0.0,
        "cache_frames": cache.num_frames if cache is not None else 0,
    }


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="full", help="preset name or YAML (random weights)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder instead of a preset")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA), bfloat16, float32")
    parser.add_argument("--attn", default="sdpa", help="sdpa, eager or flash_attention_2")
    parser.add_argument("--frames", type=int, nargs="+", default=[0, 8, 56])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--decode-tokens", type=int, default=4,
                        help="fixed reply length (stop token disabled); 0 = stop at eos")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("janus_core.policy").setLevel(logging.WARNING)  # per-step parse notes

    source = args.checkpoint or args.preset
    policy = build_policy(source, device=args.device, dtype=args.dtype,
                          attn_implementation=args.attn)
    if args.decode_tokens > 0:
        policy.max_new_tokens, policy.eos_token_ids = args.decode_tokens, ()
    cfg, model = policy.cfg, policy.model
    frames = synthetic_frames(cfg.image.input_width, cfg.image.input_height)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("%s: %.3f B parameters on %s (%s)", cfg.name, n_params / 1e9, model.device,
             model.dtype)

    timed_step(policy, frames, 1)  # warm-up: kernels, allocator, tokenizer
    rows, results = [], []
    for cached in args.frames:
        runs = [timed_step(policy, frames, cached) for _ in range(args.repeats)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        med["cached"] = cached
        results.append(med)
        rows.append([
            cached, med["images"], med["prompt_tokens"], med["new_tokens"],
            *(f"{1e3 * med[k]:.1f}" for k in STAGES),
            f"{med['peak_gib']:.2f}", f"{med['cache_gib']:.2f}",
        ])
        log.info("cached %d: total %.1f ms", cached, 1e3 * med["total"])
    header = ["cached frames", "LLM images", "prompt tokens", "new tokens",
              *(f"{k} ms" for k in STAGES), "peak GiB", "spatial cache GiB"]
    table = markdown_table(header, rows)
    print(table)  # noqa: T201 - a benchmark's table is its output
    weights = f"checkpoint {args.checkpoint}" if args.checkpoint else "random weights"
    reply = f"fixed at {args.decode_tokens} tokens" if args.decode_tokens else "up to eos"
    notes = (
        f"- Model: {cfg.name} ({weights}), "
        f"{n_params / 1e9:.3f} B parameters, {model.dtype}, attention {cfg.attn_implementation}, "
        f"transformers {transformers.__version__}, torch {torch.__version__}\n"
        f"- Reference mode, {cfg.image.input_width}x{cfg.image.input_height} frames, "
        f"median of {args.repeats} run(s) per row; reply length "
        f"{reply}"
        "\n- `peak GiB`: torch.cuda.max_memory_allocated during the timed step (weights included)"
    )
    if not args.no_write:
        device_name = (torch.cuda.get_device_name(model.device)
                       if model.device.type == "cuda" else "CPU")
        path = write_result("act_step", f"act() step, {cfg.name}, {device_name}", table, notes)
        log.info("wrote %s", path)
    return results


if __name__ == "__main__":
    main()
