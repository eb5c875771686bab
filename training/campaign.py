r"""Training that accumulates: one model, trained across device calls and sessions.

A device call lasts at most ten minutes and may be refused, so JanusVLN-small is trained as a
chain of calls. Each call of ::

    python -m training.campaign --config config/recipe_small.yaml \
        --state models/janusvln-small/campaign/train_state --work-dir /tmp/campaign --out-dir OUT \
        --time-budget-min 8.5

1. makes the data (deterministic: the recipe's generated training episodes and expert
   trajectories, and a **held-out** split of ``heldout_episodes`` episodes in apartments of
   generator seed ``heldout_seed``, never trained on), reused when the work dir has it;
2. builds the ``full`` model and continues from ``--state`` when it holds a training state
   (:mod:`training.train_state`: weights, AdamW moments, step, schedule, data order, RNG),
   else starts from random weights;
3. trains until the budget (minus ``reserve_s`` for what follows) is spent or the schedule's
   horizon (``sft.steps``) is reached, with the learning rate a function of the global step, so
   a chain of calls follows one warmup + cosine schedule;
4. scores the model on the held-out trajectories (:mod:`training.heldout`: per-step accuracy
   against the majority share, STOP recall, early-STOP rate; the majority and previous-action
   baselines beside it) and drives it closed-loop on the first ``sr_episodes`` held-out episodes
   (the real policy, :mod:`sim_bridge.evaluate`): SR, SPL;
5. writes the new state to ``OUT/state`` (shards under 16 MB, the device's output limit) with
   ``curve.jsonl`` (one row per call: training minutes so far, steps, held-out scores, SR, SPL,
   throughput, GPU busy fraction), and the checkpoint in the release layout to
   ``<work>/models/``.

The next call passes ``--state OUT/state`` of the last one (carried back to the device). At the
end of a session ``python -m training.campaign export --state OUT/state --out-dir
models/janusvln-small/campaign`` writes the checkpoint and the committed state; a checkpoint that
beats the forward-only baseline is exported to ``models/janusvln-small`` itself, where
``janus-vln demo`` runs it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from janus_core.config import parse_sets, resolve_device
from janus_core.processor import JanusProcessor
from training.heldout import (
    HeldoutScore,
    majority_baseline,
    previous_action_baseline,
    score_actions,
)
from training.recipe import (
    Clock,
    RecipeConfig,
    RecipeError,
    _geometry,
    _sft_settings,
    check_disjoint,
    collect_expert,
    eval_config,
    generate_train,
    load_recipe_config,
    sim_settings,
    variant_config,
)
from training.train_state import StateError, has_state, load_state, read_meta, save_state
from training.workers import WorkerPool, WorkerSettings, default_workers

log = logging.getLogger(__name__)

CURVE = "curve.jsonl"


def generate_heldout(pool: WorkerPool, cfg: RecipeConfig, work: Path) -> Path:
    """The held-out split (generator seed ``heldout_seed``, unseen apartments); reused."""
    out = work / "data" / "heldout"
    split = out / "val_unseen" / "val_unseen.json.gz"
    if not split.exists():
        pool.run_tasks("generate", [{"out": str(out), "split": "val_unseen",
                                     "count": cfg.heldout_episodes, "seed": cfg.heldout_seed,
                                     "overrides": {"episodes_per_scene": 5, **cfg.generate}}])
    return split


def sorted_records(store: Any) -> list[Any]:
    """A store's records in name order (the worker processes write them in any order)."""
    return sorted(store.records, key=lambda r: r.name)


def heldout_scores(trainer: Any, bank: Any) -> dict[str, Any]:
    """The model and the two simple baselines on every step of the held-out bank."""
    labels = [r.labels for r in bank.records]
    preds = [trainer.predict(bank, i) for i in range(len(bank))]
    return {"model": score_actions(labels, preds).to_json(),
            "previous_action": score_actions(labels, previous_action_baseline(labels)).to_json(),
            "majority": score_actions(labels, majority_baseline(labels)).to_json()}


