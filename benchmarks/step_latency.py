r"""Benchmark: per-step latency, memory and where the time goes; reference loop vs streaming.

One process, one model (full size by default: Qwen2.5-VL-7B + VGGT-1B, random weights, bf16 on
CUDA), one episode of ``--steps`` steps per variant on the same synthetic frames and instruction:

- ``reference``: the release's loop (:class:`janus_core.policy.JanusVLNPolicy`), a reply of
  ``--decode-tokens`` tokens;
- ``streaming``: streaming mode, eager, dynamic shapes (``static_shapes: false``);
- ``static``: streaming with fixed-shape caches and stages, eager (``static_shapes: true``);
- ``graphs``: the same stages replayed as CUDA graphs (``cuda_graphs: true``).

Per variant: p50/p95 of the step and of each stage over the steps with full memory windows
(steps where a CUDA graph was captured are left out and counted), the peak allocated GPU memory
per step (weights included) and the variant's peak reserved memory (what CUDA graph pools hold
shows there). ``--profile-steps N`` profiles N more full-window steps per variant with
torch.profiler: per stage, the GPU-busy time (union of the CUDA kernel/memcpy intervals inside
the stage's ``stage:<name>`` range) beside the unprofiled wall time; their difference is host
overhead, the sum of the busy times the floor for this work. Agreement: the four candidates'
scores (summed log-probabilities) of every step, compared between the streaming variants (max
abs difference, argmax agreement, the smallest top-2 margin for context).

``--quantize-24gb int8 nf4``: afterwards, per method, a fresh model with the LLM decoder's
weights quantized (bitsandbytes, CUDA) runs ``--quant-variants`` (default streaming and graphs):
the 24 GB configuration's latency and peak memory.

Results: ``--out-dir`` gets ``step_latency.md`` and ``step_latency.json`` (rewritten after
every variant, so a run cut short keeps what finished); the markdown section is also appended
to ``benchmarks/results/<--name>.md`` unless ``--no-write``. ``--budget-s`` skips what would
start after that many seconds (recorded as skipped).

    python -m benchmarks.step_latency --device cuda --steps 80 --profile-steps 3 \\
        --quantize-24gb int8 nf4 --out-dir outputs/step_latency      # the full study, an H100
    python -m benchmarks.step_latency --preset tiny --device cpu --steps 12 --no-write \\
        --out-dir /tmp/step_latency                                  # the same code on a CPU
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gc
import importlib.metadata
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import transformers

from benchmarks.common import command, machine, markdown_table, write_result
from janus_core.factory import load_components
from janus_core.interface import Observation
from janus_core.policy import JanusVLNPolicy
from janus_core.quantize import quantize_model
from janus_core.streaming import StreamingPolicy

log = logging.getLogger(__name__)

INSTRUCTION = (
    "Walk out of the bedroom and turn left. Go down the hallway past the kitchen and stop in "
    "front of the wooden door at the end."
)
STAGES = ("preprocess", "vggt", "vit", "llm", "action", "total")
VARIANTS = ("reference", "streaming", "static", "graphs")
# Ranges of episode steps (1-based, inclusive) in the per-range table; clipped to --steps.
BINS = ((1, 1), (2, 8), (9, 16), (17, 56), (57, 64), (65, 128), (129, 256), (257, 10**9))
# Streaming variant pairs whose scores are compared step by step (first: the one checked).
PAIRS = (("graphs", "streaming"), ("static", "streaming"), ("graphs", "static"))


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


# ---- running ---------------------------------------------------------------------------------
def make_policy(variant: str, model, processor, options, decode_tokens: int):
    """The policy of one variant on the shared model (streaming options from ``options``)."""
    if variant == "reference":
        policy = JanusVLNPolicy(model, processor)
        if decode_tokens > 0:
            policy.max_new_tokens, policy.eos_token_ids = decode_tokens, ()
        return policy
    flags = {"streaming": (False, False), "static": (True, False), "graphs": (True, True)}
    static, graphs = flags[variant]
    opts = dataclasses.replace(options, static_shapes=static, cuda_graphs=graphs)
    return StreamingPolicy(model, processor, opts)


def _graphs_held(policy) -> int:
    graphs = getattr(policy, "graphs", None)
    return 0 if graphs is None else graphs.num_graphs


def run_episode(policy, frames: list[np.ndarray], variant: str) -> list[dict]:
    """Reset, then one ``act`` per frame; one record per step (timings in seconds)."""
    device = policy.model.device
    cuda = device.type == "cuda"
    policy.reset(INSTRUCTION)
    records = []
    for i, rgb in enumerate(frames):
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        held = _graphs_held(policy)
        result = policy.act(Observation(rgb=rgb))
        record = {"variant": variant, "step": i + 1, "action": result.action.name,
                  "captured": _graphs_held(policy) > held}
        record.update({k: result.timings.get(k, float("nan")) for k in STAGES})
        record["peak_gib"] = (torch.cuda.max_memory_allocated(device) / 2**30 if cuda
                              else float("nan"))
        scores = getattr(policy, "last_scores", None)
        record["scores"] = None if scores is None else [float(s) for s in scores]
        records.append(record)
        if (i + 1) % 25 == 0:
            log.info("%s step %d: total %.1f ms", variant, i + 1, 1e3 * record["total"])
    return records


def _kineto_events(prof) -> list:
    return list(prof.profiler.kineto_results.events())


def _ns(event, which: str) -> int:
    getter = getattr(event, f"{which}_ns", None)
    if getter is not None:
        return int(getter())
    if which == "end" and not hasattr(event, "end_us"):  # torch 2.3: start + duration only
        return _ns(event, "start") + int(event.duration_us() * 1000)
    return int(getattr(event, f"{which}_us")() * 1000)


def _union_inside(intervals: list[tuple[int, int]], lo: int, hi: int) -> int:
    """Length of the union of ``intervals`` (sorted by start) clipped to ``[lo, hi]``."""
    total, cur_s, cur_e = 0, None, None
    for s, e in intervals:
        s, e = max(s, lo), min(e, hi)
        if e <= s:
            continue
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


def stage_busy(events, steps: int) -> dict[str, dict]:
    """Per stage: wall and GPU-busy ms per step from kineto events (``stage:<name>`` ranges).

    GPU busy = the union of the CUDA activity intervals (kernels, memcpy, memset) inside the
    stage's range; with stage_sync the stage's GPU work runs inside its range.
    """
    device = torch.autograd.DeviceType.CUDA
    gpu = sorted((_ns(e, "start"), _ns(e, "end")) for e in events if e.device_type() == device)
    out: dict[str, dict] = {}
    for e in events:
        name = e.name()
        if not name.startswith("stage:") or e.device_type() == device:
            continue
        lo, hi = _ns(e, "start"), _ns(e, "end")
        entry = out.setdefault(name[6:], {"wall_ms": 0.0, "busy_ms": 0.0, "kernels": 0})
        entry["wall_ms"] += (hi - lo) / 1e6 / steps
        entry["busy_ms"] += _union_inside(gpu, lo, hi) / 1e6 / steps
        entry["kernels"] += sum(1 for s, _ in gpu if lo <= s <= hi)
    for entry in out.values():
        entry["kernels"] = entry["kernels"] / steps
    out["_gpu_events"] = {"count": len(gpu)}
    return out


def profile_steps(policy, frames: list[np.ndarray], trace: Path | None = None) -> dict:
    """Profile more steps of the running episode; per-stage wall and GPU-busy ms per step."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if policy.model.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for rgb in frames:
            policy.act(Observation(rgb=rgb))
    if trace is not None:
        trace.parent.mkdir(parents=True, exist_ok=True)
        trace.write_text(prof.key_averages().table(
            sort_by="self_cuda_time_total" if len(activities) > 1 else "self_cpu_time_total",
            row_limit=30))
    return stage_busy(_kineto_events(prof), len(frames))


