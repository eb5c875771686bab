r"""Benchmark: scaling of SFT and of evaluation over 1, 2, 4 ... ranks, each started by torchrun.

One driver process runs the whole study and writes a dated table to
``benchmarks/results/multi_gpu.md`` with every command it ran:

1. **SFT** (the same ``training.sft.build_trainer`` path as ``janus-vln train``) on N ranks for
   ``--warmup + --steps`` optimizer steps, for each N in ``--ranks``. The global batch is held
   fixed: per-device micro batch x gradient accumulation x N = ``--global-batch`` (the micro
   batch stays the same and the accumulation shrinks as N grows), with the same seed and the
   same synthetic annotation set. Because every micro batch then holds the same samples whatever
   N is (the Trainer's data loader deals micro batches round-robin to the ranks), the loss of
   optimizer step k is the same number for every N up to floating-point reduction order; the
   table says how close the curves are. Recorded per N: the loss of every step (mean over the
   ranks of each rank's mean over its micro batches), samples per second over the timed steps
   (step-end to step-end, so data loading counts), the speed-up and scaling efficiency against
   the smallest N, and the peak memory of every rank (CUDA: ``max_memory_allocated``; CPU: the
   process's peak RSS).
2. **Evaluation** of a generated embedded split (``sim_bridge.generate``) with
   ``torchrun -m sim_bridge.evaluate`` on N ranks (each rank takes every N-th episode and
   appends to its own shard file; the driver merges). The per-episode records of every N must
   equal those of the smallest N once the timing fields are dropped; episodes per hour are
   given over the whole command (start-up and model loading included) and over the episodes
   alone (episodes / the slowest rank's summed episode time).

Strategies (``--strategy``): ``ddp`` (the Trainer's DistributedDataParallel; NCCL on GPUs, gloo
on CPUs; the full-size model then uses bfloat16 weights and fused AdamW, as
``benchmarks.train_throughput``'s ``plain``), ``fsdp`` (``config/fsdp.yaml``), ``zero2`` /
``zero3`` (``config/deepspeed_zero{2,3}.json``, needs DeepSpeed: ``requirements/training-gpu.txt``)
and ``zero3_offload``. ``--device cpu`` runs on CPUs with gloo, ``ddp`` only (DeepSpeed and
accelerate's FSDP plugin need an accelerator), with the tiny preset; numbers from such a run check
the code path and the loss/record identity, they are not GPU scaling figures.

Usage (from the repository root; see docs/multi_gpu.md for the GPU hosts)::

    # CPU, gloo, tiny preset: 1 and 2 processes (what runs anywhere)
    python -m benchmarks.multi_gpu --device cpu --preset tiny --ranks 1,2
    # one host with 4 GPUs: small config with ZeRO-3 plus evaluation, then the 7B shape
    python -m benchmarks.multi_gpu --preset small --strategy zero3 --ranks 1,2,4 \
        --global-batch 16 --micro-batch 2 --eval-set sim.render=false
    python -m benchmarks.multi_gpu --preset full --strategy zero3 --ranks 1,2,4 --skip-eval

The driver starts workers like this (``--work-dir`` holds data, logs and per-rank JSON)::

    torchrun --standalone --nproc_per_node=2 -m benchmarks.multi_gpu train-worker --preset tiny \
        --strategy ddp --device cpu --data outputs/multi_gpu/tiny_ddp_cpu/data --steps 8 ...
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import math
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("benchmarks.multi_gpu")

STRATEGIES = ("ddp", "fsdp", "zero2", "zero3", "zero3_offload")
PRESETS = ("tiny", "small", "full")
# record fields that depend on timing or on which rank ran the episode
VOLATILE_FIELDS = ("timings", "finished_at", "shard")


class BenchmarkError(RuntimeError):
    """A worker failed or the study was set up wrongly; the message says which and where."""


# ---- pieces shared by the driver, the workers and the tests -------------------------------------


def grad_accum_for(global_batch: int, micro_batch: int, world_size: int) -> int:
    """Gradient accumulation that makes ``micro_batch x accum x world_size == global_batch``."""
    if global_batch < 1 or micro_batch < 1 or world_size < 1:
        raise BenchmarkError(f"global batch {global_batch}, micro batch {micro_batch} and world "
                             f"size {world_size} must all be >= 1")
    per_step = micro_batch * world_size
    if global_batch % per_step:
        raise BenchmarkError(
            f"global batch {global_batch} is not a multiple of micro batch {micro_batch} x "
            f"{world_size} ranks; choose --global-batch as a multiple of micro batch x max rank"
        )
    return global_batch // per_step


def stable_record(record: dict[str, Any]) -> dict[str, Any]:
    """An evaluation record without the fields that legitimately differ between runs."""
    return {k: v for k, v in record.items() if k not in VOLATILE_FIELDS}


def record_differences(reference: Sequence[dict[str, Any]],
                       other: Sequence[dict[str, Any]]) -> list[str]:
    """Episodes whose records differ (timing fields ignored), as ``scene/episode: what`` lines."""
    def keyed(records):
        return {(str(r["scene_id"]), str(r["episode_id"])): stable_record(r) for r in records}

    ref, oth = keyed(reference), keyed(other)
    out = [f"{s}/{e}: missing" for s, e in sorted(set(ref) - set(oth))]
    out += [f"{s}/{e}: unexpected" for s, e in sorted(set(oth) - set(ref))]
    for key in sorted(set(ref) & set(oth)):
        a, b = ref[key], oth[key]
        if a != b:
            fields = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            out.append(f"{key[0]}/{key[1]}: {', '.join(fields)} differ")
    return out


def loss_differences(reference: Sequence[float], other: Sequence[float]) -> tuple[float, float]:
    """Largest absolute and relative per-step difference of two loss curves (same length)."""
    if len(reference) != len(other):
        raise BenchmarkError(f"loss curves have {len(reference)} and {len(other)} steps")
    if not reference:
        return 0.0, 0.0
    abs_d = [abs(a - b) for a, b in zip(reference, other)]
    rel_d = [d / max(abs(a), 1e-12) for d, a in zip(abs_d, reference)]
    return max(abs_d), max(rel_d)


def peak_memory_gib() -> dict[str, float]:
    """This process's peak memory: CUDA allocated/reserved on its GPU, else the peak RSS."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return {"peak_alloc_gib": torch.cuda.max_memory_allocated() / 2**30,
                "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30}
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"peak_rss_gib": rss_kib / 2**20}


