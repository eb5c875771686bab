r"""The small-model recipe: generated episodes -> expert data -> SFT -> DAgger -> SFT -> evaluation.

One command trains JanusVLN-small (``janus_core/presets/small.yaml``) from random weights with the
package's own pieces, and its two ablations beside it, then evaluates them::

    # train the three models (about 8 minutes on one H100 + 16 cores), artefacts to --out-dir
    python -m training.recipe --config config/recipe_small.yaml --stage train \
        --work-dir /tmp/recipe --out-dir outputs/recipe --time-budget-min 8.5
    # evaluate them and the baselines on 200 val_unseen episodes (unseen apartments)
    python -m training.recipe --config config/recipe_small.yaml --stage eval \
        --work-dir /tmp/recipe --out-dir outputs/recipe --time-budget-min 8 \
        --checkpoint full=models/janusvln-small --checkpoint novggt=DIR --checkpoint nohistory=DIR
    # everything at CPU scale (tests, smoke runs)
    python -m training.recipe --config config/recipe_tiny.yaml --stage all --work-dir /tmp/t

Stages of ``--stage train``:

1. **Episodes.** ``train_episodes`` R2R-format episodes in generated apartments
   (:mod:`sim_bridge.generate`), in ``train_gen_shards`` shards with generator seeds
   ``train_seed + k`` (apartment seeds ``(train_seed + k) * 100000 + i``), generated in parallel
   and merged into ``<work>/data/train/train.json.gz``. The evaluation's ``val_unseen`` split uses
   generator seed ``val_seed`` (apartments ``val_seed * 100000 + 10000 + i``); the recipe checks
   that no apartment is shared.
2. **Tokenizer.** Generated (:func:`janus_core.tokenizer.build_tokenizer`) with the training
   instructions as extra corpus.
3. **Expert data.** :func:`training.collect.expert_rollout` (the waypoint expert along the
   reference path, kept when it stops within 3 m) in worker processes; frames are resized by the
   model's preprocessing and kept in a :mod:`training.trajectories` store. With ``stop_radius``
   the frames of the final approach closer than that to the goal are labelled STOP
   (:func:`training.workers.stop_suffix`; the release labels only the last frame).
4. **SFT** (:mod:`training.traj_sft`) of every model variant on the same batches.
5. **DAgger** (``dagger_rounds``): each model drives ``dagger_episodes`` training episodes in
   lockstep waves (:class:`training.lockstep.LockstepPolicy`, simulators in the workers) under
   the release's rule (:mod:`training.dagger_rules`: the expert takes over after an error until
   the next waypoint); frames are labelled with the expert's action (``dagger_label: expert``,
   classic DAgger) or the executed one (``executed``, the release); then SFT continues on the
   expert data plus the model's own DAgger data.
6. **Save** each model in the release's checkpoint layout (bf16 safetensors) and as one tar in
   ``--out-dir``, with ``recipe_train.json`` (settings, seeds, counts, timings, losses;
   ``recipe_train_<variants>.json`` when only some variants are trained, e.g. one per GPU).
   If DAgger or the SFT after it fails, the models are saved as they are (the record's
   ``failed`` names the stage and the error) and the error is raised again.

``--stage eval`` evaluates the checkpoints and the random / forward-only / expert baselines with
:func:`sim_bridge.evaluate.evaluate` and the real policy (``janus_core.factory.build_policy``), one
episode per task over the workers, and writes ``eval_metrics.md`` / ``.json``.

With ``time_budget_min`` the stages share the wall-clock budget as hard limits: SFT steps are
fitted to it (and stop once it is spent), a DAgger wave ends at its deadline, mid-episode if need
be (the frames so far are kept by the same rule). Without it, ``sft.steps`` / ``sft2.steps`` fix
the work. A simulator failure in one episode (collection or DAgger) skips that episode.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import math
import shutil
import sys
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from janus_core.config import (
    JanusConfig,
    load_config,
    load_dataclass,
    parse_sets,
    resolve_device,
)
from janus_core.processor import JanusProcessor
from training.workers import WorkerPool, WorkerSettings, chunked, default_workers

log = logging.getLogger(__name__)

# variant name -> (model name suffix, config changes on top of the preset)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "full": ("", {}),
    "novggt": ("-novggt", {"use_vggt": False}),
    "nohistory": ("-nohistory", {"memory": {"num_history": 0}}),
}
BASELINES = ("random", "forward", "expert")


class RecipeError(RuntimeError):
    """The recipe cannot run as configured; the message names the setting or file."""


@dataclasses.dataclass
class RecipeConfig:
    """All settings of the recipe (``config/recipe_*.yaml``); see the module docstring."""

    preset: str = "small"
    model_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    models: list[str] = dataclasses.field(default_factory=lambda: ["full", "novggt", "nohistory"])
    seed: int = 0
    device: str = "auto"
    workers: int = 0  # 0: all CPUs but one
    time_budget_min: float = 0.0
    # episodes
    train_episodes: int = 2000
    train_gen_shards: int = 16
    train_seed: int = 1
    val_episodes: int = 200
    val_seed: int = 0
    generate: dict[str, Any] = dataclasses.field(default_factory=dict)  # GenerateConfig fields
    sim: dict[str, Any] = dataclasses.field(default_factory=lambda: {"furniture": "shapes"})
    # expert collection
    collect: dict[str, Any] = dataclasses.field(default_factory=dict)  # CollectConfig fields
    collect_chunk: int = 5
    stop_radius: float = 0.0  # label the final approach (closer than this, m) STOP; 0: off
    # SFT before and after DAgger (training.traj_sft.SFTSettings fields)
    sft: dict[str, Any] = dataclasses.field(default_factory=dict)
    sft2: dict[str, Any] = dataclasses.field(default_factory=dict)
    # DAgger
    dagger_rounds: int = 1
    dagger_episodes: int = 300
    dagger_batch: int = 96
    dagger_label: str = "expert"
    dagger_max_steps: int = 300
    dagger_rule: dict[str, Any] = dataclasses.field(default_factory=dict)  # DaggerRule fields
    # share of the time left after data collection (with time_budget_min)
    budget_sft: float = 0.5
    budget_dagger: float = 0.2
    reserve_s: float = 25.0
    # evaluation
    eval_max_steps: int = 500
    eval_device: str = "auto"
    eval_baselines: list[str] = dataclasses.field(default_factory=lambda: list(BASELINES))
    # held-out set of the campaign (training.campaign): expert trajectories and closed-loop
    # episodes in apartments of generator seed heldout_seed (never trained on, not val_unseen)
    heldout_episodes: int = 60
    heldout_seed: int = 90
    sr_episodes: int = 40
    cnn_baseline_steps: int = 600  # training.baselines' reference predictor; 0: skip
    state_dtype: str = "bfloat16"  # of the carried training state (training.train_state)

    def __post_init__(self):
        """Check values; the message names the field."""
        unknown = [m for m in self.models if m not in VARIANTS]
        if unknown:
            raise RecipeError(f"models: unknown variants {unknown}; known: {list(VARIANTS)}")
        if self.dagger_label not in ("expert", "executed"):
            raise RecipeError(f"dagger_label must be 'expert' or 'executed', got "
                              f"{self.dagger_label!r}")
        bad = [b for b in self.eval_baselines if b not in BASELINES]
        if bad:
            raise RecipeError(f"eval_baselines: unknown {bad}; known: {list(BASELINES)}")
        if self.train_seed <= self.val_seed:
            raise RecipeError("train_seed must be larger than val_seed (apartment seed ranges "
                              f"must not overlap), got {self.train_seed} <= {self.val_seed}")
        for name in ("train_episodes", "val_episodes", "train_gen_shards", "dagger_batch"):
            if getattr(self, name) < 1:
                raise RecipeError(f"{name} must be >= 1, got {getattr(self, name)}")


def load_recipe_config(path: str | Path | None, **overrides: Any) -> RecipeConfig:
    """A :class:`RecipeConfig` from YAML (or defaults), then non-None ``overrides``."""
    return load_dataclass(RecipeConfig, path, overrides, RecipeError, "recipe config")


# ---- models --------------------------------------------------------------------------------------


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in changes.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def variant_config(cfg: RecipeConfig, variant: str) -> JanusConfig:
    """The JanusConfig of ``variant`` (preset + ``model_overrides`` + the variant's changes)."""
    base = load_config(cfg.preset).to_dict()
    suffix, changes = VARIANTS[variant]
    data = _merge(_merge(base, cfg.model_overrides), changes)
    data["name"] = f"{data['name']}{suffix}"
    return JanusConfig.from_dict(data)


def sim_settings(cfg: RecipeConfig, model: JanusConfig) -> dict[str, Any]:
    """Simulator settings: the model's camera, plus ``cfg.sim`` (furniture, motion)."""
    im = model.image
    return {"backend": "embedded", "width": im.input_width, "height": im.input_height,
            "hfov_deg": im.hfov_deg, **cfg.sim}


def _geometry(model: JanusConfig) -> tuple[int, int, int, int, int]:
    im = model.image
    return (im.input_width, im.input_height, im.target_width, model.vggt.patch_size,
            model.qwen.spatial_merge_size)


class Clock:
    """Wall-clock budget of one stage (no budget: every deadline is None)."""

    def __init__(self, minutes: float):
        self.start = time.monotonic()
        self.end = self.start + 60 * minutes if minutes > 0 else None

    def elapsed(self) -> float:
        """Seconds since the stage began."""
        return time.monotonic() - self.start

    def left(self) -> float:
        """Seconds left (inf without a budget)."""
        return math.inf if self.end is None else self.end - time.monotonic()


# ---- episodes ------------------------------------------------------------------------------------


def generate_train(pool: WorkerPool, cfg: RecipeConfig, work: Path) -> Path:
    """Generate the training shards in parallel and merge them into one split."""
    from sim_bridge.episodes import find_gt_path, load_split, save_split

    out = work / "data" / "train" / "train.json.gz"
    if out.exists():
        log.info("training episodes: reusing %s", out)
        return out
    per = math.ceil(cfg.train_episodes / cfg.train_gen_shards)
    payloads = [
        {"out": str(work / "data" / "shards" / f"train_{k:02d}"), "split": "train",
         "count": per, "seed": cfg.train_seed + k,
         "overrides": {"episodes_per_scene": 5, **cfg.generate}}
        for k in range(cfg.train_gen_shards)
    ]
    results = pool.run_tasks("generate", payloads)
    episodes = []
    for res in results:
        episodes += load_split(res["split"], gt_path=find_gt_path(res["split"]))
    episodes = episodes[: cfg.train_episodes]
    renumbered = [dataclasses.replace(ep, episode_id=str(i + 1), trajectory_id=i + 1,
                                      instruction_tokens=None)
                  for i, ep in enumerate(episodes)]
    save_split(out, renumbered, gt_path=out.with_name("train_gt.json.gz"))
    log.info("training episodes: %d in %d apartments -> %s", len(renumbered),
             len({ep.scene_id for ep in renumbered}), out)
    return out


def generate_val(pool: WorkerPool, cfg: RecipeConfig, work: Path) -> Path:
    """The val_unseen split (generator seed ``val_seed``); reused when present."""
    out = work / "data" / "val"
    split = out / "val_unseen" / "val_unseen.json.gz"
    if not split.exists():
        pool.run_tasks("generate", [{"out": str(out), "split": "val_unseen",
                                     "count": cfg.val_episodes, "seed": cfg.val_seed,
                                     "overrides": {"episodes_per_scene": 5, **cfg.generate}}])
    return split


def scene_seed(scene_id: str) -> int:
    """The apartment seed of ``embedded:apt_<seed>``."""
    return int(str(scene_id).rsplit("_", 1)[-1])


def check_disjoint(train: Path, val: Path) -> dict[str, Any]:
    """Raise unless the two splits share no apartment; return the seed ranges."""
    from sim_bridge.episodes import load_split

    a = {scene_seed(ep.scene_id) for ep in load_split(train)}
    b = {scene_seed(ep.scene_id) for ep in load_split(val)}
    if a & b:
        raise RecipeError(f"{train} and {val} share apartments {sorted(a & b)[:5]}")
    return {"train_scenes": len(a), "train_seed_range": [min(a), max(a)],
            "val_scenes": len(b), "val_seed_range": [min(b), max(b)]}


# ---- data collection -----------------------------------------------------------------------------


def collect_expert(pool: WorkerPool, cfg: RecipeConfig, split: Path, work: Path,
                   deadline: float | None = None, tag: str = "expert") -> dict[str, Any]:
    """Expert trajectories of every episode of ``split`` into the store (tag ``tag``)."""
    from sim_bridge.episodes import episode_sort_key, load_split
    from training.trajectories import TrajectoryStore

    store_dir = work / "store"
    if (store_dir / "store.json").exists():
        have = TrajectoryStore(store_dir, tags=[tag])
        if len(have):
            log.info("expert data: reusing %d trajectories in %s", len(have), store_dir)
            return {"kept": len(have), "frames": have.num_frames, "reused": True}
    episodes = sorted(load_split(split), key=episode_sort_key)
    ids = [str(ep.episode_id) for ep in episodes]
    payloads = [{"split": str(split), "episode_ids": chunk, "tag": tag,
                 "options": {"expert": "reference", **cfg.collect},
                 "stop_radius": cfg.stop_radius}
                for chunk in chunked(ids, cfg.collect_chunk)]
    t0 = time.monotonic()
    results = pool.run_tasks("collect", payloads, deadline=deadline)
    items = [it for res in results if res for it in res]
    kept = [it for it in items if it["kept"]]
    stats = {"episodes": len(ids), "rolled_out": len(items), "kept": len(kept),
             "frames": sum(it["frames"] for it in kept), "seconds": time.monotonic() - t0}
    log.info("expert data (%s): %s", tag, stats)
    if not kept:
        raise RecipeError("expert collection kept no trajectory")
    return stats


def dagger_round(pool: WorkerPool, model: Any, processor: JanusProcessor, cfg: RecipeConfig,
                 split: Path, episode_ids: Sequence[str], tag: str,
                 deadline: float | None = None) -> dict[str, Any]:
    """One DAgger round of one model in lockstep waves; kept rollouts go to store tag ``tag``."""
    from sim_bridge.episodes import load_split
    from training.lockstep import LockstepPolicy

    dtype = torch.bfloat16 if model.device.type == "cuda" else torch.float32
    driver = copy.deepcopy(model).to(dtype=dtype).eval()
    engine = LockstepPolicy(driver, processor)
    lengths = {str(ep.episode_id): len(ep.gt_actions or []) for ep in load_split(split)}
    ordered = sorted(episode_ids, key=lambda e: lengths.get(str(e), 0))  # similar waves
    rule = {"keep_distance": 1.0e9, "keep_pl": 1.01, **cfg.dagger_rule}
    options = {"max_steps": cfg.dagger_max_steps, "force_stop_at": None,
               "label": cfg.dagger_label, "seed": cfg.seed, "stop_radius": cfg.stop_radius}
    summaries: list[dict[str, Any]] = []
    steps = 0
    t0 = time.monotonic()
    for wave in chunked(ordered, cfg.dagger_batch):
        if deadline is not None and time.monotonic() > deadline:
            log.warning("DAgger %s: deadline reached after %d episodes", tag, len(summaries))
            break
        owner = {slot: slot % pool.n for slot in range(len(wave))}
        reset = pool.call_many("dagger_reset", {
            w: {"split": str(split), "rule": rule, "options": options,
                "slots": [(s, wave[s]) for s in owner if owner[s] == w]}
            for w in sorted(set(owner.values()))})
        first = {s: v for res in reset.values() for s, v in res.items()}
        failed = [s for s in range(len(wave)) if "error" in first[s]]
        summaries += [first[s]["error"] for s in failed]
        if len(failed) == len(wave):
            continue
        blank = np.zeros_like(next(v["frame"] for v in first.values() if "frame" in v))
        frames = [first[s].get("frame", blank) for s in range(len(wave))]
        engine.reset([first[s].get("instruction", "") for s in range(len(wave))])
        active = [s not in failed for s in range(len(wave))]
        while any(active):
            if deadline is not None and time.monotonic() > deadline:  # end the wave where it is
                log.warning("DAgger %s: deadline reached mid-wave; %d episodes truncated", tag,
                            sum(active))
                results = pool.call_many("dagger_truncate", {
                    w: {"slots": [s for s in owner if owner[s] == w and active[s]], "tag": tag}
                    for w in sorted({owner[s] for s in owner if active[s]})})
                summaries += [item["summary"] for res in results.values()
                              for item in res.values()]
                break
            actions = engine.act(frames, active)
            steps += sum(active)
            payloads: dict[int, dict[str, Any]] = {}
            for s, on in enumerate(active):
                if on:
                    payloads.setdefault(owner[s], {"actions": {}, "tag": tag})
                    payloads[owner[s]]["actions"][s] = int(actions[s])
            results = pool.call_many("dagger_step", payloads)
            for res in results.values():
                for s, item in res.items():
                    if item["done"]:
                        active[s] = False
                        summaries.append(item["summary"])
                    else:
                        frames[s] = item["frame"]
    n = max(1, len(summaries))
    stats = {
        "episodes": len(summaries),
        "kept": sum(s["keep"] for s in summaries),
        "steps": steps,
        "model_success": sum(s["success"] and not s["model_failed"] for s in summaries) / n,
        "model_failed": sum(s["model_failed"] for s in summaries) / n,
        "model_step_share": sum(s["model_steps"] for s in summaries)
        / max(1, sum(s["steps"] for s in summaries)),
        "seconds": time.monotonic() - t0,
    }
    log.info("DAgger %s: %s", tag, stats)
    return stats


# ---- the train stage -----------------------------------------------------------------------------


def _sft_settings(values: dict[str, Any], budget_s: float, steps_key: str = "steps") -> Any:
    from training.traj_sft import SFTSettings

    data = dict(values)
    if budget_s > 0 and math.isfinite(budget_s):
        data["steps"] = 0
        data["time_budget_s"] = budget_s
    try:
        return SFTSettings(**data)
    except (TypeError, ValueError) as err:
        raise RecipeError(f"sft settings {data}: {err}") from err


def run_train(cfg: RecipeConfig, work: Path, out: Path) -> dict[str, Any]:
    """The train stage (module docstring); returns the record written to recipe_train.json."""
    from janus_core.model import build_model
    from janus_core.tokenizer import build_tokenizer
    from sim_bridge.episodes import load_split
    from training.traj_sft import FrameBank, ModelTrainer, save_trained, train_models
    from training.trajectories import TrajectoryStore

    clock = Clock(cfg.time_budget_min)
    device = resolve_device(cfg.device)
    configs = {v: variant_config(cfg, v) for v in cfg.models}
    base = configs[cfg.models[0]]
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"config": dataclasses.asdict(cfg), "device": str(device),
                              "models": {v: c.name for v, c in configs.items()}, "timings": {}}
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
    settings = WorkerSettings(sim=sim_settings(cfg, base), geometry=_geometry(base),
                              store_dir=str(work / "store"))
    n_workers = cfg.workers or default_workers()
    record["workers"] = n_workers
    with WorkerPool(n_workers, settings) as pool:
        split = generate_train(pool, cfg, work)
        record["timings"]["episodes_s"] = clock.elapsed()
        episodes = load_split(split)
        record["train_split"] = {"episodes": len(episodes),
                                 "scenes": len({ep.scene_id for ep in episodes}),
                                 "generator_seeds": [cfg.train_seed + k
                                                     for k in range(cfg.train_gen_shards)]}
        tokenizer = build_tokenizer(base, extra_corpus=[ep.instruction for ep in episodes])
        record["expert"] = collect_expert(pool, cfg, split, work)
        record["timings"]["collect_s"] = clock.elapsed()

        store = TrajectoryStore(work / "store", tags=["expert"])
        bank = FrameBank(store, store.records, device)
        left = clock.left() - cfg.reserve_s
        sft1 = _sft_settings(cfg.sft, cfg.budget_sft * left)
        dagger_share = cfg.budget_dagger * left / max(1, cfg.dagger_rounds * len(configs))
        trainers = []
        for v, c in configs.items():
            torch.manual_seed(cfg.seed)
            model = build_model(c, device=device, dtype=torch.float32)
            trainers.append(ModelTrainer(v, model, JanusProcessor(c, tokenizer), sft1))
        pools = {t.name: list(range(len(bank))) for t in trainers}
        record["sft"] = train_models(trainers, pools, bank, sft1)
        record["timings"]["sft_s"] = clock.elapsed()

        dagger_tags: dict[str, list[str]] = {t.name: [] for t in trainers}
        failure: tuple[str, Exception] | None = None
        try:
            run_dagger(pool, trainers, cfg, split, episodes, dagger_share, dagger_tags, record)
        except Exception as err:  # keep what SFT made (below), then re-raise
            failure = ("dagger", err)
        record["timings"]["dagger_s"] = clock.elapsed()

    del bank
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if failure is None:
        try:
            sft_on_dagger_data(trainers, cfg, work, device, dagger_tags, clock, record)
        except Exception as err:
            failure = ("sft2", err)
        record["timings"]["sft2_s"] = clock.elapsed()
    if failure is not None:
        stage, err = failure
        record["failed"] = f"{stage}: {type(err).__name__}: {err}"
        log.error("train stage failed in %s (%s: %s); saving the models as they are", stage,
                  type(err).__name__, err)

    record["checkpoints"] = {}
    for t in trainers:
        path = save_trained(t.model, tokenizer, work / "models" / t.model.cfg.name)
        tar = out / f"{t.model.cfg.name}.tar"
        with tarfile.open(tar, "w") as fh:
            fh.add(path, arcname=path.name)
        record["checkpoints"][t.name] = {"dir": str(path), "tar": str(tar),
                                         "bytes": (path / "model.safetensors").stat().st_size}
    record["timings"]["total_s"] = clock.elapsed()
    (out / train_record_name(cfg)).write_text(json.dumps(record, indent=2, default=str) + "\n")
    if failure is not None:
        raise failure[1]
    log.info("train stage done in %.0f s; checkpoints %s", clock.elapsed(),
             {k: v["tar"] for k, v in record["checkpoints"].items()})
    return record