# ---- summaries ---------------------------------------------------------------------------------
def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summarise_variant(records: list[dict], first_full: int) -> dict:
    """p50/p95 (ms) per stage over full-window steps without a graph capture; peaks (GiB)."""
    part = [r for r in records if r["step"] >= first_full and not r["captured"]]
    out = {"steps": len(part), "capture_steps": sum(r["captured"] for r in records)}
    for s in STAGES:
        vals = [1e3 * r[s] for r in part if np.isfinite(r[s])]
        out[s] = {"p50": _pct(vals, 50), "p95": _pct(vals, 95)}
    peaks = [r["peak_gib"] for r in records if np.isfinite(r["peak_gib"])]
    out["peak_alloc_gib"] = max(peaks) if peaks else float("nan")
    return out


def range_table(records: list[dict], variants: list[str], steps: int) -> str:
    """p50/p90 total and p50 per stage per range of episode steps (all steps)."""
    rows = []
    for v in variants:
        recs = [r for r in records if r["variant"] == v]
        for lo, hi in BINS:
            if lo > steps:
                break
            hi = min(hi, steps)
            part = [r for r in recs if lo <= r["step"] <= hi]
            if not part:
                continue
            total = [1e3 * r["total"] for r in part]
            peak = max(r["peak_gib"] for r in part)
            rows.append([
                v, f"{lo}" if lo == hi else f"{lo}-{hi}", f"{_pct(total, 50):.1f}",
                f"{_pct(total, 90):.1f}",
                *(f"{_pct([1e3 * r[s] for r in part], 50):.1f}" for s in STAGES[:-1]),
                f"{peak:.2f}" if np.isfinite(peak) else "n/a",
                sum(r["captured"] for r in part),
            ])
    header = ["variant", "episode steps", "total p50 ms", "total p90 ms",
              *(f"{s} p50 ms" for s in STAGES[:-1]), "peak GiB", "graph captures"]
    return markdown_table(header, rows)