def cnn_baseline(train_bank: Any, held_bank: Any, work: Path, steps: int) -> dict[str, Any]:
    """The CNN + words reference predictor's held-out score (computed once per work dir)."""
    from training.baselines import predict_cnn, train_cnn

    cache = work / "cnn_baseline.json"
    if cache.exists():
        return json.loads(cache.read_text())
    t0 = time.perf_counter()
    model, vocab = train_cnn(train_bank, steps=steps)
    labels = [r.labels for r in held_bank.records]
    score = score_actions(labels, predict_cnn(model, vocab, held_bank)).to_json()
    score["train_steps"] = steps
    score["seconds"] = round(time.perf_counter() - t0, 1)
    cache.write_text(json.dumps(score) + "\n")
    return score


def closed_loop(pool: WorkerPool, cfg: RecipeConfig, checkpoint: Path, split: Path,
                out: Path, deadline: float | None) -> dict[str, Any]:
    """Drive the checkpoint on the first ``sr_episodes`` episodes of ``split``; the summary."""
    from sim_bridge.evaluate import merge

    base = variant_config(cfg, "full")
    n = cfg.sr_episodes
    tasks = [{"spec": "full", "checkpoint": str(checkpoint), "cfg": {
        **eval_config(cfg, base, str(checkpoint), split, out), "limit": n, "shard": i,
        "num_shards": n}} for i in range(n)]
    pool.run_tasks("eval", tasks, deadline=deadline)
    data = merge(out)
    return {"finished": data["finished"], "expected": data["expected"],
            "complete": data["complete"], **data["summary"]}


def profile_busy(trainer: Any, bank: Any, pool_ids: Sequence[int], rng: np.random.Generator,
                 k: int, steps: int = 4) -> dict[str, float]:
    """Wall time per step and the share of it the GPU is busy, over ``steps``.

    Busy: the union of the CUDA activity intervals (kernels, copies, sets) the profiler saw.

    These steps are real training steps (they advance the state like any other).
    """
    from torch.profiler import ProfilerActivity, profile

    if trainer.model.device.type != "cuda":
        return {}
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            chosen = [int(pool_ids[i]) for i in rng.choice(len(pool_ids), size=k, replace=False)]
            trainer.train_step(bank, chosen, rng)
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    cuda = torch.autograd.DeviceType.CUDA
    spans = sorted((_ns(e, "start"), _ns(e, "end"))
                   for e in prof.profiler.kineto_results.events() if e.device_type() == cuda)
    busy_ns, end = 0, None  # the union of kernel / memcpy / memset intervals
    for lo, hi in spans:
        if end is None or lo > end:
            busy_ns += hi - lo
            end = hi
        elif hi > end:
            busy_ns += hi - end
            end = hi
    return {"profiled_steps": steps, "wall_s_per_step": wall / steps,
            "gpu_busy_fraction": busy_ns / 1e9 / wall}


def _ns(event: Any, which: str) -> int:
    getter = getattr(event, f"{which}_ns", None)  # older kineto events have only *_us
    return int(getter()) if getter is not None else int(getattr(event, f"{which}_us")() * 1000)


