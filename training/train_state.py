"""A training state that survives the end of a process: save it, carry it, continue exactly.

GPU time comes in device calls of at most ten minutes, so training is a chain of calls, each
continuing from the state the previous one left. The state of one :class:`ModelTrainer` is

- the model's and the auxiliary head's weights (``weight_dtype``),
- AdamW's moments (``exp_avg``, ``exp_avg_sq``; ``moment_dtype``) and step counts,
- the step count (the learning-rate schedule is a function of it and of ``total_steps``),
- the batch sampler's ``numpy`` generator state and torch's RNG state,
- the tokenizer the model was trained with (it is generated from the training instructions).

It is written as safetensors shards of at most ``shard_bytes`` each (the device's output folder
takes files up to 16 MiB) plus ``state.json``. In float32 (the default) a continued run is
bit-identical to an uninterrupted one (tested). A bfloat16 state (JanusVLN-small: 44 MB instead of
88, small enough to carry to the device with the wheels and to commit) rounds the weights and
moments once per save, a relative change below 0.4 % per value.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)

STATE_JSON = "state.json"
SHARD_PATTERN = "state-{:05d}-of-{:05d}.safetensors"
FORMAT = 1
RUNTIME_KEYS = ("streaming", "mode", "dtype", "device", "attn_implementation", "max_new_tokens",
                "max_steps")  # JanusConfig fields that do not change the weights


class StateError(RuntimeError):
    """A saved training state is missing, incomplete or does not fit the model."""


def has_state(path: str | Path) -> bool:
    """True when ``path`` holds a saved training state."""
    return (Path(path) / STATE_JSON).is_file()


def _tensors(trainer: Any, weight_dtype: torch.dtype, moment_dtype: torch.dtype,
             weights: bool) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, p in trainer.model.state_dict().items() if weights else ():
        out[f"model.{name}"] = p.detach().to("cpu", weight_dtype).contiguous()
    if trainer.aux_head is not None:
        for name, p in trainer.aux_head.state_dict().items():
            out[f"aux.{name}"] = p.detach().to("cpu", weight_dtype).contiguous()
    for i, st in trainer.optimizer.state_dict()["state"].items():
        for key, value in st.items():
            if not torch.is_tensor(value):
                continue
            dtype = moment_dtype if key.startswith("exp_avg") else torch.float32
            out[f"optim.{i}.{key}"] = value.detach().to("cpu", dtype).contiguous()
    return out


def save_state(trainer: Any, rng: np.random.Generator, path: str | Path,
               extra: dict[str, Any] | None = None,
               weight_dtype: torch.dtype = torch.float32,
               moment_dtype: torch.dtype = torch.float32,
               shard_bytes: int = 15_000_000, weights_in_checkpoint: bool = False) -> Path:
    """Write ``trainer``'s full state (module docstring) and ``extra`` (JSON) to ``path``.

    ``weights_in_checkpoint``: leave the model's weights out; they are read back from the
    release-layout checkpoint in ``path``'s parent folder (the shipped model, whose bf16 weights
    would otherwise be committed twice).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("state-*-of-*.safetensors"):
        old.unlink()
    tensors = _tensors(trainer, weight_dtype, moment_dtype, not weights_in_checkpoint)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    files = []
    for k, shard in enumerate(shards, 1):
        name = SHARD_PATTERN.format(k, len(shards))
        save_file(shard, str(path / name))
        files.append(name)
    opt = trainer.optimizer.state_dict()
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": g["params"]}
              for g in opt["param_groups"]]
    meta = {
        "format": FORMAT,
        "model": trainer.model.cfg.name,
        "config": trainer.model.cfg.to_dict(),
        "step": trainer.step_count,
        "total_steps": trainer.total_steps,
        "weight_dtype": str(weight_dtype).removeprefix("torch."),
        "moment_dtype": str(moment_dtype).removeprefix("torch."),
        "weights": "checkpoint" if weights_in_checkpoint else "state",
        "param_groups": groups,
        "optim_scalars": {str(i): {k: v for k, v in st.items() if not torch.is_tensor(v)}
                          for i, st in opt["state"].items()},
        "rng": rng.bit_generator.state,
        "torch_rng": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
        "files": files,
        "extra": extra or {},
    }
    (path / STATE_JSON).write_text(json.dumps(meta, indent=1, default=_jsonable) + "\n")
    trainer.processor.tokenizer.save_pretrained(str(path / "tokenizer"))
    log.info("training state: step %d -> %s (%d file(s), %.1f MB)", trainer.step_count, path,
             len(files), sum((path / f).stat().st_size for f in files) / 1e6)
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def read_meta(path: str | Path) -> dict[str, Any]:
    """``state.json`` of a saved state (StateError when missing or unreadable)."""
    file = Path(path) / STATE_JSON
    try:
        meta = json.loads(file.read_text())
    except FileNotFoundError:
        raise StateError(f"{path}: no training state ({STATE_JSON} missing)") from None
    except json.JSONDecodeError as err:
        raise StateError(f"{file}: not valid JSON ({err})") from None
    if meta.get("format") != FORMAT:
        raise StateError(f"{file}: format {meta.get('format')!r}, expected {FORMAT}")
    return meta