def agreement(a: list[dict], b: list[dict]) -> dict:
    """Step-by-step comparison of two variants' candidate scores over the same episode."""
    sa = torch.tensor([r["scores"] for r in a], dtype=torch.float64)
    sb = torch.tensor([r["scores"] for r in b], dtype=torch.float64)
    top2 = sb.topk(2, dim=1).values
    return {
        "steps": len(a),
        "max_abs_score_diff": float((sa - sb).abs().max()),
        "max_abs_prob_diff": float((sa.softmax(1) - sb.softmax(1)).abs().max()),
        "argmax_agree": int((sa.argmax(1) == sb.argmax(1)).sum()),
        "min_top2_margin": float((top2[:, 0] - top2[:, 1]).min()),
    }


def _fmt(x: float, digits: int = 1) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) and np.isfinite(x) else "n/a"


def render(study: dict) -> str:
    """The markdown section: tables and the targets' numbers."""
    meta, res = study["meta"], study["variants"]
    parts = [f"- Model: {meta['model']}; {meta['versions']}",
             f"- Episode: {meta['steps']} steps per variant ({meta['warmup']} warm-up steps "
             f"first), {meta['frames']} synthetic frames; windows {meta['windows']}; full "
             f"windows from step {meta['first_full']}",
             f"- Streaming options: {meta['options']}"]
    rows = []
    ref = res.get("reference", {}).get("summary", {}).get("total", {}).get("p50", float("nan"))
    for v, data in res.items():
        s = data.get("summary")
        if s is None:
            rows.append([v, data.get("skipped", "failed"), *[""] * 9])
            continue
        rows.append([
            v, _fmt(s["total"]["p50"]), _fmt(s["total"]["p95"]),
            *(f"{_fmt(s[k]['p50'])} / {_fmt(s[k]['p95'])}" for k in ("vggt", "vit", "llm")),
            _fmt(ref / s["total"]["p50"], 2) if v != "reference" else "1.00",
            _fmt(s["peak_alloc_gib"], 2), _fmt(data.get("peak_reserved_gib", float("nan")), 2),
            f"{s['steps']} ({s['capture_steps']} capture)",
        ])
    header = ["variant", "total p50 ms", "total p95 ms", "vggt p50/p95 ms", "vit p50/p95 ms",
              "llm p50/p95 ms", "x reference", "peak alloc GiB", "peak reserved GiB",
              "steps counted"]
    sections = ["### Full windows", markdown_table(header, rows), "\n".join(parts)]
    if study.get("ranges"):
        sections += ["### Per range of episode steps (all steps)", study["ranges"]]
    prof_rows = []
    for v, data in res.items():
        busy = data.get("profile")
        if not busy:
            continue
        wall = data.get("summary", {})
        gpu = busy.get("_gpu_events", {}).get("count", 0) > 0
        total_busy = 0.0
        for stage in ("preprocess", "vggt", "vit", "llm", "action"):
            b = busy.get(stage)
            if b is None:
                continue
            total_busy += b["busy_ms"]
            prof_rows.append([v, stage, _fmt(wall.get(stage, {}).get("p50", float("nan"))),
                              _fmt(b["wall_ms"]), _fmt(b["busy_ms"]) if gpu else "n/a",
                              _fmt(b["kernels"], 0) if gpu else "n/a"])
        prof_rows.append([v, "**sum (floor)**", _fmt(wall.get("total", {}).get("p50")), "",
                          _fmt(total_busy) if gpu else "n/a", ""])
    if prof_rows:
        sections += [
            "### Where the time goes (profiled full-window steps)",
            markdown_table(["variant", "stage", "wall p50 ms (unprofiled)",
                            "wall ms (profiled)", "GPU busy ms", "GPU ops / step"], prof_rows),
            "GPU busy: union of CUDA kernel/memcpy/memset intervals inside the stage's range, "
            "per step. The sum over stages is the floor for this work with no host overhead.",
        ]
    agree_rows = [[pair, g["steps"], f"{g['max_abs_score_diff']:.2e}",
                   f"{g['max_abs_prob_diff']:.2e}", f"{g['argmax_agree']}/{g['steps']}",
                   _fmt(g["min_top2_margin"], 4)]
                  for pair, g in study.get("agreement", {}).items()]
    if agree_rows:
        sections += [
            "### Agreement over the episode (candidate scores, every step)",
            markdown_table(["pair", "steps", "max abs score diff", "max abs prob diff",
                            "argmax agree", "min top-2 margin"], agree_rows),
            "Scores: summed log-probabilities of the four candidates. With random weights the "
            "scores favour the shortest candidate, so argmax agreement is only meaningful where "
            "the top-2 margin exceeds the score difference.",
        ]
    status = {v: d.get("graph_status") for v, d in res.items() if d.get("graph_status")}
    if status:
        lines = [f"- {v}: " + ", ".join(f"{k} {s}" for k, s in st.items())
                 + (f"; capture {sum(res[v].get('capture_seconds', {}).values()):.2f} s"
                    if res[v].get("capture_seconds") else "")
                 for v, st in status.items()]
        sections += ["### Stage execution", "\n".join(lines)]
    quant = study.get("quantized", {})
    if quant:
        qrows = []
        for method, variants in quant.items():
            for v, data in variants.items():
                s = data.get("summary")
                if s is None:
                    qrows.append([method, v, data.get("skipped", "failed"), "", "", "", ""])
                    continue
                qrows.append([method, v, _fmt(s["total"]["p50"]), _fmt(s["total"]["p95"]),
                              _fmt(s["llm"]["p50"]), _fmt(s["peak_alloc_gib"], 2),
                              _fmt(data.get("peak_reserved_gib", float("nan")), 2)])
        sections += ["### 24 GB setting (LLM decoder weights quantized)",
                     markdown_table(["quantize", "variant", "total p50 ms", "total p95 ms",
                                     "llm p50 ms", "peak alloc GiB", "peak reserved GiB"],
                                    qrows)]
    if study.get("targets"):
        sections += ["### Targets (issue 17)", "\n".join(study["targets"])]
    return "\n\n".join(sections)


