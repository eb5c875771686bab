"""One dataclass that fully describes a JanusVLN model, with full-size and tiny presets.

``JanusConfig`` nests the Qwen2.5-VL sizes, the VGGT aggregator sizes, the fusion settings, the
memory windows, the image geometry and the policy settings. Presets live in ``presets/*.yaml``
beside this module and load with :func:`load_config`; any YAML file with the same keys works too.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    import torch

PRESET_DIR = Path(__file__).parent / "presets"


class ConfigError(ValueError):
    """A config file or value is invalid; the message names the field."""


# dtype names a config may use ("auto": bf16 on GPU, fp32 on CPU); torch is imported only when
# one is resolved, so that reading configs (every CLI's first step) does not load torch
_DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclasses.dataclass
class QwenVLConfig:
    """Sizes of the Qwen2.5-VL backbone (LLM + vision tower). Defaults: Qwen2.5-VL-7B-Instruct."""

    vocab_size: int = 152064
    hidden_size: int = 3584
    intermediate_size: int = 18944
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int = 4
    max_position_embeddings: int = 128000
    rope_theta: float = 1000000.0
    rms_norm_eps: float = 1e-6
    mrope_section: tuple[int, int, int] = (16, 24, 24)
    tie_word_embeddings: bool = False
    hidden_act: str = "silu"
    # vision tower
    vision_depth: int = 32
    vision_hidden_size: int = 1280
    vision_intermediate_size: int = 3420
    vision_num_heads: int = 16
    vision_patch_size: int = 14
    vision_window_size: int = 112
    vision_fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    tokens_per_second: int = 2
    vision_hidden_act: str = "silu"
    # special token ids (Qwen2.5-VL tokenizer). The tokenizer's added tokens sit in Qwen's order
    # from <|endoftext|> (= bos_token_id) on; janus_core/tokenizer.py relies on that layout.
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    bos_token_id: int = 151643
    eos_token_id: int = 151645
    pad_token_id: int = 151643

    @property
    def head_dim(self) -> int:
        """Width of one LLM attention head."""
        return self.hidden_size // self.num_attention_heads


@dataclasses.dataclass
class VGGTConfig:
    """Sizes of the VGGT aggregator. Defaults: VGGT-1B (DINOv2 ViT-L/14 with 4 registers)."""

    img_size: int = 518
    patch_size: int = 14
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    qk_norm: bool = True
    rope_freq: float = 100.0
    init_values: float = 0.01
    # DINOv2 patch embedder
    patch_embed_depth: int = 24
    patch_embed_num_heads: int = 16
    patch_embed_num_register_tokens: int = 4
    feature_layer: int = -2  # aggregator output used for fusion (second-to-last)

    @property
    def feature_dim(self) -> int:
        """Width of one aggregator output token: frame and global outputs concatenated."""
        return 2 * self.embed_dim


@dataclasses.dataclass
class MemoryConfig:
    """Memory windows, in frames: the initial window is kept forever, the recent one slides."""

    spatial_initial: int = 8
    spatial_recent: int = 48
    semantic_initial: int = 8
    semantic_recent: int = 48
    num_history: int = 8  # sampled history frames in reference mode (plus the current frame);
    # 0 = the current frame only (the "without history" ablation)


@dataclasses.dataclass
class StreamingConfig:
    """Options of ``mode: streaming`` (the full dual memory, docs/streaming.md); same weights.

    ``lean_vggt``: run the VGGT trunk only up to ``vggt.feature_layer`` (the blocks after it
    feed nothing JanusVLN uses) and keep spatial K/V for those blocks only.
    ``llm_attention``: ``grouped`` attends each group of query heads to its K/V head without
    copying the cache; ``repeat`` repeats K/V per query head first (transformers' way).
    ``score_eos``: each action candidate ends with the eos token (the whole reply is scored).
    ``quantize``: ``none``, ``int8`` or ``nf4`` weights (bitsandbytes, CUDA only) for the
    modules in ``quantize_parts`` (``llm``, ``vit``, ``vggt``, ``merger``).
    ``overlap_encoders``: on CUDA, run the Qwen ViT on a side stream while VGGT runs.
    ``stage_sync``: synchronise CUDA around each timed stage (per-stage timings); False times
    only the whole step.
    ``static_shapes``: fixed-shape caches and stages (every step has the same tensor shapes:
    attention over whole buffers with masks, the step text padded to a length bucket); the same
    frames, eviction and scores as without, up to float rounding. Needs ``lean_vggt``.
    ``cuda_graphs``: on CUDA, ``static_shapes`` plus each stage (ViT, VGGT step, LLM step)
    captured once as a CUDA graph and replayed every step (the default: 158 ms instead of 185 ms
    per full-window step of the 7B model on an H100, benchmarks/results/step_latency.md); no
    effect on a CPU.
    """

    lean_vggt: bool = True
    llm_attention: str = "grouped"
    score_eos: bool = True
    quantize: str = "none"
    quantize_parts: tuple[str, ...] = ("llm",)
    overlap_encoders: bool = False
    stage_sync: bool = True
    static_shapes: bool = False
    cuda_graphs: bool = True


@dataclasses.dataclass
class ImageConfig:
    """Camera frame and model input geometry (see janus_core/processor.py for the exact rules)."""

    input_width: int = 640
    input_height: int = 480
    target_width: int = 644  # resize width for both encoders (release: hard-coded 644)
    hfov_deg: float = 79.0


@dataclasses.dataclass
class JanusConfig:
    """Everything that defines a JanusVLN model and its policy loop."""

    name: str = "janusvln-7b"
    qwen: QwenVLConfig = dataclasses.field(default_factory=QwenVLConfig)
    vggt: VGGTConfig = dataclasses.field(default_factory=VGGTConfig)
    memory: MemoryConfig = dataclasses.field(default_factory=MemoryConfig)
    image: ImageConfig = dataclasses.field(default_factory=ImageConfig)
    streaming: StreamingConfig = dataclasses.field(default_factory=StreamingConfig)
    merger_hidden_dim: int = 4096
    lam: float = 0.2
    reference_frame: str = "first"
    use_vggt: bool = True  # False: the "without VGGT branch" ablation
    actions: tuple[str, ...] = ("STOP", "MOVE_FORWARD", "TURN_LEFT", "TURN_RIGHT")
    prompt_style: str = "eval"  # "eval" (release evaluation prompt) or "train"
    mode: str = "reference"  # "reference" (release loop) or "streaming" (full dual memory)
    max_new_tokens: int = 24
    max_steps: int = 400  # forced STOP at this step (release parity)
    dtype: str = "auto"  # "auto": bf16 on GPU, fp32 on CPU; or "float32", "bfloat16", "float16"
    device: str = "auto"  # "auto": cuda if available, else cpu
    attn_implementation: str = "sdpa"  # Qwen attention kernel: "sdpa", "eager", "flash_attention_2"

    def __post_init__(self):
        """Reject inconsistent values with a message naming the field."""
        if self.prompt_style not in ("eval", "train"):
            raise ConfigError(f"prompt_style must be 'eval' or 'train', got {self.prompt_style!r}")
        if self.mode not in ("reference", "streaming"):
            raise ConfigError(f"mode must be 'reference' or 'streaming', got {self.mode!r}")
        if self.reference_frame not in ("first", "last"):
            raise ConfigError(
                f"reference_frame must be 'first' or 'last', got {self.reference_frame!r}"
            )
        if self.vggt.depth <= 0 or self.vggt.embed_dim % self.vggt.num_heads:
            raise ConfigError(
                f"vggt.embed_dim ({self.vggt.embed_dim}) must be divisible by vggt.num_heads "
                f"({self.vggt.num_heads}) and vggt.depth must be positive"
            )
        if not -self.vggt.depth <= self.vggt.feature_layer < self.vggt.depth:
            raise ConfigError(
                f"vggt.feature_layer ({self.vggt.feature_layer}) must index one of the "
                f"{self.vggt.depth} aggregator outputs"
            )
        for field in ("spatial_initial", "spatial_recent", "semantic_initial", "semantic_recent"):
            if getattr(self.memory, field) < 0:
                raise ConfigError(f"memory.{field} must be >= 0")
        if self.memory.num_history < 0:
            raise ConfigError(
                "memory.num_history must be >= 0 (0: the LLM sees only the current frame), "
                f"got {self.memory.num_history}"
            )
        self._check_qwen()
        self._check_image()
        self._check_streaming()
        if self.merger_hidden_dim <= 0:
            raise ConfigError(f"merger_hidden_dim must be positive, got {self.merger_hidden_dim}")
        if tuple(self.actions) != ("STOP", "MOVE_FORWARD", "TURN_LEFT", "TURN_RIGHT"):
            raise ConfigError(
                "actions must be ['STOP', 'MOVE_FORWARD', 'TURN_LEFT', 'TURN_RIGHT'] (the release "
                f"vocabulary, see janus_core/actions.py), got {list(self.actions)}"
            )
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.max_steps < 0:
            raise ConfigError(f"max_steps must be >= 0, got {self.max_steps}")
        if self.dtype not in _DTYPES:
            raise ConfigError(f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
        if self.device != "auto" and self.device.split(":")[0] not in ("cpu", "cuda", "mps"):
            raise ConfigError(
                f"device must be 'auto', 'cpu', 'cuda[:N]' or 'mps', got {self.device!r}"
            )
        if self.attn_implementation not in ("sdpa", "eager", "flash_attention_2"):
            raise ConfigError(
                "attn_implementation must be 'sdpa', 'eager' or 'flash_attention_2', "
                f"got {self.attn_implementation!r}"
            )

    def _check_qwen(self) -> None:
        q = self.qwen
        if q.hidden_size % q.num_attention_heads:
            raise ConfigError(
                f"qwen.hidden_size ({q.hidden_size}) must be divisible by qwen.num_attention_heads "
                f"({q.num_attention_heads})"
            )
        if q.num_attention_heads % q.num_key_value_heads:
            raise ConfigError(
                f"qwen.num_attention_heads ({q.num_attention_heads}) must be divisible by "
                f"qwen.num_key_value_heads ({q.num_key_value_heads})"
            )
        if len(q.mrope_section) != 3 or 2 * sum(q.mrope_section) != q.head_dim:
            raise ConfigError(
                f"qwen.mrope_section {list(q.mrope_section)} must have 3 entries summing to half "
                f"the head dim ({q.head_dim // 2})"
            )
        if q.vision_hidden_size % q.vision_num_heads:
            raise ConfigError(
                f"qwen.vision_hidden_size ({q.vision_hidden_size}) must be divisible by "
                f"qwen.vision_num_heads ({q.vision_num_heads})"
            )
        bad = [i for i in q.vision_fullatt_block_indexes if not 0 <= i < q.vision_depth]
        if bad:
            raise ConfigError(
                f"qwen.vision_fullatt_block_indexes {bad} are outside 0..{q.vision_depth - 1}"
            )
        if q.vision_patch_size != self.vggt.patch_size:
            raise ConfigError(
                f"qwen.vision_patch_size ({q.vision_patch_size}) must equal vggt.patch_size "
                f"({self.vggt.patch_size}): the fusion adds VGGT and Qwen tokens of the same patch"
            )
        ids = {
            "image_token_id": q.image_token_id,
            "video_token_id": q.video_token_id,
            "vision_start_token_id": q.vision_start_token_id,
            "vision_end_token_id": q.vision_end_token_id,
            "bos_token_id": q.bos_token_id,
            "eos_token_id": q.eos_token_id,
            "pad_token_id": q.pad_token_id,
        }
        outside = {k: v for k, v in ids.items() if not 0 <= v < q.vocab_size}
        if outside:
            raise ConfigError(
                f"qwen token ids {outside} are outside the vocabulary 0..{q.vocab_size - 1}"
            )

    def _check_streaming(self) -> None:
        st = self.streaming
        if st.llm_attention not in ("grouped", "repeat"):
            raise ConfigError(
                f"streaming.llm_attention must be 'grouped' or 'repeat', got {st.llm_attention!r}"
            )
        if st.quantize not in ("none", "int8", "nf4"):
            raise ConfigError(
                f"streaming.quantize must be 'none', 'int8' or 'nf4', got {st.quantize!r}"
            )
        bad = [p for p in st.quantize_parts if p not in ("llm", "vit", "vggt", "merger")]
        if bad:
            raise ConfigError(
                f"streaming.quantize_parts {bad} are not among 'llm', 'vit', 'vggt', 'merger'"
            )
        if st.static_shapes and self.use_vggt and not st.lean_vggt:
            raise ConfigError("streaming.static_shapes needs streaming.lean_vggt: true")
        if self.mode == "streaming" and self.prompt_style != "eval":
            raise ConfigError(
                "mode 'streaming' needs prompt_style 'eval': the training prompt labels the "
                "current frame apart from the history, so frames cannot be appended to a cache"
            )

    def _check_image(self) -> None:
        im, patch = self.image, self.vggt.patch_size
        if im.input_width <= 0 or im.input_height <= 0:
            raise ConfigError(
                "image.input_width/input_height must be positive, "
                f"got {im.input_width}x{im.input_height}"
            )
        if im.target_width % patch:
            raise ConfigError(
                f"image.target_width ({im.target_width}) must be a multiple of the patch size "
                f"({patch})"
            )
        merge = self.qwen.spatial_merge_size
        if im.target_width // patch < merge:
            raise ConfigError(
                f"image.target_width ({im.target_width}) is smaller than one merged patch "
                f"({patch * merge} px)"
            )

    # ---- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (lists instead of tuples), suitable for YAML or JSON."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JanusConfig":
        """Build a config from a nested dict; unknown keys are an error naming them."""
        return _build(cls, data, prefix="")

    def to_yaml(self, path: str | Path) -> None:
        """Write this config as YAML."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def replace(self, **changes: Any) -> "JanusConfig":
        """A copy with top-level fields changed."""
        return dataclasses.replace(self, **changes)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config keys {[prefix + k for k in unknown]} for {cls.__name__}")
    kwargs = {}
    for name, value in data.items():
        default = fields[name].default_factory() if callable(fields[name].default_factory) else (
            fields[name].default
        )
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, prefix=f"{prefix}{name}.")
        elif isinstance(default, tuple):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def load_config(name_or_path: str | Path) -> JanusConfig:
    """Load a preset by name (``full``, ``tiny``, ...) or any YAML file with JanusConfig keys."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            known = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
            raise ConfigError(f"unknown preset {str(name_or_path)!r}; known presets: {known}")
    data = read_yaml_mapping(path, ConfigError, "config file")
    try:
        return JanusConfig.from_dict(data)
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{path}: {err}") from err


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"`` (cuda when available, else cpu), a device string or None into a device."""
    import torch

    if name is None or (isinstance(name, str) and name == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(name)!r} was asked for but CUDA is not available")
    return device


