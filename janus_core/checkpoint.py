"""Load and save JanusVLN checkpoints in the release's layout, by one declared key map.

Layout of a released checkpoint (``misstl/JanusVLN_Base`` / ``_Extra``, reference digest §6):
``config.json`` (a ``Qwen2_5_VLConfig`` plus ``lam``, ``reference_frame`` and possibly
``use_vggt_feature`` / ``vggt_merger_hidden_dim``), ``model-0000i-of-0000N.safetensors`` with
``model.safetensors.index.json`` (or one ``model.safetensors``), tokenizer files,
``chat_template.json``, ``preprocessor_config.json``, ``generation_config.json``.

Checkpoint keys map onto :class:`janus_core.model.JanusVLNModel` through :data:`KEY_MAP`, a
table of anchored regexes tried in order (first match wins). Both the transformers-4.50 names the
release saved (``model.layers.*``, ``visual.*``) and the newer ones (``model.language_model.*``,
``model.visual.*``) load. ``vggt.{depth,point,camera,track}_head.*`` are dropped on purpose (the
release builds but never calls them). Any other unknown key, any missing parameter and any shape
mismatch raise :class:`CheckpointError` naming the keys. Only safetensors are read: pickled
``*.bin`` / ``*.pt`` files are refused, never unpickled.

:func:`save_checkpoint` writes the same layout with the 4.50 key names, plus our full config
under ``janus_config`` in ``config.json``, so a save/load round trip is bit-exact.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from janus_core.config import JanusConfig, QwenVLConfig
from janus_core.model import JanusVLNModel, build_model
from janus_core.processor import (
    CLIP_MEAN,
    CLIP_STD,
    EVAL_MAX_PIXELS,
    EVAL_MIN_PIXELS,
    QWEN2_5_VL_CHAT_TEMPLATE,
)
from janus_core.vggt import DROPPED_VGGT_PREFIXES

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
ARCHITECTURE = "Qwen2_5_VLForConditionalGenerationForJanusVLN"  # the release's class name
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

_DROP = "|".join(re.escape(p.rstrip(".")) for p in DROPPED_VGGT_PREFIXES)
# Checkpoint key -> our parameter name. ``None`` = drop on purpose. First match wins, so the
# newer ``model.language_model.`` / ``model.visual.`` prefixes come before the bare ``model.``.
KEY_MAP: tuple[tuple[re.Pattern[str], str | None], ...] = tuple(
    (re.compile(pattern), target)
    for pattern, target in (
        (r"^model\.language_model\.", "qwen.model.language_model."),  # transformers >= 4.52
        (r"^model\.visual\.", "qwen.model.visual."),  # transformers >= 4.52
        (r"^model\.(?=(embed_tokens|layers|norm)\.)", "qwen.model.language_model."),  # 4.50
        (r"^visual\.", "qwen.model.visual."),  # 4.50 (the release)
        (r"^lm_head\.", "qwen.lm_head."),
        (r"^vggt\.aggregator\.", "vggt.aggregator."),
        (rf"^vggt\.({_DROP})\.", None),  # VGGT heads the release builds but never calls
        (r"^merger\.", "merger."),  # the VGGTMerger (top level; not visual.merger)
    )
)
# Our parameter name -> the release's (transformers 4.50) key, for saving.
SAVE_MAP: tuple[tuple[str, str], ...] = (
    ("qwen.model.language_model.", "model."),
    ("qwen.model.visual.", "visual."),
    ("qwen.lm_head.", "lm_head."),
    ("vggt.", "vggt."),
    ("merger.", "merger."),
)


class CheckpointError(ValueError):
    """A checkpoint folder is missing, malformed, or does not fit the model; names the keys."""


_UNMATCHED = object()


def map_key(key: str) -> str | None | object:
    """Our parameter name for checkpoint ``key``; None if dropped on purpose; else _UNMATCHED."""
    for pattern, target in KEY_MAP:
        if pattern.match(key):
            return None if target is None else pattern.sub(target, key, count=1)
    return _UNMATCHED


def to_checkpoint_key(name: str) -> str:
    """The release's key for our parameter ``name``."""
    for ours, theirs in SAVE_MAP:
        if name.startswith(ours):
            return theirs + name[len(ours) :]
    raise CheckpointError(f"parameter {name!r} has no checkpoint key mapping")