def targets(study: dict) -> list[str]:
    """The issue's targets against the measured numbers (reported, not asserted)."""
    res, lines = study["variants"], []

    def p50(v):
        return res.get(v, {}).get("summary", {}).get("total", {}).get("p50", float("nan"))

    best = min((v for v in ("graphs", "static", "streaming") if np.isfinite(p50(v))),
               key=p50, default=None)
    if best is None:
        return lines
    ref = p50("reference")
    lines.append(f"- fastest streaming variant: {best}, p50 {p50(best):.1f} ms (target <= 80)")
    if np.isfinite(ref):
        lines.append(f"- {ref / p50(best):.2f}x the reference loop's p50 {ref:.1f} ms in the "
                     "same run (target >= 5x)")
    reserved = res[best].get("peak_reserved_gib", float("nan"))
    lines.append(f"- {best}: peak allocated {_fmt(res[best]['summary']['peak_alloc_gib'], 2)} GiB, "
                 f"peak reserved {_fmt(reserved, 2)} GiB (target <= 27)")
    for method, variants in study.get("quantized", {}).items():
        for v, data in variants.items():
            if data.get("summary"):
                lines.append(f"- 24 GB, {method}, {v}: p50 "
                             f"{data['summary']['total']['p50']:.1f} ms, peak reserved "
                             f"{_fmt(data.get('peak_reserved_gib', float('nan')), 2)} GiB "
                             "(target <= 20)")
    return lines