# ---- the SFT worker (runs under torchrun, one process per rank) ----------------------------------


def _train_callbacks():
    """A step clock and a per-step loss recorder (TrainerCallback subclasses, made lazily)."""
    import torch
    from transformers import TrainerCallback

    def sync():
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    class StepClock(TrainerCallback):
        """Time at the start of training and at the end of every optimizer step (synchronised)."""

        def __init__(self):
            self.start = 0.0
            self.ends: list[float] = []

        def on_train_begin(self, args, state, control, **kwargs):
            sync()
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            sync()
            self.ends.append(time.perf_counter())

    class LossRecorder(TrainerCallback):
        """This rank's loss of every optimizer step, unrounded (the Trainer logs 4 decimals).

        :meth:`attach` wraps the trainer's ``training_step``, which returns the micro batch's
        loss divided by the accumulation steps; their sum over one optimizer step is the mean
        over this rank's micro batches. Values stay tensors until the end (no sync per step).
        """

        def __init__(self):
            self._acc = None
            self.steps: list[Any] = []

        def attach(self, trainer) -> None:
            inner = trainer.training_step

            def training_step(*args, **kwargs):
                loss = inner(*args, **kwargs)
                self._acc = loss.detach() if self._acc is None else self._acc + loss.detach()
                return loss

            trainer.training_step = training_step

        def on_step_end(self, args, state, control, **kwargs):
            self.steps.append(self._acc)
            self._acc = None

        def values(self) -> list[float]:
            return [float("nan") if v is None else float(v) for v in self.steps]

    return StepClock(), LossRecorder()


def train_overrides(preset: str, strategy: str, device: str, work: Path) -> dict[str, Any]:
    """TrainConfig fields for a preset, memory strategy and device (see the module docstring)."""
    from benchmarks.train_throughput import strategy_overrides

    out: dict[str, Any] = {}
    if preset == "full":
        out.update(init_qwen=None, init_vggt=None)  # random weights: nothing to download
        if importlib.util.find_spec("flash_attn") is None:
            out["model_overrides"] = {"attn_implementation": "sdpa"}
    if strategy == "ddp":
        if preset == "full":
            out.update(strategy_overrides("plain", work))
        else:
            out.update(deepspeed=None, fsdp=None)
    else:
        out.update(strategy_overrides(strategy, work))
    if device == "cpu":
        if strategy != "ddp":  # DeepSpeed, and accelerate's FSDP plugin, need an accelerator
            raise BenchmarkError(f"strategy {strategy} needs GPUs; on CPUs use ddp")
        out.update(use_cpu=True, bf16=False, model_dtype="float32", dataloader_num_workers=0)
    return out