# ---- files -----------------------------------------------------------------------------------
def weight_files(path: str | Path) -> list[Path]:
    """The safetensors files of a checkpoint folder (sharded via the index, or single)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder {path} does not exist")
    index = path / INDEX_NAME
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise CheckpointError(
                f"{index} is not a safetensors index (weight_map): {err}"
            ) from err
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (path / f).exists()]
        if missing:
            raise CheckpointError(f"{index} names shard files that do not exist: {missing}")
        return [path / f for f in files]
    single = path / WEIGHTS_NAME
    if single.exists():
        return [single]
    shards = sorted(path.glob("model-*-of-*.safetensors"))
    if shards:
        raise CheckpointError(f"{path} has shards {[s.name for s in shards]} but no {INDEX_NAME}")
    pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise CheckpointError(
            f"{path} holds only pickled weights {pickled}; refusing to unpickle them (arbitrary "
            "code execution). Convert them to safetensors with trusted tooling first"
        )
    raise CheckpointError(f"{path} has no {WEIGHTS_NAME} or {INDEX_NAME}")


def _expected_tensors(model: JanusVLNModel) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers the checkpoint must provide (tied lm_head excluded)."""
    expected = dict(model.named_parameters())
    for name in model.state_dict(keep_vars=True):
        if name not in expected:
            expected[name] = model.get_buffer(name)
    if model.cfg.qwen.tie_word_embeddings:
        expected.pop("qwen.lm_head.weight", None)
    return expected