def run_call(cfg: RecipeConfig, state: Path | None, work: Path, out: Path) -> dict[str, Any]:
    """One call of the campaign (module docstring); returns the curve row it appended."""
    from janus_core.model import build_model
    from janus_core.tokenizer import build_tokenizer, load_tokenizer
    from sim_bridge.episodes import load_split
    from training.traj_sft import FrameBank, ModelTrainer, save_trained
    from training.trajectories import TrajectoryStore

    clock = Clock(cfg.time_budget_min)
    device = resolve_device(cfg.device)
    mcfg = variant_config(cfg, "full")
    work.mkdir(parents=True, exist_ok=True)
    state_out = out / "state"
    row: dict[str, Any] = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                           "device": str(device), "torch": torch.__version__}
    if device.type == "cuda":
        row["gpu"] = torch.cuda.get_device_name(device)
    resuming = state is not None and has_state(state)
    settings = WorkerSettings(sim=sim_settings(cfg, mcfg), geometry=_geometry(mcfg),
                              store_dir=str(work / "store"), eval_device=cfg.eval_device)
    with WorkerPool(cfg.workers or default_workers(), settings) as pool:
        split = generate_train(pool, cfg, work)
        heldout = generate_heldout(pool, cfg, work)
        row["scenes"] = check_disjoint(split, heldout)
        collect_expert(pool, cfg, split, work, tag="expert")
        collect_expert(pool, cfg, heldout, work, tag="heldout")
        row["data_s"] = round(clock.elapsed(), 1)
        if resuming:
            read_meta(state)
            tokenizer = load_tokenizer(state / "tokenizer")
        else:
            episodes = load_split(split)
            tokenizer = build_tokenizer(mcfg, extra_corpus=[ep.instruction for ep in episodes])
        store = TrajectoryStore(work / "store", tags=["expert"])
        train_bank = FrameBank(store, sorted_records(store), device)
        hstore = TrajectoryStore(work / "store", tags=["heldout"])
        held_bank = FrameBank(hstore, sorted_records(hstore), device)

        sft = _sft_settings(cfg.sft, 0.0)
        torch.manual_seed(cfg.seed)
        model = build_model(mcfg, device=device, dtype=torch.float32)
        trainer = ModelTrainer("full", model, JanusProcessor(mcfg, tokenizer), sft)
        trainer.total_steps = sft.steps
        rng = np.random.default_rng(sft.seed)
        curve: list[dict[str, Any]] = []
        if resuming:
            rng, _ = load_state(trainer, state)
            if (state / CURVE).exists():
                curve = [json.loads(x) for x in (state / CURVE).read_text().splitlines() if x]
        if cfg.cnn_baseline_steps > 0:
            row["cnn_baseline"] = cnn_baseline(train_bank, held_bank, work,
                                               cfg.cnn_baseline_steps)
            log.info("CNN + words baseline: held-out accuracy %.3f, early-STOP rate %.4f",
                     row["cnn_baseline"]["accuracy"], row["cnn_baseline"]["early_stop_rate"])
        first_step = trainer.step_count
        pool_ids = list(range(len(train_bank)))
        k = min(sft.trajectories_per_step, len(pool_ids))

        # train until the budget (less the reserve) is spent or the schedule ends
        t0 = time.perf_counter()
        running: list[dict[str, float]] = []
        while trainer.step_count < trainer.total_steps and clock.left() > cfg.reserve_s:
            if trainer.step_count == first_step + 20:  # warmed up: measure how busy the GPU is
                row["profile"] = profile_busy(trainer, train_bank, pool_ids, rng, k)
            chosen = [int(pool_ids[i]) for i in rng.choice(len(pool_ids), size=k, replace=False)]
            running.append(trainer.train_step(train_bank, chosen, rng))
            if trainer.step_count % sft.log_every == 0:
                mean = {key: float(np.nanmean([r[key] for r in running])) for key in running[0]}
                log.info("step %d/%d: loss %.4f acc %.3f stop_acc %.3f aux %.3f lr %.2e",
                         trainer.step_count, trainer.total_steps, mean["loss"], mean["acc"],
                         mean["stop_acc"], mean["aux"], mean["lr"])
                row.setdefault("train_log", []).append({"step": trainer.step_count, **{
                    key: round(v, 4) for key, v in mean.items() if key in
                    ("loss", "acc", "stop_acc", "aux", "lr")}})
                running = []
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_s = time.perf_counter() - t0
        steps = trainer.step_count - first_step
        row.update(steps_from=first_step, steps_to=trainer.step_count, train_s=round(train_s, 1),
                   samples_per_s=round(steps * k * sft.samples_per_trajectory
                                       / max(train_s, 1e-9), 1))
        row["train_minutes_total"] = round(
            (curve[-1]["train_minutes_total"] if curve else 0.0) + train_s / 60, 2)

        dtype = getattr(torch, cfg.state_dtype)
        save_state(trainer, rng, state_out, extra={"recipe": cfg.preset}, weight_dtype=dtype,
                   moment_dtype=dtype)
        scores = heldout_scores(trainer, held_bank)
        row["heldout"] = scores
        log.info("%s", HeldoutScore(**scores["model"]).line())
        ckpt = save_trained(trainer.model, tokenizer, work / "models" / mcfg.name)
        del train_bank
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if cfg.sr_episodes > 0:
            deadline = None if clock.end is None else clock.end - 10
            try:  # the state is saved: a failing evaluation costs this row's SR, nothing else
                row["closed_loop"] = closed_loop(
                    pool, cfg, ckpt, heldout, work / "eval" / f"heldout-step{trainer.step_count}",
                    deadline)
                log.info("closed loop on %d held-out episodes: %s", cfg.sr_episodes,
                         {k2: row["closed_loop"]["metrics"].get(k2) for k2 in ("sr", "spl", "ne")})
            except Exception as err:  # noqa: BLE001 - recorded in the curve, then go on
                log.error("closed loop failed (%s: %s); the curve row has no SR",
                          type(err).__name__, err)
                row["closed_loop"] = {"error": f"{type(err).__name__}: {err}"}
    row["call_s"] = round(clock.elapsed(), 1)
    curve.append(row)
    (state_out / CURVE).write_text("".join(json.dumps(r, default=str) + "\n" for r in curve))
    return row