def train_worker(args: argparse.Namespace) -> int:
    """One rank of an SFT run: train, then write ``<out>/rank<r>.json`` (and save if asked)."""
    import torch
    from transformers import set_seed

    from benchmarks.train_throughput import CONFIGS
    from training.distributed import get_dist_info
    from training.sft import build_trainer, load_train_config

    info = get_dist_info()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    accum = grad_accum_for(args.global_batch, args.micro_batch, info.world_size)
    cfg = load_train_config(CONFIGS[args.preset])
    overrides: dict[str, Any] = {
        "data": [args.data], "output_dir": str(out / "trainer"),
        "max_steps": args.warmup + args.steps, "save_steps": 10**9, "logging_steps": 10**9,
        "resume": "none", "report_to": ["none"], "warmup_ratio": 0.0, "seed": args.seed,
        "data_seed": args.seed, "per_device_train_batch_size": args.micro_batch,
        "gradient_accumulation_steps": accum,
        "training_args": {"save_strategy": "no"},
    }
    overrides.update(train_overrides(args.preset, args.strategy, args.device, out))
    for key, value in overrides.items():  # setattr, so None clears a field of the YAML
        setattr(cfg, key, value)
    cfg.__post_init__()
    clock, losses = _train_callbacks()
    # build_trainer builds the model before the Trainer seeds, so seed the random init here:
    # every rank count must start from the same weights
    set_seed(args.seed)
    trainer = build_trainer(cfg, callbacks=[clock, losses])
    losses.attach(trainer)
    model = trainer.model
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    memory = peak_memory_gib()
    ends = [clock.start, *clock.ends]
    step_s = [b - a for a, b in zip(ends, ends[1:])]
    if args.save:
        trainer.save_model(args.save)  # collective under ZeRO-3 / FSDP; rank 0 writes
    result = {
        "rank": info.rank, "world_size": info.world_size, "preset": args.preset,
        "strategy": args.strategy,
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "params_m": total / 1e6,
        "trainable_m": trainable / 1e6, "dtype": dtype, "micro_batch": args.micro_batch,
        "grad_accum": accum, "global_batch": args.global_batch, "warmup": args.warmup,
        "losses": losses.values(), "step_s": step_s, **memory,
        "accelerate": str(trainer.accelerator.distributed_type),
    }
    (out / f"rank{info.rank}.json").write_text(json.dumps(result, indent=1) + "\n")
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    import torch.distributed as dist

    if dist.is_initialized():  # a gloo group left open aborts the process at exit
        dist.barrier()
        dist.destroy_process_group()
    return 0


# ---- the driver ---------------------------------------------------------------------------------