def _versions() -> str:
    parts = [f"torch {torch.__version__}", f"transformers {transformers.__version__}"]
    for pkg in ("bitsandbytes", "flash-attn"):
        try:
            parts.append(f"{pkg} {importlib.metadata.version(pkg)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    if torch.cuda.is_available():
        parts.append(f"CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}")
    return ", ".join(parts)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# ---- main ----------------------------------------------------------------------------------------
class Study:
    """The results so far, written to ``out_dir`` after every variant."""

    def __init__(self, out_dir: Path | None, meta: dict):
        self.out_dir = out_dir
        self.data: dict = {"meta": meta, "variants": {}, "agreement": {}, "quantized": {}}
        self.records: list[dict] = []

    def save(self) -> str:
        """Recompute the derived parts, write md + json (+ csv of every step); the markdown."""
        self.data["targets"] = targets(self.data)
        text = render(self.data)
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            header = (f"## Step latency, {self.data['meta']['model']}, "
                      f"{self.data['meta']['device']}\n\n- Machine: {machine()}\n"
                      f"- Command: `{command().strip()}`\n\n")
            (self.out_dir / "step_latency.md").write_text(header + text + "\n")
            (self.out_dir / "step_latency.json").write_text(
                json.dumps({**self.data, "records": self.records}, indent=1, default=str))
            with (self.out_dir / "steps.csv").open("w", newline="") as f:
                fields = [k for k in dict.fromkeys(k for r in self.records for k in r)]
                writer = csv.DictWriter(f, fieldnames=fields, restval="")
                writer.writeheader()
                writer.writerows(self.records)
        return text


def run_variant(study: Study, key: list, variant: str, model, processor, options, frames,
                args, first_full: int) -> list[dict] | None:
    """:func:`measure_variant`; a failure is recorded under ``key`` (None), not raised."""
    try:
        return measure_variant(study, key, variant, model, processor, options, frames, args,
                               first_full)
    except Exception as err:  # noqa: BLE001 - one variant failing must not lose the others
        log.exception("%s failed", "/".join(key[1:] + [variant]))
        node = study.data
        for k in key:
            node = node.setdefault(k, {})
        node[variant] = {"skipped": f"failed: {type(err).__name__}: {err}"[:400]}
        _free(model.device)
        return None


def measure_variant(study: Study, key: list, variant: str, model, processor, options, frames,
                    args, first_full: int) -> list[dict]:
    """One variant's warm-up episode, timed episode and profile; stored under ``key``."""
    device = model.device
    _free(device)
    policy = make_policy(variant, model, processor, options, args.decode_tokens)
    start = time.perf_counter()
    if args.warmup:
        run_episode(policy, frames[: args.warmup], variant)
    records = run_episode(policy, frames, variant)
    tag = "/".join(key[1:] + [variant])
    for r in records:
        r["variant"] = tag
    entry = {"summary": summarise_variant(records, first_full), "wall_s": 0.0}
    if device.type == "cuda":
        entry["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
    if isinstance(policy, StreamingPolicy):
        entry["graph_status"] = policy.graph_status()
        entry["capture_seconds"] = dict(policy.graphs.capture_seconds)
    if args.profile_steps:
        extra = synthetic_frames(*frames[0].shape[1::-1], args.profile_steps, seed=1)
        trace = (args.out_dir / "profiles" / f"{tag.replace('/', '_')}.txt"
                 if args.out_dir is not None else None)
        try:
            entry["profile"] = profile_steps(policy, extra, trace)
        except Exception as err:  # noqa: BLE001 - a profiler failure loses only the profile
            log.exception("%s: profiling failed", tag)
            entry["profile_error"] = f"{type(err).__name__}: {err}"[:300]
    entry["wall_s"] = time.perf_counter() - start
    study.records += records
    node = study.data
    for k in key:
        node = node.setdefault(k, {})
    node[variant] = entry
    if isinstance(policy, StreamingPolicy):
        policy.close()
    else:
        policy.spatial_cache = None
    del policy
    _free(device)
    log.info("%s: p50 %.1f ms over %d full-window steps (%.0f s)", tag,
             entry["summary"]["total"]["p50"], entry["summary"]["steps"], entry["wall_s"])
    return records


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="full", help="preset name or YAML (random weights)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint folder instead of a preset")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA), bfloat16, float32")
    parser.add_argument("--attn", default="sdpa",
                        help="Qwen kernel: sdpa, eager, flash_attention_2")
    parser.add_argument("--steps", type=int, default=80, help="episode length (steps)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    parser.add_argument("--decode-tokens", type=int, default=4,
                        help="reference: fixed reply length (stop token disabled); 0 = to eos")
    parser.add_argument("--profile-steps", type=int, default=0,
                        help="profile this many more full-window steps per variant")
    parser.add_argument("--quantize-24gb", nargs="*", default=[], choices=["int8", "nf4"],
                        help="then, per method, a fresh quantized model (bitsandbytes, CUDA)")
    parser.add_argument("--quantize-parts", nargs="+", default=["llm"],
                        choices=["llm", "vit", "vggt", "merger"])
    parser.add_argument("--quant-variants", nargs="+", default=["streaming", "graphs"],
                        choices=VARIANTS[1:])
    parser.add_argument("--quant-steps", type=int, default=None,
                        help="episode length of the quantized runs (default --steps)")
    parser.add_argument("--lean-vggt", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--llm-attention", default=None, choices=["grouped", "repeat"])
    parser.add_argument("--stage-sync", action=argparse.BooleanOptionalAction, default=True,
                        help="synchronise CUDA around stages (per-stage timings)")
    parser.add_argument("--budget-s", type=float, default=0.0,
                        help="skip variants that would start after this many seconds (0: none)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="write step_latency.md/.json, steps.csv and profiles here")
    parser.add_argument("--name", default="step_latency", help="results file name")
    parser.add_argument("--no-write", action="store_true",
                        help="do not append to benchmarks/results/")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("janus_core.policy").setLevel(logging.WARNING)
    logging.getLogger("janus_core.streaming").setLevel(logging.WARNING)
    t0 = time.perf_counter()

    def over_budget() -> bool:
        return bool(args.budget_s) and time.perf_counter() - t0 > args.budget_s

    source = args.checkpoint or args.preset
    model, processor = load_components(source, device=args.device, dtype=args.dtype,
                                       attn_implementation=args.attn, mode="reference")
    cfg, device = model.cfg, model.device
    changes = {k: v for k, v in {"lean_vggt": args.lean_vggt,
                                 "llm_attention": args.llm_attention}.items() if v is not None}
    options = dataclasses.replace(cfg.streaming, stage_sync=args.stage_sync, quantize="none",
                                  **changes)
    mem = cfg.memory
    first_full = max(mem.semantic_initial + mem.semantic_recent,
                     mem.spatial_initial + mem.spatial_recent) + 1
    n_params = sum(p.numel() for p in model.parameters())
    weights = f"checkpoint {args.checkpoint}" if args.checkpoint else "random weights"
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    opts = dataclasses.asdict(options)
    opts.pop("static_shapes"), opts.pop("cuda_graphs")
    meta = {
        "model": f"{cfg.name} ({weights}), {n_params / 1e6:.1f} M parameters, {model.dtype}, "
                 f"Qwen attention {cfg.attn_implementation}",
        "device": device_name, "versions": _versions(), "steps": args.steps,
        "warmup": args.warmup, "first_full": first_full,
        "frames": f"{cfg.image.input_width}x{cfg.image.input_height}",
        "windows": f"spatial {mem.spatial_initial}+{mem.spatial_recent}, semantic "
                   f"{mem.semantic_initial}+{mem.semantic_recent}",
        "options": ", ".join(f"{k}={v}" for k, v in opts.items())
                   + f"; reference reply {args.decode_tokens} tokens",
        "command": command().strip(), "machine": machine(),
    }
    log.info("%s on %s (%s)", meta["model"], device, meta["versions"])
    study = Study(args.out_dir, meta)
    frames = synthetic_frames(cfg.image.input_width, cfg.image.input_height, args.steps)

    by_variant: dict[str, list[dict]] = {}
    for variant in args.variants:
        if over_budget():
            study.data["variants"][variant] = {"skipped": "time budget"}
            continue
        records = run_variant(study, ["variants"], variant, model, processor, options,
                              frames, args, first_full)
        if records is not None:
            by_variant[variant] = records
        study.data["ranges"] = range_table(study.records, list(by_variant), args.steps)
        for a, b in PAIRS:
            if a in by_variant and b in by_variant:
                study.data["agreement"][f"{a} vs {b}"] = agreement(by_variant[a], by_variant[b])
        study.save()

    q_steps = args.quant_steps or args.steps
    for method in args.quantize_24gb:
        if over_budget():
            study.data["quantized"][method] = {"all": {"skipped": "time budget"}}
            study.save()
            continue
        del model
        _free(device)
        model, processor = load_components(source, device=args.device, dtype=args.dtype,
                                           attn_implementation=args.attn, mode="reference")
        try:
            quantize_model(model, method, tuple(args.quantize_parts))
        except Exception as err:  # noqa: BLE001 - e.g. no bitsandbytes: record, go on
            log.exception("quantize %s failed", method)
            study.data["quantized"][method] = {"all": {"skipped": f"failed: {err}"[:300]}}
            study.save()
            continue
        q_frames = frames[:q_steps] if q_steps <= len(frames) else synthetic_frames(
            cfg.image.input_width, cfg.image.input_height, q_steps)
        for variant in args.quant_variants:
            if over_budget():
                study.data["quantized"].setdefault(method, {})[variant] = {
                    "skipped": "time budget"}
                continue
            run_variant(study, ["quantized", method], variant, model, processor, options,
                        q_frames, args, first_full)
            study.save()

    text = study.save()
    print(text)  # noqa: T201 - a benchmark's tables are its output
    if not args.no_write:
        path = write_result(args.name, f"Step latency, {cfg.name}, {device_name}", text)
        log.info("wrote %s", path)
    log.info("done in %.0f s", time.perf_counter() - t0)
    return study.data


if __name__ == "__main__":
    main()
