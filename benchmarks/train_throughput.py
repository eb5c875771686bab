r"""Benchmark: SFT training throughput (samples per second) through the real training path.

Builds a synthetic annotation set (random smooth frames at the model's camera size, JPEG on disk,
trajectories long enough that most samples carry the full 9 frames), then runs the same
``training.sft.build_trainer`` path as ``janus-vln train`` for ``warmup + steps`` optimizer steps
and times the last ``steps``. One optimizer step = per-device batch x gradient accumulation x
world size samples. Results are appended to ``benchmarks/results/train_throughput.md`` (dated,
with the machine and the command).

Configurations: ``tiny`` (config/train_tiny.yaml, runs on a CPU), ``small``
(config/train_small_gpu.yaml) and ``full`` (config/train_full.yaml: the 7B architecture with
random weights, since no weights are downloaded). Memory strategy for ``full`` (``--strategy``):

- ``zero3`` / ``zero2``: DeepSpeed with ``config/deepspeed_zero{3,2}.json`` (needs deepspeed);
- ``zero3_offload``: ZeRO-3 with the optimizer state in CPU memory (fits one 80 GB GPU);
- ``fsdp``: PyTorch FSDP with ``config/fsdp.yaml``;
- ``plain``: no sharding, bfloat16 weights and optimizer state, fused AdamW (about 65 GB for
  the 7B model before activations; no DeepSpeed needed);
- ``auto`` (default): ``zero3_offload`` on one GPU and ``zero3`` on several when DeepSpeed is
  installed, else ``plain`` on one GPU and ``fsdp`` on several.

Usage::

    python -m benchmarks.train_throughput --configs tiny --steps 3 --warmup 1      # CPU
    python -m benchmarks.train_throughput --configs small,full --steps 10          # one GPU
    torchrun --nproc_per_node=8 -m benchmarks.train_throughput --configs full --strategy zero3
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from benchmarks.common import markdown_table, write_result
from training.annotations import TrajectoryWriter, actions_from_executed
from training.distributed import get_dist_info
from training.sft import build_trainer, load_train_config, model_config, resolve_config_path

log = logging.getLogger("benchmarks.train_throughput")

CONFIGS = {
    "tiny": "config/train_tiny.yaml",
    "small": "config/train_small_gpu.yaml",
    "full": "config/train_full.yaml",
}
STRATEGIES = ("auto", "plain", "fsdp", "zero2", "zero3", "zero3_offload")


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step (CUDA synchronised at both ends)."""

    def __init__(self):
        self.times: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._start)