def run_dagger(pool: WorkerPool, trainers: Sequence[Any], cfg: RecipeConfig, split: Path,
               episodes: Sequence[Any], share_s: float, dagger_tags: dict[str, list[str]],
               record: dict[str, Any]) -> None:
    """``dagger_rounds`` rounds of every model, ``share_s`` seconds each (inf: no deadline)."""
    record["dagger"] = {}
    rng = np.random.default_rng(cfg.seed)
    all_ids = [str(ep.episode_id) for ep in episodes]
    for k in range(1, cfg.dagger_rounds + 1):
        ids = [all_ids[i] for i in rng.permutation(len(all_ids))[: cfg.dagger_episodes]]
        for t in trainers:
            deadline = None if not math.isfinite(share_s) else time.monotonic() + share_s
            tag = f"dagger-{t.name}-r{k}"
            t.model.eval()
            try:
                record["dagger"][tag] = dagger_round(pool, t.model, t.processor, cfg, split,
                                                     ids, tag, deadline)
            finally:
                t.model.train()
            dagger_tags[t.name].append(tag)


def sft_on_dagger_data(trainers: Sequence[Any], cfg: RecipeConfig, work: Path,
                       device: torch.device, dagger_tags: dict[str, list[str]], clock: Clock,
                       record: dict[str, Any]) -> None:
    """SFT of every model on the expert data plus its own DAgger data, in the time left."""
    from training.traj_sft import FrameBank, train_models
    from training.trajectories import TrajectoryStore

    tags = ["expert"] + [tag for ts in dagger_tags.values() for tag in ts]
    store = TrajectoryStore(work / "store", tags=tags)
    bank = FrameBank(store, store.records, device)
    pools = {}
    for t in trainers:
        own = {"expert", *dagger_tags[t.name]}
        pools[t.name] = [i for i, r in enumerate(bank.records) if _tag(r) in own]
    sft2 = _sft_settings(cfg.sft2 or cfg.sft, clock.left() - cfg.reserve_s)
    for t in trainers:
        t.settings = sft2
        t.step_count = 0
    record["sft2"] = train_models(trainers, pools, bank, sft2)
    record["sft2"]["trajectories"] = {n: len(p) for n, p in pools.items()}