def resolve_dtype(name: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Turn ``"auto"`` (bf16 on CUDA, fp32 elsewhere), a dtype name or a dtype into a dtype."""
    import torch

    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if isinstance(name, torch.dtype):
        if name not in dtypes.values():
            raise ConfigError(f"dtype must be one of {sorted(_DTYPES)}, got {name}")
        return name
    if name is None or name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in dtypes:
        raise ConfigError(f"dtype must be one of {sorted(_DTYPES)}, got {name!r}")
    return dtypes[name]


class NumberLoader(yaml.SafeLoader):
    """YAML's safe loader that also reads ``2e-5`` and ``1E3`` as numbers.

    PyYAML follows YAML 1.1, where a float needs a dot (``2.0e-5``): ``2e-5`` comes back as the
    string ``'2e-5'`` and fails much later (``'<' not supported between 'str' and 'int'``).
    YAML 1.2 and every other reader take it as a number; so do we, everywhere we read YAML.
    """


NumberLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse YAML text with :class:`NumberLoader` (safe; exponent numbers are numbers)."""
    return yaml.load(text, Loader=NumberLoader)  # noqa: S506 - NumberLoader is a SafeLoader


def read_yaml_mapping(path: str | Path, error: type[Exception] = ConfigError,
                      what: str = "config") -> dict[str, Any]:
    """The top-level mapping of the YAML file ``path`` (an empty file is ``{}``).

    A missing file, a directory, invalid YAML or a top level that is not a mapping raise
    ``error`` naming ``what`` and the file.
    """
    path = Path(path)
    if not path.exists():
        raise error(f"{what} {path} does not exist")
    if path.is_dir():
        raise error(f"{what} {path} is a directory, not a YAML file")
    try:
        data = load_yaml(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise error(f"{what} {path} is not valid YAML: {_one_line(err)}") from err
    if not isinstance(data, dict):
        raise error(f"{what} {path}: expected a mapping at the top level")
    return data


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


# field annotations (strings, with ``from __future__ import annotations``) that hold numbers
_NUMBER_KINDS = {"float": float, "int": int, "bool": bool}


def _field_kind(field: dataclasses.Field) -> tuple[type | None, bool]:
    """``(float | int | bool | None, optional)`` from a field's annotation."""
    ann = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    parts = [p.strip() for p in str(ann).replace("Optional[", "").rstrip("]").split("|")]
    optional = "None" in parts
    kinds = [p for p in parts if p != "None"]
    if len(kinds) == 1 and kinds[0] in _NUMBER_KINDS:
        return _NUMBER_KINDS[kinds[0]], optional
    return None, optional


def _is_text(field: dataclasses.Field) -> bool:
    ann = str(field.type if isinstance(field.type, str) else getattr(field.type, "__name__", ""))
    return ann.replace(" ", "") in ("str", "str|None", "Optional[str]")


def check_value(field: dataclasses.Field, value: Any) -> Any:
    """``value`` for a numeric / boolean ``field``, or ValueError saying what was expected.

    Floats accept ints; ints accept floats with an integral value (``1e3``); numbers written as
    text (``"2e-5"``) are read as numbers. Other fields pass through unchanged.
    """
    kind, optional = _field_kind(field)
    if kind is None or (value is None and optional):
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{field.name}: expected true or false, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip()) if kind is float else int(value.strip())
        except ValueError:
            raise ValueError(f"{field.name}: expected a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{field.name}: expected a number, got {value!r}")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{field.name}: expected a whole number, got {value!r}")
        return int(value)
    return float(value) if isinstance(value, int) else value


def check_types(cls: type, data: dict[str, Any], where: str,
                error: type[Exception] = ConfigError) -> dict[str, Any]:
    """``data`` with the numeric / boolean fields of dataclass ``cls`` checked (see check_value)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = dict(data)
    for name, value in data.items():
        if name in fields:
            try:
                out[name] = check_value(fields[name], value)
            except ValueError as err:
                raise error(f"{where}: {err}") from None
    return out


def parse_sets(cls: type, items: Iterable[str], error: type[Exception] = ConfigError,
               flag: str = "--set", nested: Iterable[str] = ()) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as a mapping for dataclass ``cls``; errors name the flag.

    Values are YAML (:func:`load_yaml`). ``KEY`` must be a field of ``cls``, or ``FIELD.KEY``
    for a field listed in ``nested`` (a mapping field such as ``sim``). A number field gets a
    number (``--set max_grad_norm=5e-1`` is 0.5). The error text starts with the flag as typed.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise error(f"{flag} {item!r}: expected KEY=VALUE")
        try:
            value = load_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise error(f"{flag} {item}: the value is not valid YAML ({_one_line(err)})") from None
        head, dot, rest = key.partition(".")
        if dot and head in nested:
            out.setdefault(head, {})[rest] = value
            continue
        if key not in fields:
            raise error(f"{flag} {item}: unknown setting {key!r}; known: {sorted(fields)}")
        if _is_text(fields[key]) and isinstance(value, (int, float)):
            value = raw.strip()  # a text field keeps what was typed (--set policy=0001)
        try:
            out[key] = check_value(fields[key], value)
        except ValueError as err:
            raise error(f"{flag} {item}: {err}") from None
    return out


def load_dataclass(cls: type, path: str | Path | None, overrides: dict[str, Any],
                   error: type[Exception] = ConfigError, what: str = "config") -> Any:
    """The flat dataclass ``cls`` from YAML ``path`` (or defaults), then non-None ``overrides``."""
    data = {} if path is None else read_yaml_mapping(path, error, what)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return dataclass_from_mapping(cls, data, str(path or what), error)


def dataclass_from_mapping(
    cls: type, data: Any, where: str, error: type[Exception] = ConfigError
) -> Any:
    """Build the flat dataclass ``cls`` from a mapping read from ``where`` (a file or a key).

    Anything that is not a mapping, unknown keys and rejected values raise ``error`` with a
    message that names ``where`` and the keys. Number fields get numbers (see check_value).
    """
    if not isinstance(data, dict):
        raise error(f"{where}: expected a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise error(f"{where}: unknown keys {unknown}; known: {sorted(names)}")
    data = check_types(cls, data, where, error)
    try:
        return cls(**data)
    except (TypeError, ValueError) as err:
        if isinstance(err, error):
            raise
        raise error(f"{where}: {err}") from err