def synthetic_frames(rng: np.random.Generator, n: int, height: int, width: int) -> list:
    """Smooth random RGB frames (low-frequency noise, upsampled), so JPEGs have a natural size."""
    from PIL import Image

    out = []
    for _ in range(n):
        small = rng.integers(0, 255, (max(2, height // 16), max(2, width // 16), 3), np.uint8)
        out.append(np.asarray(Image.fromarray(small).resize((width, height),
                                                             Image.Resampling.BICUBIC)))
    return out


def write_synthetic_set(root: Path, num_traj: int, traj_len: int, height: int, width: int,
                        seed: int = 0) -> Path:
    """An annotation set of ``num_traj`` trajectories of ``traj_len`` frames each."""
    rng = np.random.default_rng(seed)
    writer = TrajectoryWriter(root)
    actions = [1, 1, 2, 1, 3, 1, 1, 2]
    for t in range(num_traj):
        rec = writer.begin(f"bench_{t:04d}")
        for frame in synthetic_frames(rng, traj_len, height, width):
            rec.add_frame(frame)
        executed = [actions[i % len(actions)] for i in range(traj_len - 1)] + [0]
        rec.finish(["walk down the hallway, turn left at the kitchen and stop by the table"],
                   actions_from_executed(executed))
    writer.merge()
    return root


def pick_strategy(strategy: str, world_size: int) -> str:
    """Resolve ``auto`` (see the module docstring)."""
    if strategy != "auto":
        return strategy
    has_ds = importlib.util.find_spec("deepspeed") is not None
    if has_ds:
        return "zero3_offload" if world_size == 1 else "zero3"
    return "plain" if world_size == 1 else "fsdp"


def strategy_overrides(strategy: str, out_dir: Path) -> dict[str, Any]:
    """TrainConfig fields of a memory strategy."""
    if strategy == "plain":
        # fused AdamW: no full-size temporaries (the foreach path needs ~15 GB more at 7B)
        return {"deepspeed": None, "fsdp": None, "model_dtype": "bfloat16",
                "optim": "adamw_torch_fused"}
    if strategy == "fsdp":
        return {"deepspeed": None, "fsdp": "config/fsdp.yaml"}
    if strategy in ("zero2", "zero3"):
        return {"deepspeed": f"config/deepspeed_{strategy}.json", "fsdp": None}
    if strategy == "zero3_offload":
        base = json.loads(resolve_config_path("deepspeed_zero3.json").read_text())
        base["zero_optimization"]["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        path = out_dir / "deepspeed_zero3_offload.json"
        path.write_text(json.dumps(base, indent=2))
        return {"deepspeed": str(path), "fsdp": None}
    raise ValueError(f"unknown strategy {strategy!r}; choose from {STRATEGIES}")


def run_config(name: str, steps: int, warmup: int, strategy: str = "auto", num_traj: int = 4,
               traj_len: int = 24, work_dir: Path | None = None) -> dict[str, Any]:
    """Train ``warmup + steps`` optimizer steps of configuration ``name``; return the row."""
    info = get_dist_info()
    work = Path(work_dir or tempfile.mkdtemp(prefix=f"train_bench_{name}_"))
    work.mkdir(parents=True, exist_ok=True)
    overrides: dict[str, Any] = {
        "output_dir": str(work / "out"), "max_steps": warmup + steps, "save_steps": 10**9,
        "logging_steps": 10**9, "resume": "none", "report_to": ["none"], "warmup_ratio": 0.0,
        "training_args": {"save_strategy": "no"},  # no end-of-run checkpoint (18 GB at 7B)
    }
    used = "-"
    if name == "full":
        overrides.update(init_qwen=None, init_vggt=None)  # random weights: nothing to download
        used = pick_strategy(strategy, info.world_size)
        overrides.update(strategy_overrides(used, work))
        if importlib.util.find_spec("flash_attn") is None:
            overrides["model_overrides"] = {"attn_implementation": "sdpa"}
    elif strategy not in ("auto", "plain"):
        used = strategy
        overrides.update(strategy_overrides(strategy, work))
    if not torch.cuda.is_available():
        overrides.update(use_cpu=True, bf16=False, model_dtype="float32",
                         dataloader_num_workers=0, deepspeed=None, fsdp=None)
    cfg = load_train_config(CONFIGS[name])
    for key, value in overrides.items():  # setattr, so None clears a field of the YAML
        setattr(cfg, key, value)
    cfg.__post_init__()
    janus = model_config(cfg)
    data = write_synthetic_set(work / f"data_rank{info.rank}", num_traj, traj_len,
                               janus.image.input_height, janus.image.input_width)
    cfg.data = [str(data)]
    timer = StepTimer()
    trainer = build_trainer(cfg, callbacks=[timer])
    model = trainer.model
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    timed = timer.times[warmup:] or timer.times
    step_s = statistics.mean(timed)
    per_step = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * info.world_size
    ds = trainer.train_dataset
    images = statistics.mean(ds.num_images(i) for i in range(len(ds)))
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    row = {
        "config": name,
        "strategy": used,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "gpus": info.world_size if torch.cuda.is_available() else 0,
        "params_m": round(total / 1e6, 1),
        "trainable_m": round(trainable / 1e6, 1),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "micro_batch": cfg.per_device_train_batch_size,
        "grad_accum": cfg.gradient_accumulation_steps,
        "samples_per_step": per_step,
        "images_per_sample": round(images, 2),
        "step_s": round(step_s, 3),
        "samples_per_s": round(per_step / step_s, 3),
        "peak_gib": None if peak is None else round(peak, 1),
        "timed_steps": len(timed),
    }
    log.info("%s", row)
    del trainer, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return row


COLUMNS = ["config", "strategy", "device", "gpus", "params_m", "trainable_m", "dtype",
           "micro_batch", "grad_accum", "samples_per_step", "images_per_sample", "step_s",
           "samples_per_s", "peak_gib", "timed_steps"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="small,full",
                   help="comma list of tiny, small, full (default: small,full)")
    p.add_argument("--strategy", default="auto", choices=STRATEGIES)
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first")
    p.add_argument("--num-traj", type=int, default=4)
    p.add_argument("--traj-len", type=int, default=24)
    p.add_argument("--no-write", action="store_true", help="print only, no results file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        p.error(f"unknown configs {unknown}; choose from {sorted(CONFIGS)}")
    rows = []
    for name in names:
        try:
            rows.append(run_config(name, args.steps, args.warmup, args.strategy, args.num_traj,
                                   args.traj_len))
        except torch.cuda.OutOfMemoryError as err:
            log.error("%s: out of GPU memory (%s)", name, str(err).splitlines()[0])
            rows.append({"config": name, "strategy": args.strategy, "samples_per_s": "OOM"})
    table = markdown_table(COLUMNS, [[row.get(c, "") for c in COLUMNS] for row in rows])
    print(table)  # the benchmark's output (results also go to the markdown file)
    if get_dist_info().is_main and not args.no_write:
        notes = (
            "samples_per_s = samples_per_step / mean step time over the timed steps (after the "
            "warmup steps); one sample = one trajectory step (up to 9 frames through the ViT and "
            "VGGT, loss on the action). Synthetic frames; full = random weights."
        )
        path = write_result("train_throughput", "SFT training throughput", table, notes)
        log.info("results appended to %s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