def train_record_name(cfg: RecipeConfig) -> str:
    """``recipe_train.json`` for all three variants, else ``recipe_train_<variants>.json``.

    (So that one process per variant, e.g. one per GPU, can share an output folder.)
    """
    if sorted(cfg.models) == sorted(VARIANTS):
        return "recipe_train.json"
    return f"recipe_train_{'-'.join(cfg.models)}.json"


def _tag(record: Any) -> str:
    return record.file.rsplit("-w", 1)[0]


# ---- the eval stage ------------------------------------------------------------------------------


def resolve_checkpoint(spec: str, work: Path) -> Path:
    """A checkpoint folder from a folder or a tar written by the train stage."""
    path = Path(spec)
    if path.is_dir():
        return path
    if path.is_file() and path.suffix == ".tar":
        dest = work / "checkpoints"
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(path) as fh:
            names = {Path(n).parts[0] for n in fh.getnames()}
            fh.extractall(dest, filter="data")
        if len(names) != 1:
            raise RecipeError(f"{path}: expected one checkpoint folder inside, got {names}")
        return dest / names.pop()
    raise RecipeError(f"checkpoint {spec} is neither a folder nor a .tar file")


def eval_config(cfg: RecipeConfig, base: JanusConfig, policy: str, split: Path,
                output_dir: Path) -> dict[str, Any]:
    """The EvalConfig fields of one evaluation run (without shard)."""
    sim = sim_settings(cfg, base)
    return {"policy": policy, "split": str(split), "output_dir": str(output_dir),
            "width": sim["width"], "height": sim["height"], "hfov_deg": sim["hfov_deg"],
            "max_steps": cfg.eval_max_steps, "progress": False, "seed": cfg.seed,
            "sim": {k: v for k, v in cfg.sim.items()
                    if k not in ("width", "height", "hfov_deg", "backend")}}


