r"""Supervised fine-tuning of JanusVLN with the Hugging Face Trainer, as the release trains.

Recipe (reference digest §5.3-5.4), all of it in :class:`TrainConfig` and the YAML files in
``config/train_*.yaml``:

- one sample per trajectory step (:mod:`training.dataset`), loss on the assistant tokens only;
- trained: the LLM (embeddings, decoder, lm_head) at ``learning_rate`` (2e-5) and every parameter
  whose name contains ``merger`` (Qwen's ``visual.merger`` and the VGGT merger) at ``merger_lr``
  (1e-5); frozen: the Qwen ViT blocks and VGGT (each switchable);
- AdamW, weight decay 0.01 except on biases and norms, cosine schedule with 3 % warmup, 1 epoch,
  per-device batch 1 x gradient accumulation 8, bf16, gradient checkpointing;
- DeepSpeed ZeRO-2/3 (``config/deepspeed_zero{2,3}.json``) or FSDP (``config/fsdp.yaml``),
  any number of GPUs through ``torchrun``.

Checkpoints (``output_dir/checkpoint-<step>/`` every ``save_steps``, and the final model in
``output_dir``) are written in the release's layout by
:func:`janus_core.checkpoint.save_checkpoint`, so :func:`janus_core.checkpoint.load_model` and the
policy load them directly; the Trainer's optimizer, scheduler, RNG and ``trainer_state.json`` sit
beside the weights. ``resume: auto`` continues from the newest ``checkpoint-*`` in ``output_dir``.

Command line (``janus-vln train`` calls :func:`main`)::

    python -m training.sft --config config/train_tiny.yaml --data outputs/collect/train
    torchrun --nproc_per_node=8 -m training.sft --config config/train_full.yaml \
        --data data/trajectory_data/R2R data/trajectory_data/RxR
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

from janus_core.checkpoint import (
    CheckpointError,
    config_from_checkpoint,
    load_weights,
    map_key,
    save_checkpoint,
    weight_files,
)
from janus_core.compat import training_arguments as make_training_arguments
from janus_core.config import (
    JanusConfig,
    check_types,
    load_config,
    parse_sets,
    read_yaml_mapping,
)
from janus_core.console import ArgumentParser, add_verbose, fail, setup_logging
from janus_core.model import JanusVLNModel, build_model
from janus_core.processor import JanusProcessor
from janus_core.tokenizer import build_tokenizer, load_chat_template, load_tokenizer
from training.annotations import AnnotationError
from training.dataset import NavSFTDataset, SFTCollator, load_sources
from training.distributed import barrier, destroy_process_group, get_dist_info

log = logging.getLogger(__name__)

REPO_CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
# where a non-editable ``pip install`` (or colcon) puts the same files (setup.py data_files)
INSTALLED_CONFIG_DIR = Path(sys.prefix) / "share" / "janus_vln_ros" / "config"


class TrainConfigError(ValueError):
    """A training config is invalid; the message names the file and the field."""


@dataclasses.dataclass
class TrainConfig:
    """Everything one SFT run needs; loadable from YAML (see ``config/train_*.yaml``).

    ``model``: a preset name (``tiny``, ``full``: random weights), a JanusConfig YAML file, or a
    checkpoint folder in the release's layout (weights loaded). ``model_overrides``: nested
    JanusConfig fields applied on top (sizes must still fit a checkpoint's weights), e.g. a
    smaller camera frame for CPU runs or ``attn_implementation``; they are saved with the model.
    ``init_qwen`` / ``init_vggt``: pretrained Qwen2.5-VL-Instruct and VGGT-1B safetensors folders
    to start a preset from (the release's Base recipe); the merger stays randomly initialised.
    ``data``: annotation directories (``dir`` or ``dir%NN`` for a random NN %). ``deepspeed``:
    a DeepSpeed JSON; ``fsdp``: an FSDP YAML (``{fsdp: "full_shard auto_wrap", fsdp_config: ...}``).
    Relative config paths that do not exist are looked up in the repository's ``config/``.
    ``resume``: ``auto`` (newest ``checkpoint-*`` in ``output_dir``), ``none`` or a checkpoint
    path. ``model_dtype``: ``auto`` = bfloat16 under DeepSpeed with bf16 (the release), else
    float32 with bf16 autocast. ``training_args``: more ``TrainingArguments`` fields, passed as is.
    """

    model: str = "tiny"
    model_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    init_qwen: str | None = None
    init_vggt: str | None = None
    data: list[str] = dataclasses.field(default_factory=list)
    output_dir: str = "outputs/train"
    num_history: int | None = None
    verify_frames: bool = True
    data_seed: int = 42
    # what is trained (release: LLM + both mergers; ViT and VGGT frozen)
    train_llm: bool = True
    train_merger: bool = True
    train_vit: bool = False
    train_vggt: bool = False
    # optimisation (release values)
    learning_rate: float = 2e-5
    merger_lr: float = 1e-5
    vit_lr: float = 1e-6
    weight_decay: float = 0.01
    warmup_ratio: float = 0.03
    lr_scheduler_type: str = "cosine"
    optim: str = "adamw_torch"
    max_grad_norm: float = 1.0
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 1
    gradient_accumulation_steps: int = 8
    bf16: bool = True
    model_dtype: str = "auto"
    gradient_checkpointing: bool = True
    deepspeed: str | None = None
    fsdp: str | None = None
    # bookkeeping
    save_steps: int = 1000
    save_total_limit: int | None = 1
    logging_steps: int = 10
    seed: int = 42
    dataloader_num_workers: int = 8
    resume: str = "auto"
    use_cpu: bool = False
    report_to: list[str] = dataclasses.field(default_factory=lambda: ["none"])
    training_args: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        """Reject values outside their range, naming the field."""
        if isinstance(self.data, (str, Path)):
            self.data = [str(self.data)]
        if isinstance(self.report_to, str):
            self.report_to = [self.report_to]
        for name in ("learning_rate", "merger_lr", "vit_lr", "weight_decay", "warmup_ratio"):
            if getattr(self, name) < 0:
                raise TrainConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.per_device_train_batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise TrainConfigError("per_device_train_batch_size and gradient_accumulation_steps "
                                   "must be >= 1")
        if self.model_dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise TrainConfigError(
                f"model_dtype must be auto, float32, bfloat16 or float16, got {self.model_dtype!r}"
            )
        if self.deepspeed and self.fsdp:
            raise TrainConfigError("choose deepspeed or fsdp, not both")
        if not (self.train_llm or self.train_merger or self.train_vit or self.train_vggt):
            raise TrainConfigError("nothing to train: every train_* flag is false")


def config_from_dict(data: dict[str, Any], source: str = "train config") -> TrainConfig:
    """Build a :class:`TrainConfig` from a mapping; unknown keys are an error naming them."""
    if not isinstance(data, dict):
        raise TrainConfigError(f"{source}: expected a mapping at the top level")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise TrainConfigError(f"{source}: unknown keys {unknown}; known: {sorted(names)}")
    data = check_types(TrainConfig, data, source, TrainConfigError)
    try:
        return TrainConfig(**data)
    except TypeError as err:
        raise TrainConfigError(f"{source}: {err}") from err
    except TrainConfigError as err:
        raise TrainConfigError(f"{source}: {err}") from err


def load_train_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """Read a :class:`TrainConfig` from YAML, then apply ``overrides`` (None values ignored)."""
    path = resolve_config_path(path)
    data = read_yaml_mapping(path, TrainConfigError, "train config")
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}  # --set training_args.x=... adds to the file's
        elif value is not None:
            data[key] = value
    return config_from_dict(data, source=str(path))


def resolve_config_path(path: str | Path) -> Path:
    """``path`` if it exists, else the same name in the repository's (or installed) ``config/``."""
    path = Path(path)
    if path.exists():
        return path
    for folder in (REPO_CONFIG_DIR, INSTALLED_CONFIG_DIR):
        candidate = folder / path.name
        if not path.is_absolute() and candidate.exists():
            return candidate
    raise TrainConfigError(f"config file {path} does not exist")


# ---- model ---------------------------------------------------------------------------------------


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def is_checkpoint_dir(spec: str | Path) -> bool:
    """True when ``spec`` is a folder with a ``config.json`` (a checkpoint, release layout)."""
    return Path(spec).is_dir() and (Path(spec) / "config.json").exists()


def model_config(cfg: TrainConfig) -> JanusConfig:
    """The JanusConfig of ``cfg.model`` with ``cfg.model_overrides`` applied."""
    if is_checkpoint_dir(cfg.model):
        janus = config_from_checkpoint(cfg.model)
    else:
        janus = load_config(cfg.model)
    overrides = dict(cfg.model_overrides)
    if cfg.num_history is not None:  # saved with the model, so inference samples the same way
        overrides = _merge(overrides, {"memory": {"num_history": int(cfg.num_history)}})
    if overrides:
        janus = JanusConfig.from_dict(_merge(janus.to_dict(), overrides))
    return janus


def resolve_model_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype:
    """The dtype the model's parameters are created in (see :class:`TrainConfig`)."""
    if cfg.model_dtype != "auto":
        return getattr(torch, cfg.model_dtype)
    if cfg.deepspeed and cfg.bf16 and device.type == "cuda":
        return torch.bfloat16
    return torch.float32


def _safetensors_tensors(path: Path):
    from safetensors import safe_open

    files = weight_files(path) if path.is_dir() else [path]
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                yield key, f.get_tensor(key)


def init_from_pretrained(
    model: JanusVLNModel, qwen_dir: str | Path | None, vggt_path: str | Path | None
) -> None:
    """Fill ``model`` from a Qwen2.5-VL-Instruct folder and/or a VGGT-1B checkpoint (safetensors).

    Qwen keys map through :func:`janus_core.checkpoint.map_key`; VGGT-1B keys (``aggregator.*``,
    heads dropped) are read as ``vggt.*``. Every Qwen (resp. VGGT) parameter must be covered;
    the merger keeps its random initialisation, as at the start of the release's training.
    """
    own = model.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    for source, prefix, wanted in (
        (qwen_dir, "", "qwen."),
        (vggt_path, "vggt.", "vggt."),
    ):
        if source is None:
            continue
        source = Path(source)
        if not source.exists():
            raise CheckpointError(f"pretrained weights {source} do not exist")
        unexpected, shapes = [], []
        for key, tensor in _safetensors_tensors(source):
            target = map_key(prefix + key)
            if target is None:
                continue
            if not isinstance(target, str) or target not in own or not target.startswith(wanted):
                unexpected.append(key)
                continue
            if tuple(tensor.shape) != tuple(own[target].shape):
                shapes.append(f"{key}: {list(tensor.shape)} vs model {list(own[target].shape)}")
                continue
            loaded[target] = tensor
        missing = sorted(k for k in own if k.startswith(wanted) and k not in loaded
                         and not (wanted == "qwen." and k == "qwen.lm_head.weight"
                                  and model.cfg.qwen.tie_word_embeddings))
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing, e.g. {missing[:5]}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected, e.g. {unexpected[:5]}")
        if shapes:
            problems.append(f"{len(shapes)} shape mismatches, e.g. {shapes[:3]}")
        if problems:
            raise CheckpointError(f"{source} does not fit {model.cfg.name}: " + "; ".join(problems))
        log.info("initialised %s* from %s", wanted, source)
    result = model.load_state_dict(loaded, strict=False)
    if result.unexpected_keys:
        raise CheckpointError(f"unexpected keys while initialising: {result.unexpected_keys[:5]}")


def build_training_model(cfg: TrainConfig, device: torch.device) -> tuple[JanusVLNModel, Any]:
    """The model (weights per ``cfg.model`` / ``init_*``, trainable set applied) and tokenizer."""
    janus = model_config(cfg)
    dtype = resolve_model_dtype(cfg, device)
    if is_checkpoint_dir(cfg.model):
        model = build_model(janus, device=device, dtype=dtype, empty=True)
        load_weights(model, cfg.model)
        tokenizer = load_tokenizer(cfg.model, janus)
        tokenizer.chat_template = load_chat_template(cfg.model, tokenizer)
    else:
        model = build_model(janus, device=device, dtype=dtype)
        init_from_pretrained(model, cfg.init_qwen, cfg.init_vggt)
        if cfg.init_qwen:
            tokenizer = load_tokenizer(cfg.init_qwen, janus)
            tokenizer.chat_template = load_chat_template(cfg.init_qwen, tokenizer)
        else:
            tokenizer = build_tokenizer(janus)
    n = model.set_trainable(llm=cfg.train_llm, merger=cfg.train_merger, vit=cfg.train_vit,
                            vggt=cfg.train_vggt)
    total = sum(p.numel() for p in model.parameters())
    log.info("model %s: %.2f M trainable of %.2f M parameters (%s)", janus.name, n / 1e6,
             total / 1e6, dtype)
    return model, tokenizer


# ---- trainer -------------------------------------------------------------------------------------


def parameter_role(name: str) -> str:
    """Optimizer group of a parameter, by name as in the release: merger, vit or llm."""
    if "merger" in name:
        return "merger"
    if "visual" in name or name.startswith("vggt."):
        return "vit"
    return "llm"


class JanusTrainer(Trainer):
    """The HF Trainer with the release's parameter groups and checkpoints in the release layout.

    ``lrs`` maps a role (:func:`parameter_role`) to its learning rate. Weight decay follows the
    Trainer's rule (not on biases and norms).
    """

    def __init__(self, *args: Any, lrs: dict[str, float], janus_tokenizer: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lrs = dict(lrs)
        self.janus_tokenizer = janus_tokenizer

    def get_decay_parameter_names(self, model) -> list[str]:
        """Parameters that get weight decay: all but biases and the weights of norm layers.

        The Trainer's own rule misses norms that are not ``nn.LayerNorm`` and not named
        ``*norm*`` (the mergers' ``ln_q`` RMSNorms); any module whose class name contains
        ``Norm`` counts as a norm here.
        """
        names = set(super().get_decay_parameter_names(model))
        for module_name, module in model.named_modules():
            if "Norm" in type(module).__name__:
                for param_name, _ in module.named_parameters(recurse=False):
                    names.discard(f"{module_name}.{param_name}" if module_name else param_name)
        return sorted(n for n in names if not n.endswith("bias"))

    def create_optimizer(self):
        """AdamW (per ``args.optim``) over the trainable parameters in role x decay groups."""
        if self.optimizer is not None:
            return self.optimizer
        model = self.model
        decay = set(self.get_decay_parameter_names(model))
        groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            groups.setdefault((parameter_role(name), name in decay), []).append(param)
        param_groups = []
        for (role, decayed), params in sorted(groups.items()):
            param_groups.append({
                "params": params,
                "lr": self.lrs[role],
                "weight_decay": self.args.weight_decay if decayed else 0.0,
            })
            log.info("optimizer group %s%s: %d tensors, %.2f M params, lr %g", role,
                     "" if decayed else " (no decay)", len(params),
                     sum(p.numel() for p in params) / 1e6, self.lrs[role])
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        optimizer_kwargs.pop("lr", None)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Write the model in the release layout (+ tokenizer, chat template, training args)."""
        output_dir = Path(output_dir or self.args.output_dir)
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        if state_dict is not None:  # gathered by DeepSpeed / FSDP: the module holds only shards
            model = _model_from_state_dict(
                model.cfg, state_dict, getattr(self.args, "hf_deepspeed_config", None)
            )
        save_checkpoint(model, self.janus_tokenizer, model.cfg, output_dir)
        torch.save(self.args, output_dir / "training_args.bin")

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Load weights saved by :meth:`_save` (FSDP: the Trainer's own sharded files)."""
        if self.is_fsdp_enabled:
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        load_weights(target, resume_from_checkpoint)
        log.info("loaded weights from %s", resume_from_checkpoint)


@contextlib.contextmanager
def zero3_init_disabled(hf_deepspeed_config: Any = None) -> Iterator[None]:
    """Build models normally inside, even while a ZeRO-3 Trainer is alive.

    With a ZeRO-3 config registered, transformers constructs sub-models under
    ``deepspeed.zero.Init`` (partitioned at creation). ``hf_deepspeed_config`` (the Trainer's
    ``args.hf_deepspeed_config``) is registered again on the way out.
    """
    from transformers.integrations.deepspeed import (
        set_hf_deepspeed_config,
        unset_hf_deepspeed_config,
    )

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if hf_deepspeed_config is not None:
            set_hf_deepspeed_config(hf_deepspeed_config)


def _model_from_state_dict(cfg: JanusConfig, state_dict: dict[str, torch.Tensor],
                           hf_deepspeed_config: Any = None) -> JanusVLNModel:
    """A CPU model holding a gathered (ZeRO-3 / FSDP) full state dict, for saving."""
    dtype = next(iter(state_dict.values())).dtype
    with zero3_init_disabled(hf_deepspeed_config):
        model = build_model(cfg, device="cpu", dtype=dtype, empty=True)
    model.load_state_dict({k: v.cpu() for k, v in state_dict.items()}, strict=True, assign=True)
    return model


class LossLogCallback(TrainerCallback):
    """Logs the Trainer's log dicts through :mod:`logging` (rank 0 only) and keeps them."""

    def __init__(self):
        self.history: list[dict[str, Any]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        """Record and log one Trainer log entry."""
        if logs and state.is_world_process_zero:
            entry = {"step": state.global_step, **logs}
            self.history.append(entry)
            log.info("step %d: %s", state.global_step, json.dumps(logs, default=str))


def _fsdp_settings(path: str) -> dict[str, Any]:
    file = resolve_config_path(path)
    data = read_yaml_mapping(file, TrainConfigError, "FSDP config")
    if "fsdp" not in data:
        raise TrainConfigError(f"{file}: expected a mapping with 'fsdp' (and 'fsdp_config')")
    return {"fsdp": data["fsdp"], "fsdp_config": data.get("fsdp_config") or {}}


def training_arguments(cfg: TrainConfig) -> TrainingArguments:
    """The ``TrainingArguments`` of ``cfg`` (gradient checkpointing is switched on by us)."""
    kwargs: dict[str, Any] = dict(
        output_dir=cfg.output_dir,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_ratio=cfg.warmup_ratio,
        lr_scheduler_type=cfg.lr_scheduler_type,
        optim=cfg.optim,
        max_grad_norm=cfg.max_grad_norm,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        bf16=cfg.bf16,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        seed=cfg.seed,
        data_seed=cfg.data_seed,
        dataloader_num_workers=cfg.dataloader_num_workers,
        remove_unused_columns=False,
        report_to=cfg.report_to,
        use_cpu=cfg.use_cpu,
        ddp_find_unused_parameters=False,
        save_safetensors=True,
        disable_tqdm=not get_dist_info().is_main,
    )
    if cfg.deepspeed:
        kwargs["deepspeed"] = str(resolve_config_path(cfg.deepspeed))
    if cfg.fsdp:
        kwargs.update(_fsdp_settings(cfg.fsdp))
    kwargs.update(cfg.training_args)
    return make_training_arguments(**kwargs)


def checkpoint_is_complete(path: str | Path) -> bool:
    """True when a ``checkpoint-*`` folder was fully written.

    The Trainer writes ``trainer_state.json`` last, after the weights, optimizer, scheduler and
    RNG state; a job killed while saving leaves a folder without it (or with a torn one).
    """
    path = Path(path)
    try:
        json.loads((path / "trainer_state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (path / "config.json").exists()


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete ``checkpoint-<step>`` in ``output_dir`` (incomplete ones skipped)."""
    out = Path(output_dir)
    if not out.is_dir():
        return None
    steps = []
    for child in out.iterdir():
        name = child.name
        if child.is_dir() and name.startswith("checkpoint-") and name[11:].isdigit():
            steps.append((int(name[11:]), child))
    for _, child in sorted(steps, reverse=True):
        if checkpoint_is_complete(child):
            return str(child)
        log.warning("%s is incomplete (interrupted while saving?); not resuming from it", child)
    return None


def training_device(cfg: TrainConfig) -> torch.device:
    """Where this rank trains: its torchrun GPU (``LOCAL_RANK``), else the CPU."""
    if cfg.use_cpu or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", get_dist_info().local_rank % torch.cuda.device_count())


def resume_checkpoint(cfg: TrainConfig) -> str | None:
    """The checkpoint to resume from per ``cfg.resume`` (None: start fresh)."""
    if cfg.resume in ("none", "", None, False):
        return None
    if cfg.resume == "auto":
        last = last_complete_checkpoint(cfg.output_dir)
        if last:
            log.info("resuming from %s", last)
        return last
    path = Path(cfg.resume)
    if not (path / "trainer_state.json").exists():
        raise TrainConfigError(
            f"resume: {path} is not a Trainer checkpoint (no trainer_state.json)"
        )
    return str(path)


def build_trainer(
    cfg: TrainConfig,
    model: JanusVLNModel | None = None,
    tokenizer: Any = None,
    train_dataset: Any = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> JanusTrainer:
    """A ready :class:`JanusTrainer` for ``cfg`` (model and dataset built unless given).

    The model is built whole before the ``TrainingArguments``: with a ZeRO-3 config those switch
    transformers into ``deepspeed.zero.Init`` construction, which partitions parameters while
    they are created and breaks weight initialisation and our checkpoint loading. DeepSpeed
    partitions the finished model when the Trainer starts.
    """
    if model is None:
        set_seed(cfg.seed)  # random initialisation (whole preset, new merger) is reproducible
        with zero3_init_disabled():  # a previous ZeRO-3 run in this process may have set it
            model, tokenizer = build_training_model(cfg, training_device(cfg))
    elif tokenizer is None:
        tokenizer = build_tokenizer(model.cfg)
    args = training_arguments(cfg)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if train_dataset is None:
        if not cfg.data:
            raise TrainConfigError("no training data: set data (--data) to annotation folders")
        processor = JanusProcessor(model.cfg, tokenizer)
        sets = load_sources(cfg.data, verify_frames=cfg.verify_frames, seed=cfg.data_seed)
        train_dataset = NavSFTDataset(sets, processor)  # cfg.memory.num_history
        log.info("training data: %d samples from %d trajectories", len(train_dataset),
                 sum(len(s) for s in sets))
    return JanusTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        data_collator=SFTCollator(model.cfg.qwen.pad_token_id),
        callbacks=list(callbacks),
        lrs={"llm": cfg.learning_rate, "merger": cfg.merger_lr, "vit": cfg.vit_lr},
        janus_tokenizer=tokenizer,
    )


def run_sft(cfg: TrainConfig, callbacks: Sequence[TrainerCallback] = ()) -> Path:
    """Train per ``cfg`` (resuming if asked), save the final model; returns ``output_dir``."""
    trainer = build_trainer(cfg, callbacks=callbacks)
    resume = resume_checkpoint(cfg)
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(cfg.output_dir)
    trainer.save_state()
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()  # training is over: later models (DAgger's policy) build normally
    out = Path(cfg.output_dir)
    log.info("final model in %s (step %d)", out, trainer.state.global_step)
    return out


# ---- command line --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``janus-vln train`` argument parser."""
    p = ArgumentParser(prog="janus-vln train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="train_tiny.yaml",
                   help="training YAML (default: config/train_tiny.yaml)")
    p.add_argument("--data", nargs="+", help="annotation folders (dir or dir%%NN)")
    p.add_argument("--model", help="preset, JanusConfig YAML or checkpoint folder")
    p.add_argument("--output-dir")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--resume", help="auto | none | a checkpoint folder")
    p.add_argument("--deepspeed", help="DeepSpeed JSON (e.g. config/deepspeed_zero3.json)")
    p.add_argument("--fsdp", help="FSDP YAML (e.g. config/fsdp.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any TrainConfig field (YAML value), repeatable; "
                   "training_args.NAME=VALUE sets one TrainingArguments field")
    return add_verbose(p)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``janus-vln train`` / ``python -m training.sft``."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    overrides: dict[str, Any] = {
        "data": args.data, "model": args.model, "output_dir": args.output_dir,
        "max_steps": args.max_steps, "resume": args.resume, "deepspeed": args.deepspeed,
        "fsdp": args.fsdp,
    }
    try:
        overrides.update(parse_sets(TrainConfig, args.set, TrainConfigError,
                                    nested=("training_args",)))
        cfg = load_train_config(args.config, **overrides)
        info = get_dist_info()
        if not info.is_main:
            logging.getLogger().setLevel(logging.WARNING)
        os.makedirs(cfg.output_dir, exist_ok=True)
        run_sft(cfg)
        # the Trainer made the process group: leave it together before exiting; left to
        # interpreter shutdown, gloo aborted a rank ("terminate called without an active
        # exception", SIGABRT) after the final save
        barrier(info)
        destroy_process_group(created=True)
    except (TrainConfigError, AnnotationError, CheckpointError) as err:
        return fail("train", err)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise SystemExit(main())