def load_tensors(path: str | Path, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Every tensor of a saved state (StateError when a shard is missing)."""
    tensors: dict[str, torch.Tensor] = {}
    for name in meta["files"]:
        file = Path(path) / name
        if not file.is_file():
            raise StateError(f"{path}: shard {name} is missing")
        tensors.update(load_file(str(file)))
    return tensors


def load_state(trainer: Any, path: str | Path) -> tuple[np.random.Generator, dict[str, Any]]:
    """Restore ``trainer`` from ``path``; returns the batch sampler's generator and ``extra``.

    The model must have the saved model's configuration (a mismatch names the first field or
    tensor that differs). The trainer's settings (learning rate, schedule) stay as configured.
    """
    meta = read_meta(path)
    saved, now = meta["config"], trainer.model.cfg.to_dict()
    # inference-only settings (how the policy runs) may change between calls; the rest may not
    diff = sorted(k for k in set(saved) | set(now)
                  if k not in RUNTIME_KEYS and saved.get(k) != now.get(k))
    if diff:
        raise StateError(f"{path}: saved for another model configuration (differs in {diff})")
    tensors = load_tensors(path, meta)
    device = trainer.model.device
    if meta.get("weights") == "checkpoint":  # the shipped checkpoint beside the state
        from janus_core.checkpoint import CheckpointError, load_model

        try:
            model_sd = load_model(Path(path).parent, device="cpu").state_dict()
        except (CheckpointError, OSError, ValueError) as err:
            raise StateError(f"{path}: the weights come from the checkpoint in "
                             f"{Path(path).parent}, which does not load ({err})") from None
    else:
        model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    _load_module(trainer.model, model_sd, path, "model")
    if trainer.aux_head is not None:
        aux = {k[len("aux."):]: v for k, v in tensors.items() if k.startswith("aux.")}
        _load_module(trainer.aux_head, aux, path, "auxiliary head")
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = t
    for idx, scalars in meta["optim_scalars"].items():
        state.setdefault(int(idx), {}).update(scalars)
    params = trainer.optimizer.state_dict()["param_groups"]
    if [len(g["params"]) for g in params] != [len(g["params"]) for g in meta["param_groups"]]:
        raise StateError(f"{path}: the optimizer's parameter groups differ from the saved ones")
    for st in state.values():  # moments back in float32, where the fused AdamW wants them
        for key in ("exp_avg", "exp_avg_sq"):
            if key in st:
                st[key] = st[key].to(device, torch.float32)
        if "step" in st and torch.is_tensor(st["step"]):
            st["step"] = st["step"].to(torch.float32)
    trainer.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    trainer.step_count = int(meta["step"])
    rng = np.random.default_rng()
    rng.bit_generator.state = meta["rng"]
    raw = base64.b64decode(meta["torch_rng"])
    torch.set_rng_state(torch.from_numpy(np.frombuffer(raw, dtype=np.uint8).copy()))
    log.info("training state: resumed %s at step %d from %s", meta["model"], trainer.step_count,
             path)
    return rng, meta.get("extra", {})


def _load_module(module: torch.nn.Module, sd: dict[str, torch.Tensor], path: Any,
                 what: str) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise StateError(f"{path}: {what} tensors do not match (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]})")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise StateError(f"{path}: {what} tensor {k} has shape {tuple(v.shape)}, "
                             f"expected {tuple(own[k].shape)}")
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(sd[k].to(v.device, v.dtype))