def run_eval(cfg: RecipeConfig, checkpoints: dict[str, str], work: Path,
             out: Path) -> dict[str, Any]:
    """The eval stage: every checkpoint and baseline on val_unseen; writes the metrics table."""
    from sim_bridge.evaluate import merge

    clock = Clock(cfg.time_budget_min)
    base = variant_config(cfg, cfg.models[0] if cfg.models else "full")
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    settings = WorkerSettings(sim=sim_settings(cfg, base), geometry=_geometry(base),
                              store_dir=str(work / "store"), eval_device=cfg.eval_device)
    runs: list[tuple[str, str, str | None]] = [(b, b, None) for b in cfg.eval_baselines]
    for name, spec in checkpoints.items():
        path = resolve_checkpoint(spec, work)
        runs.append((name, str(path), str(path)))
    with WorkerPool(cfg.workers or default_workers(), settings) as pool:
        split = generate_val(pool, cfg, work)
        train = work / "data" / "train" / "train.json.gz"
        scenes = check_disjoint(train, split) if train.exists() else {}
        from sim_bridge.episodes import load_split

        n = len(load_split(split))
        tasks = []
        for i in range(n):  # episode-major: a deadline leaves every run equally far
            for name, policy, ckpt in runs:
                tasks.append({"spec": name, "checkpoint": ckpt, "cfg": {
                    **eval_config(cfg, base, policy, split, work / "eval" / name),
                    "shard": i, "num_shards": n}})
        deadline = None if clock.end is None else clock.end - 15
        done = {"n": 0}

        def progress(_task: int, _result: Any) -> None:
            done["n"] += 1
            if done["n"] % 50 == 0:
                log.info("eval: %d of %d episode runs done (%.0f s)", done["n"], len(tasks),
                         clock.elapsed())

        pool.run_tasks("eval", tasks, deadline=deadline, on_result=progress)
    table: dict[str, Any] = {}
    for name, policy, _ in runs:
        data = merge(work / "eval" / name)
        table[name] = {"policy": policy, "finished": data["finished"],
                       "complete": data["complete"], **data["summary"]}
    record = {"split": str(split), "episodes": n, "scenes": scenes,
              "max_steps": cfg.eval_max_steps, "seconds": clock.elapsed(), "runs": table}
    (out / "eval_metrics.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    (out / "eval_metrics.md").write_text(metrics_markdown(record))
    with tarfile.open(out / "eval_runs.tar", "w") as fh:
        for name, _, _ in runs:
            for f in ("metrics.json", "episodes.jsonl", "run.json"):
                p = work / "eval" / name / f
                if p.exists():
                    fh.add(p, arcname=f"{name}/{f}")
    log.info("eval stage done in %.0f s\n%s", clock.elapsed(), metrics_markdown(record))
    return record


def metrics_markdown(record: dict[str, Any]) -> str:
    """The comparison table: one row per policy (NE, SR, OS, SPL, nDTW, SDTW, PL, steps)."""
    cols = [("ne", "NE (m)", False), ("sr", "SR", True), ("os", "OS", True),
            ("spl", "SPL", True), ("ndtw", "nDTW", True), ("sdtw", "SDTW", True),
            ("path_length", "PL (m)", False), ("steps", "Steps", False)]
    lines = [f"Evaluation on {record['episodes']} val_unseen episodes ({record['split']}), "
             f"max {record['max_steps']} steps", "",
             "| Policy | Episodes | " + " | ".join(c[1] for c in cols) + " |",
             "|---|---:|" + "---:|" * len(cols)]
    for name, run in record["runs"].items():
        cells = []
        for key, _, pct in cols:
            v = run["metrics"].get(key)
            cells.append("-" if v is None else (f"{100 * v:.1f}" if pct else f"{v:.2f}"))
        flag = "" if run["complete"] else " (incomplete)"
        lines.append(f"| {name} | {run['episodes']}{flag} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---- command line --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The recipe's argument parser."""
    p = argparse.ArgumentParser(prog="python -m training.recipe",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="recipe YAML (config/recipe_small.yaml, recipe_tiny.yaml)")
    p.add_argument("--stage", choices=("train", "eval", "all"), default="all")
    p.add_argument("--work-dir", default="outputs/recipe/work",
                   help="large intermediate files (episodes, frames, eval runs)")
    p.add_argument("--out-dir", default="outputs/recipe",
                   help="small artefacts: checkpoint tars, recipe_train.json, eval_metrics.*")
    p.add_argument("--time-budget-min", type=float, help="wall-clock budget of the stage")
    p.add_argument("--workers", type=int)
    p.add_argument("--device")
    p.add_argument("--models", help="comma-separated variants (full,novggt,nohistory)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="VARIANT=PATH",
                   help="eval stage: a checkpoint folder or tar per variant")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="any other recipe setting (YAML value), e.g. --set train_episodes=500")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``python -m training.recipe``."""
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides: dict[str, Any] = {
        "time_budget_min": args.time_budget_min, "workers": args.workers, "device": args.device,
        "models": args.models.split(",") if args.models else None,
    }
    try:
        overrides.update(parse_sets(RecipeConfig, args.sets, RecipeError))
        cfg = load_recipe_config(args.config, **overrides)
        work, out = Path(args.work_dir), Path(args.out_dir)
        record: dict[str, Any] = {}
        if args.stage in ("train", "all"):
            record = run_train(cfg, work, out)
        if args.stage in ("eval", "all"):
            checkpoints = {}
            for item in args.checkpoint:
                name, sep, path = item.partition("=")
                if not sep or name not in VARIANTS:
                    raise RecipeError(f"--checkpoint {item!r}: expected VARIANT=PATH with VARIANT "
                                      f"in {list(VARIANTS)}")
                checkpoints[name] = path
            if args.stage == "all" and not checkpoints:
                checkpoints = {v: c["dir"] for v, c in record["checkpoints"].items()}
            if not checkpoints:
                raise RecipeError("eval stage: give --checkpoint VARIANT=PATH (folder or tar)")
            run_eval(cfg, checkpoints, work, out)
    except RecipeError as err:
        log.error("%s", err)
        return 2
    return 0


def clean(path: Path) -> None:
    """Remove a work directory (the recipe never deletes on its own)."""
    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