def _plan(model: JanusVLNModel, files: list[Path]) -> dict[str, tuple[Path, str]]:
    """Read headers only: our name -> (file, checkpoint key); raise on any mismatch."""
    expected = _expected_tensors(model)
    plan: dict[str, tuple[Path, str]] = {}
    unexpected, dropped, shapes = [], [], []
    no_vggt = model.vggt is None
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                target = map_key(key)
                if target is None or (no_vggt and key.startswith(("vggt.", "merger."))):
                    dropped.append(key)
                    continue
                if target is _UNMATCHED or target not in expected:
                    if target == "qwen.lm_head.weight" and model.cfg.qwen.tie_word_embeddings:
                        dropped.append(key)  # tied to the embeddings
                        continue
                    unexpected.append(key)
                    continue
                if target in plan:
                    raise CheckpointError(
                        f"checkpoint keys {plan[target][1]!r} and {key!r} both map to {target!r}"
                    )
                shape = tuple(f.get_slice(key).get_shape())
                if shape != tuple(expected[target].shape):
                    shapes.append(
                        f"{key} (-> {target}): checkpoint {list(shape)}, "
                        f"model {list(expected[target].shape)}"
                    )
                plan[target] = (file, key)
    missing = sorted(set(expected) - set(plan))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (model parameters): {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (checkpoint keys): {_listing(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: {_listing(shapes)}")
    if problems:
        raise CheckpointError(
            f"checkpoint {files[0].parent} does not fit {model.cfg.name}: " + "; ".join(problems)
        )
    if dropped:
        log.info("dropped %d checkpoint tensors on purpose, e.g. %s", len(dropped), dropped[:3])
    return plan


def _listing(items: list[str], limit: int = 20) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def load_weights(
    model: JanusVLNModel, path: str | Path, device: str | torch.device | None = None
) -> JanusVLNModel:
    """Fill ``model`` (possibly built empty, on meta) from the checkpoint folder ``path``.

    Every parameter must come from the checkpoint; tensors are cast to the dtype of the
    parameter they replace and placed on ``device`` (default: where the model's buffers are).
    Raises :class:`CheckpointError` before touching the model if keys or shapes do not fit.
    """
    files = weight_files(path)
    plan = _plan(model, files)
    if device is None:
        real = [t.device for t in [*model.buffers(), *model.parameters()] if not t.is_meta]
        device = real[0] if real else torch.device("cpu")
    by_file: dict[Path, list[tuple[str, str]]] = {}
    for name, (file, key) in plan.items():
        by_file.setdefault(file, []).append((name, key))
    for file, entries in by_file.items():
        with safe_open(str(file), framework="pt", device=str(device)) as f:
            for name, key in entries:
                _assign(model, name, f.get_tensor(key))
    if model.cfg.qwen.tie_word_embeddings:
        model.qwen.tie_weights()
    left = [n for n, p in model.named_parameters() if p.is_meta]
    if left:
        raise CheckpointError(f"parameters still unset after loading: {_listing(left)}")
    return model


def _assign(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    if leaf in module._parameters:
        old = module._parameters[leaf]
        value = tensor.to(dtype=old.dtype)
        module._parameters[leaf] = nn.Parameter(value, requires_grad=old.requires_grad)
    else:
        old = module._buffers[leaf]
        module._buffers[leaf] = tensor.to(dtype=old.dtype)


def load_model(
    path: str | Path,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    cfg: JanusConfig | None = None,
) -> JanusVLNModel:
    """Build an empty model from the checkpoint's config (or ``cfg``) and load its weights."""
    cfg = cfg or config_from_checkpoint(path)
    model = build_model(cfg, device=device, dtype=dtype, empty=True)
    load_weights(model, path, device=next(model.qwen.buffers()).device)
    log.info("loaded %s from %s", cfg.name, path)
    return model.eval()


# ---- config --------------------------------------------------------------------------------------
def _require(data: dict[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise CheckpointError(f"{where} lacks the key {key!r}")
    return data[key]


def config_from_checkpoint(path: str | Path) -> JanusConfig:
    """A :class:`JanusConfig` from a checkpoint's ``config.json``.

    The Qwen sizes come from the Qwen2.5-VL fields (flat transformers-4.50 layout or nested
    ``text_config``; ``rope_scaling`` or transformers 5's ``rope_parameters``). ``lam``,
    ``reference_frame``, ``vggt_merger_hidden_dim`` and ``use_vggt_feature`` are read when
    present (defaults 0.2, "first", 4096, True). Everything
    else (VGGT sizes, memory windows, image geometry, policy settings) comes from our
    ``janus_config`` key when we wrote the checkpoint, else from the full-size defaults: the
    release stores nothing VGGT-architectural (VGGT-1B is implied).
    """
    file = Path(path) / CONFIG_NAME
    if not file.exists():
        raise CheckpointError(f"{file} does not exist")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{file} is not valid JSON: {err}") from err
    if data.get("model_type") != "qwen2_5_vl":
        raise CheckpointError(
            f"{file}: model_type is {data.get('model_type')!r}, expected 'qwen2_5_vl'"
        )
    janus = data.get("janus_config")
    base = JanusConfig.from_dict(janus) if janus else JanusConfig()
    text = data.get("text_config") or data
    vision = _require(data, "vision_config", str(file))
    where_t = f"{file} ({'text_config' if 'text_config' in data else 'top level'})"
    where_v = f"{file} (vision_config)"
    # transformers 5 writes rope_parameters (with rope_theta inside); earlier ones rope_scaling
    rope_key = "rope_parameters" if "rope_parameters" in text else "rope_scaling"
    rope = text.get(rope_key) or data.get("rope_scaling") or data.get("rope_parameters") or {}
    section = _require(rope, "mrope_section", f"{where_t} {rope_key}")
    rope_theta = text.get("rope_theta", rope.get("rope_theta", 1000000.0))

    def top(key: str, default: Any = None) -> Any:
        return data.get(key, text.get(key, default))

    qwen = QwenVLConfig(
        vocab_size=_require(text, "vocab_size", where_t),
        hidden_size=_require(text, "hidden_size", where_t),
        intermediate_size=_require(text, "intermediate_size", where_t),
        num_hidden_layers=_require(text, "num_hidden_layers", where_t),
        num_attention_heads=_require(text, "num_attention_heads", where_t),
        num_key_value_heads=_require(text, "num_key_value_heads", where_t),
        max_position_embeddings=text.get("max_position_embeddings", 128000),
        rope_theta=float(rope_theta),
        rms_norm_eps=float(text.get("rms_norm_eps", 1e-6)),
        mrope_section=tuple(section),
        tie_word_embeddings=bool(top("tie_word_embeddings", False)),
        hidden_act=text.get("hidden_act", "silu"),
        vision_depth=_require(vision, "depth", where_v),
        vision_hidden_size=_require(vision, "hidden_size", where_v),
        vision_intermediate_size=_require(vision, "intermediate_size", where_v),
        vision_num_heads=_require(vision, "num_heads", where_v),
        vision_patch_size=vision.get("patch_size", 14),
        vision_window_size=vision.get("window_size", 112),
        vision_fullatt_block_indexes=tuple(_require(vision, "fullatt_block_indexes", where_v)),
        spatial_merge_size=vision.get("spatial_merge_size", 2),
        temporal_patch_size=vision.get("temporal_patch_size", 2),
        tokens_per_second=vision.get("tokens_per_second", 2),
        vision_hidden_act=vision.get("hidden_act", "silu"),
        image_token_id=_require(data, "image_token_id", str(file)),
        video_token_id=_require(data, "video_token_id", str(file)),
        vision_start_token_id=_require(data, "vision_start_token_id", str(file)),
        vision_end_token_id=_require(data, "vision_end_token_id", str(file)),
        bos_token_id=top("bos_token_id", 151643),
        eos_token_id=top("eos_token_id", 151645),
        pad_token_id=top("pad_token_id", top("bos_token_id", 151643)),
    )
    if isinstance(qwen.eos_token_id, list):  # generation-style lists: the first is <|im_end|>
        qwen.eos_token_id = qwen.eos_token_id[0]
    changes: dict[str, Any] = {"qwen": qwen}
    if "lam" in data:
        changes["lam"] = float(data["lam"])
    if "reference_frame" in data:
        changes["reference_frame"] = data["reference_frame"]
    if "vggt_merger_hidden_dim" in data:
        changes["merger_hidden_dim"] = int(data["vggt_merger_hidden_dim"])
    if "use_vggt_feature" in data and not janus:
        changes["use_vggt"] = bool(data["use_vggt_feature"])
    if not janus:
        changes["name"] = Path(path).resolve().name
    changes["qwen"] = dataclasses.asdict(qwen)
    try:
        return JanusConfig.from_dict({**base.to_dict(), **changes})
    except ValueError as err:
        raise CheckpointError(f"{file}: {err}") from err


def release_config_dict(cfg: JanusConfig, dtype: torch.dtype) -> dict[str, Any]:
    """``config.json`` in the release's flat transformers-4.50 layout, plus our config."""
    q = cfg.qwen
    return {
        "architectures": [ARCHITECTURE],
        "model_type": "qwen2_5_vl",
        "attention_dropout": 0.0,
        "bos_token_id": q.bos_token_id,
        "eos_token_id": q.eos_token_id,
        "pad_token_id": q.pad_token_id,
        "vision_start_token_id": q.vision_start_token_id,
        "vision_end_token_id": q.vision_end_token_id,
        "image_token_id": q.image_token_id,
        "video_token_id": q.video_token_id,
        "hidden_act": q.hidden_act,
        "hidden_size": q.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": q.intermediate_size,
        "max_position_embeddings": q.max_position_embeddings,
        "max_window_layers": q.num_hidden_layers,
        "num_attention_heads": q.num_attention_heads,
        "num_hidden_layers": q.num_hidden_layers,
        "num_key_value_heads": q.num_key_value_heads,
        "rms_norm_eps": q.rms_norm_eps,
        "rope_scaling": {"type": "mrope", "mrope_section": list(q.mrope_section)},
        "rope_theta": q.rope_theta,
        "sliding_window": q.max_position_embeddings,
        "tie_word_embeddings": q.tie_word_embeddings,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "transformers_version": transformers.__version__,
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": q.vocab_size,
        "vision_config": {
            "depth": q.vision_depth,
            "hidden_act": q.vision_hidden_act,
            "hidden_size": q.vision_hidden_size,
            "intermediate_size": q.vision_intermediate_size,
            "num_heads": q.vision_num_heads,
            "in_channels": 3,
            "out_hidden_size": q.hidden_size,
            "patch_size": q.vision_patch_size,
            "spatial_merge_size": q.spatial_merge_size,
            "spatial_patch_size": q.vision_patch_size,
            "window_size": q.vision_window_size,
            "fullatt_block_indexes": list(q.vision_fullatt_block_indexes),
            "tokens_per_second": q.tokens_per_second,
            "temporal_patch_size": q.temporal_patch_size,
        },
        "lam": cfg.lam,
        "reference_frame": cfg.reference_frame,
        "use_vggt_feature": cfg.use_vggt,
        "vggt_merger_hidden_dim": cfg.merger_hidden_dim,
        "janus_config": cfg.to_dict(),
    }


# ---- saving ------------------------------------------------------------------------------------
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(size: int | str) -> int:
    """``5000000``, ``"5GB"``, ``"500MB"``, ``"2GiB"`` -> bytes (decimal units as transformers)."""
    if isinstance(size, int):
        value = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*", size, flags=re.IGNORECASE)
        if not match:
            raise ValueError(f"cannot read size {size!r}; use bytes or e.g. '5GB', '500MB'")
        value = int(float(match.group(1)) * _UNITS[(match.group(2) or "B").upper()])
    if value <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    return value


def save_checkpoint(
    model: JanusVLNModel,
    tokenizer: Any,
    cfg: JanusConfig | None,
    path: str | Path,
    max_shard_size: int | str = "5GB",
    chat_template: str | None = None,
) -> Path:
    """Write ``model`` + ``tokenizer`` in the release's layout (4.50 key names) to ``path``.

    Shards greedily in parameter order up to ``max_shard_size`` each (one tensor larger than
    the limit gets a shard of its own); a single shard is written as ``model.safetensors``.
    Writes ``config.json`` (release keys + ``janus_config``), ``generation_config.json``, the
    tokenizer files, ``chat_template.json`` and ``preprocessor_config.json``.
    """
    cfg = cfg or model.cfg
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    limit = parse_size(max_shard_size)
    tensors: list[tuple[str, torch.Tensor]] = []
    for name, tensor in _expected_tensors(model).items():
        if tensor.is_meta:
            raise CheckpointError(f"parameter {name} has no data (model built empty, not loaded)")
        tensors.append((to_checkpoint_key(name), tensor.detach().to("cpu").contiguous()))

    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    for old in list(path.glob("model*.safetensors")) + [path / INDEX_NAME]:
        old.unlink(missing_ok=True)
    if len(shards) == 1:
        save_file(shards[0], str(path / WEIGHTS_NAME), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards, start=1):
            name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(path / name), metadata={"format": "pt"})
            weight_map.update({key: name for key in shard})
        total = sum(t.numel() * t.element_size() for _, t in tensors)
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (path / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")

    dtype = model.dtype
    (path / CONFIG_NAME).write_text(json.dumps(release_config_dict(cfg, dtype), indent=2) + "\n")
    q = cfg.qwen
    generation = {
        "bos_token_id": q.bos_token_id, "eos_token_id": q.eos_token_id,
        "pad_token_id": q.pad_token_id, "do_sample": False, "max_new_tokens": cfg.max_new_tokens,
        "transformers_version": transformers.__version__,
    }
    (path / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(path))
    template = (
        chat_template or getattr(tokenizer, "chat_template", None) or QWEN2_5_VL_CHAT_TEMPLATE
    )
    (path / "chat_template.json").write_text(
        json.dumps({"chat_template": template}, indent=2) + "\n"
    )
    preprocessor = {
        "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD),
        "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor",
        "max_pixels": EVAL_MAX_PIXELS, "min_pixels": EVAL_MIN_PIXELS,
        "merge_size": q.spatial_merge_size, "patch_size": q.vision_patch_size,
        "temporal_patch_size": q.temporal_patch_size, "resample": 3,
        "rescale_factor": 1 / 255,
    }
    (path / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")
    log.info("saved %s to %s (%d shard(s))", cfg.name, path, len(shards))
    return path