def export(state: Path, out: Path, cfg: RecipeConfig) -> Path:
    """Write the checkpoint (release layout, bf16) of ``state`` and the state to go on from.

    ``out/train_state`` keeps the optimizer, step, RNG, tokenizer and curve (the weights are the
    checkpoint's), so a later session continues with ``--state out/train_state``.
    """
    from janus_core.model import build_model
    from janus_core.tokenizer import load_tokenizer
    from training.traj_sft import ModelTrainer, save_trained

    mcfg = variant_config(cfg, "full")
    read_meta(state)  # a missing or broken state fails here, naming the file
    tokenizer = load_tokenizer(state / "tokenizer")
    model = build_model(mcfg, device="cpu", dtype=torch.float32)
    trainer = ModelTrainer("full", model, JanusProcessor(mcfg, tokenizer),
                           _sft_settings(cfg.sft, 0.0))
    rng, extra = load_state(trainer, state)
    path = save_trained(trainer.model, tokenizer, out)
    kept = out / "train_state"
    if kept.resolve() != Path(state).resolve():
        save_state(trainer, rng, kept, extra=extra, moment_dtype=torch.bfloat16,
                   weights_in_checkpoint=True)
        if (state / CURVE).exists():
            shutil.copy(state / CURVE, kept / CURVE)
    return path


def build_parser() -> argparse.ArgumentParser:
    """The campaign's argument parser."""
    p = argparse.ArgumentParser(prog="python -m training.campaign",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("command", nargs="?", choices=("train", "export"), default="train")
    p.add_argument("--config", default="config/recipe_small.yaml")
    p.add_argument("--state", help="continue from this training state (folder); absent: fresh")
    p.add_argument("--work-dir", default="outputs/campaign/work")
    p.add_argument("--out-dir", default="outputs/campaign",
                   help="train: the new state goes to OUT/state; export: the checkpoint folder")
    p.add_argument("--time-budget-min", type=float)
    p.add_argument("--workers", type=int)
    p.add_argument("--device")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``python -m training.campaign``."""
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides: dict[str, Any] = {"time_budget_min": args.time_budget_min,
                                 "workers": args.workers, "device": args.device}
    try:
        overrides.update(parse_sets(RecipeConfig, args.sets, RecipeError))
        cfg = load_recipe_config(args.config, **overrides)
        if args.command == "export":
            if not args.state:
                raise RecipeError("export: give --state DIR")
            path = export(Path(args.state), Path(args.out_dir), cfg)
            log.info("exported %s", path)
            return 0
        state = Path(args.state) if args.state else None
        row = run_call(cfg, state, Path(args.work_dir), Path(args.out_dir))
        log.info("call done: %s", json.dumps({k: row.get(k) for k in (
            "steps_to", "train_minutes_total", "samples_per_s", "profile")}, default=str))
    except (RecipeError, StateError) as err:
        log.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
