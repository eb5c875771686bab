"""Benchmark: per-step latency and peak memory over an episode, reference vs streaming mode.

One process, one model (full size by default: Qwen2.5-VL-7B + VGGT-1B, random weights, bf16 on
CUDA), one episode of ``--steps`` steps per mode on the same synthetic frames. Per step: the
policy's stage timings (``preprocess``, ``vggt``, ``vit``, ``llm``, ``action``, ``total``;
CUDA-synchronised around each stage) and the peak GPU memory of the step
(``torch.cuda.max_memory_allocated`` after a reset before the step, weights included). The
table gives p50/p90 per range of episode steps; ``--csv`` writes every step.

Reference mode decodes a fixed number of tokens (``--decode-tokens 4``, about
"MOVE_FORWARD<|im_end|>" in Qwen's tokenizer; random weights would otherwise decode arbitrary
lengths); streaming mode scores the four actions in its one forward.

    python -m benchmarks.step_latency --device cuda                        # full size, both modes
    python -m benchmarks.step_latency --modes streaming --quantize nf4     # 24 GB configuration
    python -m benchmarks.step_latency --preset tiny --device cpu --steps 20  # same code on a CPU
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gc
import importlib.metadata
import logging
import statistics
from pathlib import Path

import numpy as np
import torch
import transformers

from benchmarks.common import markdown_table, write_result
from janus_core.interface import Observation
from janus_core.policy import JanusVLNPolicy
from janus_core.streaming import StreamingPolicy

log = logging.getLogger(__name__)

INSTRUCTION = (
    "Walk out of the bedroom and turn left. Go down the hallway past the kitchen and stop in "
    "front of the wooden door at the end."
)
STAGES = ("preprocess", "vggt", "vit", "llm", "action", "total")
# Ranges of episode steps (1-based, inclusive) in the table; the last is clipped to --steps.
BINS = ((1, 1), (2, 8), (9, 16), (17, 56), (57, 64), (65, 128), (129, 256), (257, 10**9))


def synthetic_frames(width: int, height: int, n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` smooth, slightly noisy RGB frames (uint8) that change from step to step."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    out = []
    for step in range(n):
        base = np.stack([(xx + 7 * step) % 256, (yy + 3 * step) % 256, (xx + yy) % 256], -1)
        noise = rng.integers(-6, 7, base.shape)
        out.append(np.clip(base + noise, 0, 255).astype(np.uint8))
    return out


def run_episode(policy, frames: list[np.ndarray], mode: str) -> list[dict]:
    """Reset, then one ``act`` per frame; returns one record per step."""
    device = policy.model.device
    cuda = device.type == "cuda"
    policy.reset(INSTRUCTION)
    records = []
    for i, rgb in enumerate(frames):
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        result = policy.act(Observation(rgb=rgb))
        record = {"mode": mode, "step": i + 1, "action": result.action.name}
        record.update({k: result.timings.get(k, float("nan")) for k in STAGES})
        record.update({k: v for k, v in result.timings.items() if k not in STAGES})
        record["peak_gib"] = (torch.cuda.max_memory_allocated(device) / 2**30 if cuda
                              else float("nan"))
        records.append(record)
        if (i + 1) % 50 == 0:
            log.info("%s step %d: total %.1f ms", mode, i + 1, 1e3 * record["total"])
    return records


def profile_steps(policy, frames: list[np.ndarray], path: Path) -> None:
    """Profile more steps of the running episode; write op tables by self CPU and CUDA time.

    Also counts host-device synchronisations, the usual cause of host overhead.
    """
    activities = [torch.profiler.ProfilerActivity.CPU]
    if policy.model.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for rgb in frames:
            policy.act(Observation(rgb=rgb))
    averages = prof.key_averages()
    syncs = sum(e.count for e in averages if "Synchronize" in e.key or "synchronize" in e.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    sort_cuda = "self_cuda_time_total" if len(activities) > 1 else "cpu_time_total"
    path.write_text(
        f"{len(frames)} steps; host syncs: {syncs}\n\n"
        + averages.table(sort_by="self_cpu_time_total", row_limit=40)
        + "\n\n" + averages.table(sort_by=sort_cuda, row_limit=40)
    )
    log.info("wrote %s (%d host syncs over %d steps)", path, syncs, len(frames))


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summarise(records: list[dict], modes: list[str], steps: int) -> tuple[str, list[dict]]:
    """Markdown table: per mode and step range, p50/p90 of the total and p50 of each stage."""
    rows, summary = [], []
    for mode in modes:
        recs = [r for r in records if r["mode"] == mode]
        for lo, hi in BINS:
            if lo > steps:
                break
            hi = min(hi, steps)
            part = [r for r in recs if lo <= r["step"] <= hi]
            total = [1e3 * r["total"] for r in part]
            peaks = [r["peak_gib"] for r in part]
            entry = {
                "mode": mode, "steps": f"{lo}" if lo == hi else f"{lo}-{hi}",
                "p50": _pct(total, 50), "p90": _pct(total, 90),
                **{s: _pct([1e3 * r[s] for r in part], 50) for s in STAGES[:-1]},
                "peak_max": max(peaks), "peak_min": min(peaks),
            }
            summary.append(entry)
            rows.append([
                mode, entry["steps"], f"{entry['p50']:.1f}", f"{entry['p90']:.1f}",
                *(f"{entry[s]:.1f}" for s in STAGES[:-1]),
                f"{entry['peak_max']:.2f}" if np.isfinite(entry["peak_max"]) else "n/a",
            ])
    header = ["mode", "episode steps", "total p50 ms", "total p90 ms",
              *(f"{s} p50 ms" for s in STAGES[:-1]), "peak GiB (max)"]
    return markdown_table(header, rows), summary


def full_window_line(records: list[dict], modes: list[str], first_full: int) -> str:
    """One line comparing the modes over the steps with full memory windows."""
    p50 = {}
    for mode in modes:
        part = [1e3 * r["total"] for r in records if r["mode"] == mode and r["step"] >= first_full]
        peaks = [r["peak_gib"] for r in records if r["mode"] == mode and r["step"] >= first_full]
        if part:
            p50[mode] = statistics.median(part)
            flat = (f", peak {min(peaks):.2f}-{max(peaks):.2f} GiB"
                    if np.isfinite(max(peaks)) else "")
            p50[mode + "_text"] = f"{mode} p50 {p50[mode]:.1f} ms{flat}"
    texts = [p50[m + "_text"] for m in modes if m + "_text" in p50]
    line = f"- Full windows (steps >= {first_full}): " + "; ".join(texts)
    if "reference" in p50 and "streaming" in p50:
        line += f"; streaming is {p50['reference'] / p50['streaming']:.1f}x faster per step"
    return line


def _versions() -> str:
    parts = [f"torch {torch.__version__}", f"transformers {transformers.__version__}"]
    for pkg in ("bitsandbytes", "flash-attn"):
        try:
            parts.append(f"{pkg} {importlib.metadata.version(pkg)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(parts)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="full", help="preset name or YAML (random weights)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder instead of a preset")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA), bfloat16, float32")
    parser.add_argument("--attn", default="sdpa",
                        help="Qwen kernel: sdpa, eager, flash_attention_2")
    parser.add_argument("--steps", type=int, default=400, help="episode length (steps)")
    parser.add_argument("--modes", nargs="+", default=["reference", "streaming"],
                        choices=["reference", "streaming"])
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per mode first")
    parser.add_argument("--decode-tokens", type=int, default=4,
                        help="reference: fixed reply length (stop token disabled); 0 = to eos")
    parser.add_argument("--quantize", default=None, choices=["none", "int8", "nf4"],
                        help="streaming weights (bitsandbytes, CUDA); default: the config's")
    parser.add_argument("--quantize-parts", nargs="+", default=None,
                        choices=["llm", "vit", "vggt", "merger"])
    parser.add_argument("--lean-vggt", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--llm-attention", default=None, choices=["grouped", "repeat"])
    parser.add_argument("--overlap-encoders", action=argparse.BooleanOptionalAction,
                        default=None, help="streaming: ViT on a side CUDA stream during VGGT")
    parser.add_argument("--stage-sync", action=argparse.BooleanOptionalAction, default=True,
                        help="synchronise CUDA around stages (per-stage timings)")
    parser.add_argument("--csv", default=None, help="also write every step's record here")
    parser.add_argument("--profile", type=int, default=0,
                        help="after each mode's episode, profile this many more steps "
                             "(torch.profiler) and write the op tables to --profile-dir")
    parser.add_argument("--profile-dir", default="profiles")
    parser.add_argument("--name", default="step_latency", help="results file name")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("janus_core.policy").setLevel(logging.WARNING)
    logging.getLogger("janus_core.streaming").setLevel(logging.WARNING)

    source = args.checkpoint or args.preset
    reference = JanusVLNPolicy.from_pretrained(
        source, device=args.device, dtype=args.dtype, attn_implementation=args.attn,
        mode="reference",
    )
    model, processor, cfg = reference.model, reference.processor, reference.cfg
    changes = {k: v for k, v in {
        "quantize": args.quantize, "lean_vggt": args.lean_vggt,
        "llm_attention": args.llm_attention, "overlap_encoders": args.overlap_encoders,
        "quantize_parts": tuple(args.quantize_parts) if args.quantize_parts else None,
    }.items() if v is not None}
    options = dataclasses.replace(cfg.streaming, stage_sync=args.stage_sync, **changes)
    if options.quantize != "none" and "reference" in args.modes:
        parser.error("--quantize changes the shared weights: run it with --modes streaming")
    if args.decode_tokens > 0:
        reference.max_new_tokens, reference.eos_token_ids = args.decode_tokens, ()
    n_params = sum(p.numel() for p in model.parameters())
    device = model.device
    log.info("%s: %.3f B parameters on %s (%s)", cfg.name, n_params / 1e9, device, model.dtype)
    frames = synthetic_frames(cfg.image.input_width, cfg.image.input_height, args.steps)

    records: list[dict] = []
    for mode in args.modes:
        if mode == "reference":
            policy = reference
        else:
            policy = StreamingPolicy(model, processor, options)
        if args.warmup:
            run_episode(policy, frames[: args.warmup], mode)
        records += run_episode(policy, frames, mode)
        if args.profile:
            profile_steps(policy, frames[: args.profile], Path(args.profile_dir) / f"{mode}.txt")
        policy.spatial_cache = None  # free this mode's memory before the next one
        if mode == "streaming":
            policy.semantic_cache = None
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    table, summary = summarise(records, args.modes, args.steps)
    first_full = cfg.memory.semantic_initial + cfg.memory.semantic_recent + 1
    line = full_window_line(records, args.modes, max(first_full,
                            cfg.memory.spatial_initial + cfg.memory.spatial_recent + 1))
    print(table)  # noqa: T201 - a benchmark's table is its output
    print(line)  # noqa: T201
    if args.csv:
        path = Path(args.csv)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            fields = list(dict.fromkeys(k for r in records for k in r))
            writer = csv.DictWriter(f, fieldnames=fields, restval="")
            writer.writeheader()
            writer.writerows(records)
        log.info("wrote %s", path)
    weights = f"checkpoint {args.checkpoint}" if args.checkpoint else "random weights"
    opts = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(options).items())
    notes = (
        f"{line}\n"
        f"- Model: {cfg.name} ({weights}), {n_params / 1e9:.3f} B parameters, {model.dtype}, "
        f"Qwen attention {cfg.attn_implementation}; {_versions()}\n"
        f"- One episode of {args.steps} steps per mode ({args.warmup} warm-up steps first), "
        f"{cfg.image.input_width}x{cfg.image.input_height} synthetic frames; memory windows "
        f"spatial {cfg.memory.spatial_initial}+{cfg.memory.spatial_recent}, semantic "
        f"{cfg.memory.semantic_initial}+{cfg.memory.semantic_recent} frames\n"
        f"- Reference: the release loop, reply fixed at {args.decode_tokens} tokens "
        "(0 = to eos). Streaming options: " + opts + "\n"
        "- `peak GiB`: torch.cuda.max_memory_allocated within a step (weights included); "
        "stage timings CUDA-synchronised" + ("" if args.stage_sync else " (off: total only)")
    )
    if not args.no_write:
        device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        path = write_result(args.name, f"Step latency over an episode, {cfg.name}, {device_name}",
                            table, notes)
        log.info("wrote %s", path)
    return summary


if __name__ == "__main__":
    main()