@dataclasses.dataclass
class StudyOptions:
    """Settings of one scaling study (the driver's command line)."""

    preset: str = "tiny"
    strategy: str = "ddp"
    device: str = "cuda"
    ranks: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 4])
    steps: int = 8
    warmup: int = 2
    global_batch: int = 8
    micro_batch: int = 1
    seed: int = 42
    traj_len: int = 24
    train: bool = True
    eval: bool = True
    eval_episodes: int = 16
    eval_policy: str = "trained"
    eval_max_steps: int = 60
    eval_width: int | None = None
    eval_height: int | None = None
    eval_sets: list[str] = dataclasses.field(default_factory=list)
    threads_per_rank: int | None = None
    work_dir: str = ""
    loss_rtol: float | None = None
    timeout_s: float = 3600.0
    reuse: bool = False

    def __post_init__(self):
        """Check choices; the message names the option."""
        if self.preset not in PRESETS:
            raise BenchmarkError(f"--preset must be one of {PRESETS}, got {self.preset!r}")
        if self.strategy not in STRATEGIES:
            raise BenchmarkError(f"--strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.device not in ("cuda", "cpu"):
            raise BenchmarkError(f"--device must be cuda or cpu, got {self.device!r}")
        if self.device == "cpu" and self.strategy != "ddp":
            raise BenchmarkError(f"--strategy {self.strategy} needs GPUs (DeepSpeed and "
                                 "accelerate's FSDP plugin); on CPUs use ddp")
        if not self.ranks or min(self.ranks) < 1:
            raise BenchmarkError(f"--ranks must be positive integers, got {self.ranks}")
        self.ranks = sorted(set(self.ranks))
        if self.steps < 1 or self.warmup < 0:
            raise BenchmarkError("--steps must be >= 1 and --warmup >= 0")
        for n in self.ranks:
            grad_accum_for(self.global_batch, self.micro_batch, n)
        if self.eval and self.eval_episodes < max(self.ranks):
            raise BenchmarkError(f"--eval-episodes {self.eval_episodes} is fewer than the "
                                 f"largest rank count {max(self.ranks)}")
        if self.eval and not self.train and self.eval_policy == "trained":
            raise BenchmarkError("--eval-policy trained needs the SFT part; give a policy "
                                 "(preset, checkpoint folder or baseline) with --skip-train")
        if not self.work_dir:
            self.work_dir = f"outputs/multi_gpu/{self.preset}_{self.strategy}_{self.device}"
        if self.loss_rtol is None:  # float32 on CPU agrees to rounding; bf16 on GPUs less so
            self.loss_rtol = 1e-4 if self.device == "cpu" else 2e-2

    def threads(self) -> int:
        """OMP threads per rank: the same for every N, so CPU numerics do not change with N."""
        if self.threads_per_rank:
            return self.threads_per_rank
        return max(1, (os.cpu_count() or 1) // max(self.ranks))


def torchrun_command(nproc: int, module: str, module_args: Sequence[str]) -> list[str]:
    """``torchrun --standalone --nproc_per_node=N -m module ...`` (this interpreter's torchrun)."""
    exe = Path(sys.executable).with_name("torchrun")
    launcher = [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]
    return [*launcher, "--standalone", f"--nproc_per_node={nproc}", "-m", module,
            *module_args]


def shown_command(cmd: Sequence[str], env: dict[str, str]) -> str:
    """The command as a user types it (``torchrun`` by name, the env vars that were set)."""
    words = list(cmd)
    if words and Path(words[0]).name == "torchrun":
        words[0] = "torchrun"
    elif words[:3] == [sys.executable, "-m", "torch.distributed.run"]:
        words[:3] = ["torchrun"]
    prefix = " ".join(f"{k}={v}" for k, v in sorted(env.items()))
    return (prefix + " " if prefix else "") + shlex.join(words)


def run_logged(cmd: Sequence[str], env_extra: dict[str, str], log_path: Path,
               timeout_s: float) -> float:
    """Run ``cmd`` from the repository root with output to ``log_path``; return its wall time."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **env_extra}
    log.info("running: %s", shown_command(cmd, env_extra))
    t0 = time.perf_counter()
    with log_path.open("w") as f:
        try:
            proc = subprocess.run(list(cmd), env=env, stdout=f, stderr=subprocess.STDOUT,
                                  timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as err:
            raise BenchmarkError(f"timed out after {timeout_s:.0f} s: see {log_path}") from err
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "".join(log_path.read_text(errors="replace").splitlines(True)[-30:])
        raise BenchmarkError(f"exit code {proc.returncode}: {shown_command(cmd, env_extra)}\n"
                             f"log {log_path}, last lines:\n{tail}")
    return wall


def _env(opts: StudyOptions) -> dict[str, str]:
    env = {"OMP_NUM_THREADS": str(opts.threads())}
    if opts.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # gloo on CPUs even where GPUs exist
    return env


def prepare_train_data(opts: StudyOptions, work: Path) -> Path:
    """A synthetic annotation set at the model's camera size, big enough for one epoch."""
    from benchmarks.train_throughput import CONFIGS, write_synthetic_set
    from training.sft import load_train_config, model_config

    janus = model_config(load_train_config(CONFIGS[opts.preset]))
    needed = (opts.warmup + opts.steps) * opts.global_batch
    num_traj = max(1, math.ceil(needed / opts.traj_len))
    root = work / "data"
    if not (root / "annotations.json").exists():
        write_synthetic_set(root, num_traj, opts.traj_len, janus.image.input_height,
                            janus.image.input_width, seed=opts.seed)
    return root


def run_train(opts: StudyOptions, nproc: int, data: Path, work: Path,
              save: Path | None = None) -> dict[str, Any]:
    """SFT on ``nproc`` ranks through torchrun; returns the combined result of all ranks."""
    key = {"part": "train", "ranks": nproc, "device": opts.device,
           **{k: getattr(opts, k) for k in ("preset", "strategy", "steps", "warmup",
                                            "global_batch", "micro_batch", "seed", "traj_len")}}
    row_file = work / f"train_r{nproc}.row.json"
    if save is None or (save / "config.json").exists():
        reused = reuse_row(opts, row_file, key)
        if reused is not None:
            return reused
    out = work / f"train_r{nproc}"
    shutil.rmtree(out, ignore_errors=True)
    args = ["train-worker", "--preset", opts.preset, "--strategy", opts.strategy,
            "--device", opts.device, "--data", str(data), "--steps", str(opts.steps),
            "--warmup", str(opts.warmup), "--global-batch", str(opts.global_batch),
            "--micro-batch", str(opts.micro_batch), "--seed", str(opts.seed), "--out", str(out)]
    if save is not None:
        args += ["--save", str(save)]
    cmd = torchrun_command(nproc, "benchmarks.multi_gpu", args)
    env = _env(opts)
    log_path = work / "logs" / f"train_r{nproc}.log"
    try:
        wall = run_logged(cmd, env, log_path, opts.timeout_s)
    except BenchmarkError as err:
        row = failed_row(nproc, shown_command(cmd, env), log_path, err)
        row_file.write_text(json.dumps({"key": key, "row": row}) + "\n")
        return row
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]
    row = combine_train_ranks(ranks, opts.global_batch, command=shown_command(cmd, env),
                              wall_s=wall)
    row_file.write_text(json.dumps({"key": key, "row": row}) + "\n")
    return row


def reuse_row(opts: StudyOptions, row_file: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """With ``--reuse``: the row an earlier run with the same settings stored, else None.

    Failed rows are reused too (a 1-GPU out-of-memory is not worth a second try); delete the
    ``*.row.json`` file to run that rank count again.
    """
    if not opts.reuse or not row_file.exists():
        return None
    stored = json.loads(row_file.read_text())
    if stored.get("key") != key:
        log.info("%s was made with other settings; running again", row_file)
        return None
    log.info("reusing %s (--reuse)", row_file)
    return stored["row"]


def failed_row(nproc: int, command: str, log_path: Path, err: Exception) -> dict[str, Any]:
    """A row for a run that did not finish (out of GPU memory is named as such)."""
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    if "OutOfMemoryError" in text or "CUDA out of memory" in text:
        reason = "out of GPU memory"
    else:
        reason = "failed: " + str(err).splitlines()[0]
    log.error("%d ranks: %s (log %s)", nproc, reason, log_path)
    return {"ranks": nproc, "failed": reason, "command": command, "log": str(log_path)}


def combine_train_ranks(ranks: Sequence[dict[str, Any]], global_batch: int,
                        command: str = "", wall_s: float = 0.0) -> dict[str, Any]:
    """Per-step loss = mean over ranks; timing from rank 0; memory of every rank."""
    first = ranks[0]
    steps = len(first["losses"])
    losses = [statistics.fmean(r["losses"][i] for r in ranks) for i in range(steps)]
    warmup = min(first["warmup"], max(0, steps - 1))
    timed = first["step_s"][warmup:]
    memory_key = "peak_alloc_gib" if "peak_alloc_gib" in first else "peak_rss_gib"
    return {
        "ranks": first["world_size"], "preset": first["preset"], "strategy": first["strategy"],
        "device": first["device"], "threads": first["threads"], "dtype": first["dtype"],
        "params_m": first["params_m"], "trainable_m": first["trainable_m"],
        "micro_batch": first["micro_batch"], "grad_accum": first["grad_accum"],
        "global_batch": global_batch, "losses": losses,
        "step_s": statistics.fmean(timed), "timed_steps": len(timed),
        "samples_per_s": global_batch * len(timed) / sum(timed),
        "memory_key": memory_key, "peak_gib": [r[memory_key] for r in ranks],
        "accelerate": first.get("accelerate", ""), "command": command, "wall_s": wall_s,
    }


def eval_camera(policy: str, opts: StudyOptions) -> tuple[int, int]:
    """Frame size the eval policy expects (checkpoint or preset), else 640x480 / the options."""
    width, height = 640, 480
    try:
        from janus_core.checkpoint import config_from_checkpoint
        from janus_core.config import load_config

        if (Path(policy) / "config.json").exists():
            image = config_from_checkpoint(policy).image
            width, height = image.input_width, image.input_height
        elif policy not in ("random", "forward", "expert"):
            image = load_config(policy).image
            width, height = image.input_width, image.input_height
    except ImportError:
        pass
    return opts.eval_width or width, opts.eval_height or height


def prepare_eval_split(opts: StudyOptions, work: Path) -> Path:
    """A generated embedded ``val_unseen`` split of ``opts.eval_episodes`` episodes."""
    from sim_bridge.generate import GenerateConfig, generate_dataset

    root = work / "eval_data"
    path = root / "val_unseen" / "val_unseen.json.gz"
    if not path.exists():
        generate_dataset(root, GenerateConfig(splits={"val_unseen": opts.eval_episodes},
                                              seed=opts.seed, episodes_per_scene=4,
                                              min_geodesic=3.0, max_geodesic=8.0,
                                              mean_geodesic=5.0, std_geodesic=1.5))
    return path


def run_eval(opts: StudyOptions, nproc: int, split: Path, policy: str, work: Path
             ) -> dict[str, Any]:
    """Evaluate ``split`` on ``nproc`` torchrun ranks; merge; return records and rates."""
    from sim_bridge.evaluate import merge

    width, height = eval_camera(policy, opts)
    key = {"part": "eval", "ranks": nproc, "device": opts.device, "policy": policy,
           "width": width, "height": height, "sets": list(opts.eval_sets),
           **{k: getattr(opts, k) for k in ("eval_episodes", "eval_max_steps", "seed")}}
    row_file = work / f"eval_r{nproc}.row.json"
    reused = reuse_row(opts, row_file, key)
    if reused is not None:
        return reused
    out = work / f"eval_r{nproc}"
    shutil.rmtree(out, ignore_errors=True)
    args = ["--split", str(split), "--policy", policy, "--output-dir", str(out),
            "--backend", "embedded", "--width", str(width), "--height", str(height),
            "--max-steps", str(opts.eval_max_steps), "--no-progress"]
    for item in opts.eval_sets:
        args += ["--set", item]
    cmd = torchrun_command(nproc, "sim_bridge.evaluate", args)
    env = _env(opts)
    log_path = work / "logs" / f"eval_r{nproc}.log"
    try:
        wall = run_logged(cmd, env, log_path, opts.timeout_s)
    except BenchmarkError as err:
        row = failed_row(nproc, shown_command(cmd, env), log_path, err)
        row_file.write_text(json.dumps({"key": key, "row": row}) + "\n")
        return row
    data = merge(out)  # the driver merges once all ranks are done
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    per_shard: dict[int, float] = {}
    for rec in records:
        per_shard[rec["shard"]] = per_shard.get(rec["shard"], 0.0) + float(
            (rec.get("timings") or {}).get("episode_s", 0.0))
    busiest = max(per_shard.values()) if per_shard else float("nan")
    n = len(records)
    row = {
        "ranks": nproc, "episodes": n, "complete": data["complete"],
        "errors": sum(r.get("status") != "ok" for r in records),
        "steps": sum(len(r.get("actions") or []) for r in records),
        "stopped": sum(r.get("end_reason") in ("stop", "forced_stop") for r in records),
        "wall_s": wall, "episodes_per_hour_wall": 3600 * n / wall,
        "busiest_rank_s": busiest, "episodes_per_hour": 3600 * n / busiest if busiest else 0.0,
        "sr": data["summary"].get("metrics", {}).get("sr"), "records": records,
        "command": shown_command(cmd, env), "width": width, "height": height,
    }
    row_file.write_text(json.dumps({"key": key, "row": row}) + "\n")
    return row


def _fmt(x: float, nd: int = 3) -> str:
    return f"{x:.{nd}f}"


def train_tables(rows: Sequence[dict[str, Any]], rtol: float) -> tuple[str, str]:
    """The scaling table and the per-step loss table of the SFT runs (failed runs shown)."""
    from benchmarks.common import markdown_table

    done = [r for r in rows if "failed" not in r]
    base = done[0] if done else None
    mem_label = "peak RSS GiB per rank"
    if base is None or base["memory_key"] == "peak_alloc_gib":
        mem_label = "peak GiB per rank (CUDA alloc)"
    base_n = base["ranks"] if base else "-"
    header = ["ranks", "strategy", "device", "dtype", "params M", "micro x accum x ranks",
              "step s", "samples/s", f"speed-up vs {base_n}", "efficiency", mem_label,
              "loss max abs diff", "loss max rel diff", f"same curve (rtol {rtol:g})"]
    table = []
    for row in rows:
        if "failed" in row:
            table.append([row["ranks"], *["-"] * 6, row["failed"], *["-"] * 6])
            continue
        abs_d, rel_d = loss_differences(base["losses"], row["losses"])
        speedup = row["samples_per_s"] / base["samples_per_s"]
        eff = speedup * base["ranks"] / row["ranks"]
        table.append([
            row["ranks"], row["strategy"], row["device"], row["dtype"], _fmt(row["params_m"], 1),
            f"{row['micro_batch']} x {row['grad_accum']} x {row['ranks']} = "
            f"{row['global_batch']}",
            _fmt(row["step_s"]), _fmt(row["samples_per_s"]), _fmt(speedup, 2),
            f"{100 * eff:.0f} %", " / ".join(_fmt(m, 2) for m in row["peak_gib"]),
            f"{abs_d:.2e}", f"{rel_d:.2e}", "yes" if rel_d <= rtol else "NO",
        ])
    curve_header = ["step", *[f"loss, {r['ranks']} rank{'s' if r['ranks'] > 1 else ''}"
                              for r in done]]
    steps = len(base["losses"]) if base else 0
    curve = [[i + 1, *[f"{r['losses'][i]:.6f}" for r in done]] for i in range(steps)]
    return markdown_table(header, table), markdown_table(curve_header, curve)


def eval_table(rows: Sequence[dict[str, Any]]) -> str:
    """The evaluation table: records against the smallest rank count that ran, and rates."""
    from benchmarks.common import markdown_table

    done = [r for r in rows if "failed" not in r]
    base = done[0] if done else None
    header = ["ranks", "episodes", "errors", "ended by STOP", "policy steps", "SR %", "wall s",
              "episodes/h (wall)", "busiest rank s", "episodes/h (episodes only)",
              f"records == {base['ranks'] if base else '-'} rank(s)"]
    table = []
    for row in rows:
        if "failed" in row:
            table.append([row["ranks"], *["-"] * 9, row["failed"]])
            continue
        diffs = record_differences(base["records"], row["records"])
        table.append([row["ranks"], row["episodes"], row["errors"], row["stopped"], row["steps"],
                      "-" if row["sr"] is None else f"{100 * row['sr']:.1f}",
                      _fmt(row["wall_s"], 1), _fmt(row["episodes_per_hour_wall"], 0),
                      _fmt(row["busiest_rank_s"], 1), _fmt(row["episodes_per_hour"], 0),
                      "yes" if not diffs else f"NO ({len(diffs)} differ)"])
    return markdown_table(header, table)


def run_study(opts: StudyOptions) -> dict[str, Any]:
    """Run the SFT and evaluation parts for every rank count; return all rows."""
    work = Path(opts.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"options": dataclasses.asdict(opts), "train": [], "eval": []}
    policy = opts.eval_policy
    if opts.train:
        data = prepare_train_data(opts, work)
        for i, n in enumerate(opts.ranks):
            save = None
            if i == 0 and opts.eval and opts.eval_policy == "trained":
                if opts.preset == "full":
                    raise BenchmarkError("--eval-policy trained would save the 7B model; give "
                                         "--eval-policy (a checkpoint or preset) or --skip-eval")
                save = work / "trained_policy"
                policy = str(save)
            row = run_train(opts, n, data, work, save=save)
            if save is not None and "failed" in row:
                raise BenchmarkError(f"the first SFT run ({n} ranks) {row['failed']}; it was to "
                                     f"save the eval policy (see {row['log']})")
            if "failed" not in row:
                log.info("SFT on %d ranks: %.3f samples/s, losses %s", n, row["samples_per_s"],
                         [round(v, 5) for v in row["losses"]])
            result["train"].append(row)
    if opts.eval:
        split = prepare_eval_split(opts, work)
        for n in opts.ranks:
            row = run_eval(opts, n, split, policy, work)
            if "failed" not in row:
                log.info("eval on %d ranks: %d episodes, %.1f episodes/h (wall)", n,
                         row["episodes"], row["episodes_per_hour_wall"])
            result["eval"].append(row)
        result["eval_policy"] = policy
    slim = {**result, "eval": [{k: v for k, v in r.items() if k != "records"}
                               for r in result["eval"]]}
    (work / "summary.json").write_text(json.dumps(slim, indent=1, default=str) + "\n")
    return result


def software_versions() -> str:
    """Versions of the packages the numbers depend on (those installed)."""
    out = []
    for name in ("torch", "transformers", "accelerate", "deepspeed"):
        if importlib.util.find_spec(name) is None:
            continue
        try:
            from importlib.metadata import version

            out.append(f"{name} {version(name)}")
        except Exception:  # noqa: BLE001 - a version we cannot read is left out
            continue
    return ", ".join(out)


def report(result: dict[str, Any], opts: StudyOptions) -> str:
    """The markdown body of a study (tables, commands, notes)."""
    parts = ["- Software: " + software_versions()]
    if opts.device == "cpu":
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        parts.append(
            f"**CPU / gloo run** ({os.cpu_count()} CPU cores, {opts.threads()} OMP thread(s) "
            f"per rank, load average {load} at the end): this checks the multi-process code "
            "path, the loss-curve identity at a fixed global batch and the per-episode record "
            "identity. It is not a GPU scaling claim; with ranks sharing a few cores (and other "
            "jobs), samples/s and episodes/h say little.")
    if result["train"]:
        scaling, curve = train_tables(result["train"], opts.loss_rtol)
        first = next((r for r in result["train"] if "failed" not in r), {"accelerate": "-"})
        parts.append(f"### SFT: preset `{opts.preset}`, strategy `{opts.strategy}`, "
                     f"{opts.steps} timed + {opts.warmup} warm-up optimizer steps, global batch "
                     f"{opts.global_batch}, seed {opts.seed} (Trainer: "
                     f"`{first['accelerate']}`)\n\n{scaling}\n\nLoss of every optimizer step "
                     f"(warm-up steps included):\n\n{curve}")
    if result["eval"]:
        ev = next((r for r in result["eval"] if "failed" not in r), {"episodes": "?",
                                                                       "width": "?", "height": "?"})
        parts.append(
            f"### Evaluation: {ev['episodes']} generated embedded `val_unseen` episodes, policy "
            f"`{result['eval_policy']}`, {ev['width']}x{ev['height']} frames, max "
            f"{opts.eval_max_steps} steps\n\n{eval_table(result['eval'])}")
    commands = [r["command"] for r in result["train"]] + [r["command"] for r in result["eval"]]
    parts.append("Commands the driver ran (from the repository root; "
                 f"`{opts.work_dir}` holds data, logs and per-rank JSON):\n\n"
                 + "\n".join(f"- `{c}`" for c in commands))
    parts.append(
        "samples/s = global batch x timed steps / their wall time, step end to step end (data "
        "loading included), on rank 0. Efficiency = speed-up x (smallest rank count / ranks). "
        "Loss = mean over ranks of each rank's mean micro-batch loss for the step; micro batch "
        "fixed, accumulation = global batch / (micro batch x ranks), so every N sees the same "
        "micro batches. Evaluation records are compared with `timings`, `finished_at` and "
        "`shard` dropped; episodes/h (wall) counts the whole torchrun command (interpreter "
        "start-up and model loading included), episodes/h (episodes only) divides by the "
        "busiest rank's summed episode time.")
    return "\n\n".join(parts)


def build_parser() -> argparse.ArgumentParser:
    """The driver's argument parser (the worker has its own, see :func:`worker_parser`)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.multi_gpu",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny", choices=PRESETS,
                   help="tiny (CPU), small (config/train_small_gpu.yaml), full (7B, random)")
    p.add_argument("--strategy", default="ddp", choices=STRATEGIES)
    p.add_argument("--device", default=None, choices=("cuda", "cpu"),
                   help="default: cuda when a GPU is visible, else cpu (gloo)")
    p.add_argument("--ranks", default="1,2,4", help="comma list of rank counts (default 1,2,4)")
    p.add_argument("--steps", type=int, default=8, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first")
    p.add_argument("--global-batch", type=int, default=8,
                   help="samples per optimizer step, the same for every rank count")
    p.add_argument("--micro-batch", type=int, default=1, help="per-device batch")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--traj-len", type=int, default=24, help="frames per synthetic trajectory")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-eval", action="store_true")
    p.add_argument("--eval-episodes", type=int, default=16)
    p.add_argument("--eval-policy", default="trained",
                   help="trained (the checkpoint of the first SFT run), a preset, a checkpoint "
                        "folder, random, forward or expert")
    p.add_argument("--eval-max-steps", type=int, default=60)
    p.add_argument("--eval-width", type=int)
    p.add_argument("--eval-height", type=int)
    p.add_argument("--eval-set", dest="eval_sets", action="append", default=[],
                   metavar="KEY=VALUE", help="extra sim_bridge.evaluate --set, repeatable "
                                             "(e.g. sim.furniture=shapes, sim.render=false)")
    p.add_argument("--threads-per-rank", type=int,
                   help="OMP_NUM_THREADS of every rank (default: cores / largest rank count)")
    p.add_argument("--work-dir", default="")
    p.add_argument("--loss-rtol", type=float,
                   help="relative loss tolerance (default 1e-4 on CPU, 2e-2 on GPUs)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per torchrun command")
    p.add_argument("--reuse", action="store_true",
                   help="take rows of earlier runs in --work-dir with the same settings instead "
                        "of running them again (split a study over several calls)")
    p.add_argument("--no-write", action="store_true", help="print only, no results file")
    return p


def worker_parser() -> argparse.ArgumentParser:
    """Arguments of ``train-worker`` (one SFT rank, started by torchrun)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.multi_gpu train-worker")
    p.add_argument("--preset", required=True, choices=PRESETS)
    p.add_argument("--strategy", required=True, choices=STRATEGIES)
    p.add_argument("--device", required=True, choices=("cuda", "cpu"))
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--global-batch", type=int, required=True)
    p.add_argument("--micro-batch", type=int, default=1)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", required=True)
    p.add_argument("--save", help="save the trained model here (release layout)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Driver (default) or ``train-worker``; returns an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if argv and argv[0] == "train-worker":
        return train_worker(worker_parser().parse_args(argv[1:]))
    args = build_parser().parse_args(argv)
    import torch

    try:
        opts = StudyOptions(
            preset=args.preset, strategy=args.strategy,
            device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
            ranks=[int(x) for x in args.ranks.split(",") if x.strip()], steps=args.steps,
            warmup=args.warmup, global_batch=args.global_batch, micro_batch=args.micro_batch,
            seed=args.seed, traj_len=args.traj_len, train=not args.skip_train,
            eval=not args.skip_eval, eval_episodes=args.eval_episodes,
            eval_policy=args.eval_policy, eval_max_steps=args.eval_max_steps,
            eval_width=args.eval_width, eval_height=args.eval_height, eval_sets=args.eval_sets,
            threads_per_rank=args.threads_per_rank, work_dir=args.work_dir,
            loss_rtol=args.loss_rtol, timeout_s=args.timeout, reuse=args.reuse,
        )
        if opts.strategy.startswith("zero") and importlib.util.find_spec("deepspeed") is None:
            raise BenchmarkError(f"--strategy {opts.strategy} needs DeepSpeed: pip install -r "
                                 "requirements/training-gpu.txt (or use ddp / fsdp)")
        if opts.device == "cuda" and torch.cuda.device_count() < max(opts.ranks):
            raise BenchmarkError(f"{max(opts.ranks)} ranks asked but {torch.cuda.device_count()} "
                                 "GPUs visible; use --ranks or --device cpu")
        result = run_study(opts)
    except BenchmarkError as err:
        log.error("%s", err)
        return 1
    body = report(result, opts)
    print(body)  # the benchmark's output (also written to the results file)
    if not args.no_write:
        from benchmarks.common import write_result

        where = "CPU/gloo" if opts.device == "cpu" else f"{max(opts.ranks)}-GPU host"
        title = f"Multi-rank SFT and evaluation, {opts.preset} / {opts.strategy}, {where}"
        path = write_result("multi_gpu", title, body)
        log.info("results appended to %s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
