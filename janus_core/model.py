"""The JanusVLN network: Qwen2.5-VL (unmodified, from transformers) + VGGT aggregator + merger.

Read in data order (reference digest §1, release ``modeling_qwen2_5_vl.py:1980-2061``)::

    current frame [3, 490, 644] in [0, 1]          sampled frames (<= 9), cropped to 476x644
      | VGGT aggregator, one frame per call,         | Qwen ViT (stock transformers visual tower,
      | spatial cache passed in (policy owns it)     | window attention, its own visual.merger)
      v                                              v
    layer feature_layer (-2), patch tokens         image_embeds [N_img * 391, 3584]
    [35 * 46, 2048] -> crop 34x46 -> 2x2 blocks           |
    [391, 8192] -> VGGTMerger -> [391, 3584]               |
      |                                                    |
      +---- tiled over all N_img images, x lam (0.2) ----> + (scaled addition, not concat)
                                                           |
    token embeddings, fused rows scattered into the <|image_pad|> positions
      | mRoPE positions from transformers' get_rope_index(input_ids, image_grid_thw)
      v
    stock Qwen2.5-VL LLM (inputs_embeds) -> logits / loss / greedy decode

Nothing here keeps episode state: the spatial cache, the frame history and the step counter live
in :class:`janus_core.policy.JanusVLNPolicy` and are passed in. ``cfg.use_vggt=False`` builds the
ablation without the VGGT branch (plain Qwen2.5-VL).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from janus_core.compat import (
    cache_arguments,
    empty_parameters,
    image_features,
    no_init_weights,
    output_cache,
    rope_index,
)
from janus_core.config import JanusConfig, resolve_device, resolve_dtype
from janus_core.memory import SpatialCache
from janus_core.processor import Geometry, geometry_from_config, regroup_vggt_features
from janus_core.vggt import VGGT
from janus_core.vision_attention import pack_vision_attention

log = logging.getLogger(__name__)


class RMSNorm(nn.Module):
    """RMS norm computed in float32, weight applied in the input dtype (Qwen2RMSNorm numerics)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise over the last dimension."""
        dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x.to(dtype)


class VGGTMerger(nn.Module):
    """The fusion projector: per-token RMSNorm(2048), 2x2 flatten to 8192, Linear, GELU, Linear.

    Parameter names match the release's top-level ``merger.*`` keys (``ln_q``, ``mlp.0``,
    ``mlp.2``). At full size 48,244,224 parameters.
    """

    def __init__(self, context_dim: int, hidden_dim: int, output_dim: int, merge_size: int = 2):
        super().__init__()
        self.context_dim = context_dim
        self.input_dim = context_dim * merge_size * merge_size
        self.ln_q = RMSNorm(context_dim, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(self.input_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, output_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, merge**2 * C]`` (or ``[..., C]`` in 2x2-block order) -> ``[N, output_dim]``."""
        x = self.ln_q(x.reshape(-1, self.context_dim))
        return self.mlp(x.reshape(-1, self.input_dim))


def qwen_config(cfg: JanusConfig) -> Qwen2_5_VLConfig:
    """The transformers ``Qwen2_5_VLConfig`` for ``cfg.qwen`` (no dtype pinned)."""
    q = cfg.qwen
    text = {
        "vocab_size": q.vocab_size,
        "hidden_size": q.hidden_size,
        "intermediate_size": q.intermediate_size,
        "num_hidden_layers": q.num_hidden_layers,
        "num_attention_heads": q.num_attention_heads,
        "num_key_value_heads": q.num_key_value_heads,
        "max_position_embeddings": q.max_position_embeddings,
        "rope_theta": q.rope_theta,
        "rms_norm_eps": q.rms_norm_eps,
        "hidden_act": q.hidden_act,
        "tie_word_embeddings": q.tie_word_embeddings,
        "rope_scaling": {"type": "mrope", "mrope_section": list(q.mrope_section)},
        "use_sliding_window": False,
        "sliding_window": q.max_position_embeddings,
        "max_window_layers": q.num_hidden_layers,
        "attention_dropout": 0.0,
        "bos_token_id": q.bos_token_id,
        "eos_token_id": q.eos_token_id,
        "pad_token_id": q.pad_token_id,
    }
    vision = {
        "depth": q.vision_depth,
        "hidden_size": q.vision_hidden_size,
        "intermediate_size": q.vision_intermediate_size,
        "num_heads": q.vision_num_heads,
        "in_channels": 3,
        "patch_size": q.vision_patch_size,
        "spatial_merge_size": q.spatial_merge_size,
        "temporal_patch_size": q.temporal_patch_size,
        "tokens_per_second": q.tokens_per_second,
        "window_size": q.vision_window_size,
        "fullatt_block_indexes": list(q.vision_fullatt_block_indexes),
        "out_hidden_size": q.hidden_size,
        "hidden_act": q.vision_hidden_act,
    }
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=q.image_token_id,
        video_token_id=q.video_token_id,
        vision_start_token_id=q.vision_start_token_id,
        vision_end_token_id=q.vision_end_token_id,
        bos_token_id=q.bos_token_id,
        eos_token_id=q.eos_token_id,
        pad_token_id=q.pad_token_id,
        tie_word_embeddings=q.tie_word_embeddings,
        attn_implementation=cfg.attn_implementation,
    )
    config.text_config._attn_implementation = cfg.attn_implementation
    config.vision_config._attn_implementation = cfg.attn_implementation
    return config


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Temporarily set torch's default floating dtype (how transformers builds bf16 models)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


class JanusVLNModel(nn.Module):
    """Qwen2.5-VL + VGGT aggregator + VGGTMerger, with the release's scaled-addition fusion.

    Submodules: ``qwen`` (``Qwen2_5_VLForConditionalGeneration``: ``qwen.model.visual``,
    ``qwen.model.language_model``, ``qwen.lm_head``), ``vggt`` (``VGGT``, only ``.aggregator``)
    and ``merger`` (``VGGTMerger``); the last two are None when ``cfg.use_vggt`` is False.

    Build with :func:`build_model` (device/dtype handling) or load with
    :func:`janus_core.checkpoint.load_model`. Parameters are created in ``dtype``; VGGT's
    normalisation buffers stay float32 (as official VGGT's), Qwen's rotary buffers float32 (as
    transformers' ``from_pretrained``).
    """

    def __init__(self, cfg: JanusConfig, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.cfg = cfg
        self.geometry: Geometry = geometry_from_config(cfg)
        self.lam = float(cfg.lam)
        with default_dtype(dtype):
            self.qwen = Qwen2_5_VLForConditionalGeneration(qwen_config(cfg))
        if cfg.attn_implementation != "flash_attention_2":
            pack_vision_attention(self.qwen.model.visual)  # one SDPA call for all ViT windows
        self.vggt: VGGT | None = None
        self.merger: VGGTMerger | None = None
        if cfg.use_vggt:
            self.vggt = VGGT(cfg.vggt)
            for param in self.vggt.parameters():
                param.data = param.data.to(dtype)
            with default_dtype(dtype):
                self.merger = VGGTMerger(
                    cfg.vggt.feature_dim, cfg.merger_hidden_dim, cfg.qwen.hidden_size,
                    cfg.qwen.spatial_merge_size,
                )
            self.vggt.eval()
            self.vggt.requires_grad_(False)

    # ---- basics ----------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Device of the LLM weights."""
        return self.qwen.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype of the LLM."""
        return self.qwen.lm_head.weight.dtype

    def train(self, mode: bool = True) -> JanusVLNModel:
        """Set train/eval mode; VGGT stays in eval mode always (it is frozen in the release)."""
        super().train(mode)
        if self.vggt is not None:
            self.vggt.eval()
        return self

    def new_spatial_cache(self, batch_size: int = 1) -> SpatialCache:
        """An empty spatial cache sized for this model and geometry (the caller owns it)."""
        if self.vggt is None:
            raise RuntimeError("this model has no VGGT branch (cfg.use_vggt is False)")
        tokens = self.geometry.vggt_tokens_per_frame(self.cfg.vggt.num_register_tokens)
        return SpatialCache(
            self.cfg.vggt, self.cfg.memory, tokens, batch_size=batch_size,
            device=self.device, dtype=self.dtype,
        )

    def _autocast(self) -> contextlib.AbstractContextManager:
        # The release runs VGGT under bf16 autocast; on CPU in float32 nothing is cast.
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    # ---- spatial branch ----------------------------------------------------------------------
    def vggt_features(
        self, frames: torch.Tensor, cache: SpatialCache | None = None
    ) -> torch.Tensor:
        """Frames through the aggregator, one at a time in order; fusion features of the last.

        ``frames``: ``[3, H, W]`` or ``[S, 3, H, W]`` in [0, 1] at the VGGT size (490x644).
        ``cache``: the episode's spatial cache (reference mode: one frame per env step into the
        persistent cache); None = a fresh cache for this call (the release's training forward,
        where the sampled frames of one sample are streamed through a new cache). Returns
        ``[tokens_per_image, 4 * 2C]`` (no gradient: VGGT is frozen).
        """
        if self.vggt is None:
            raise RuntimeError("this model has no VGGT branch (cfg.use_vggt is False)")
        if frames.ndim == 3:
            frames = frames.unsqueeze(0)
        geo = self.geometry
        if frames.ndim != 4 or tuple(frames.shape[1:]) != (3, geo.vggt_height, geo.vggt_width):
            raise ValueError(
                f"VGGT frames must be [S, 3, {geo.vggt_height}, {geo.vggt_width}], "
                f"got {tuple(frames.shape)}"
            )
        if cache is None:
            cache = self.new_spatial_cache()
        if self.cfg.reference_frame == "last":  # release option, never used (always "first")
            frames = frames.flip(0)
        frames = frames.to(self.device, torch.float32)
        with torch.no_grad(), self._autocast():
            for frame in frames:
                outputs, patch_start_idx = self.vggt.aggregator(frame[None, None], cache)
            tokens = outputs[self.cfg.vggt.feature_layer][0, 0, patch_start_idx:]
        return regroup_vggt_features(tokens, geo)

    def encode_vggt(
        self, frames: torch.Tensor, cache: SpatialCache | None = None
    ) -> torch.Tensor:
        """:meth:`vggt_features` then the merger: ``[tokens_per_image, hidden]`` in model dtype."""
        features = self.vggt_features(frames, cache)
        return self.merger(features.to(self.dtype))

    # ---- semantic branch ---------------------------------------------------------------------
    def encode_images(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """Qwen ViT + visual.merger: ``[sum of tokens per image, hidden]``, images in order."""
        device = self.device
        return image_features(self.qwen.model, pixel_values.to(device), grid_thw.to(device))

    # ---- fusion ---------------------------------------------------------------------------------
    def fuse(
        self, image_embeds: torch.Tensor, vggt_embeds: torch.Tensor | None, num_images: int
    ) -> torch.Tensor:
        """``image_embeds + lam * vggt_embeds`` tiled over the ``num_images`` images.

        The release adds the *current* frame's VGGT block to every image of the prompt, history
        frames included. ``vggt_embeds=None`` (ablation) returns ``image_embeds`` unchanged.
        """
        if vggt_embeds is None:
            return image_embeds
        if image_embeds.shape[0] != num_images * vggt_embeds.shape[0]:
            raise ValueError(
                f"cannot tile {vggt_embeds.shape[0]} VGGT tokens over {num_images} images with "
                f"{image_embeds.shape[0]} Qwen visual tokens in total"
            )
        tiled = vggt_embeds.to(image_embeds.dtype).repeat(num_images, 1)
        return image_embeds + self.lam * tiled

    def embed(
        self, input_ids: torch.Tensor, image_embeds: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Token embeddings with ``image_embeds`` rows written into the ``<|image_pad|>`` slots."""
        input_ids = input_ids.to(self.device)
        embeds = self.qwen.get_input_embeddings()(input_ids)
        mask = input_ids == self.cfg.qwen.image_token_id
        n_tokens = int(mask.sum())
        n_features = 0 if image_embeds is None else image_embeds.shape[0]
        if n_tokens != n_features:
            raise ValueError(
                f"image features and image tokens do not match: {n_tokens} <|image_pad|> tokens, "
                f"{n_features} feature rows"
            )
        if n_tokens == 0:
            return embeds
        mask = mask.unsqueeze(-1).expand_as(embeds)
        return embeds.masked_scatter(mask, image_embeds.to(embeds.device, embeds.dtype))

    def rope_positions(
        self, input_ids: torch.Tensor, image_grid_thw: torch.Tensor | None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Multimodal RoPE ``(position_ids [3, B, L], rope_deltas [B, 1])`` from transformers."""
        grid = None if image_grid_thw is None else image_grid_thw.to(self.device)
        mask = None if attention_mask is None else attention_mask.to(self.device)
        return rope_index(
            self.qwen.model, input_ids.to(self.device), grid, mask, self.cfg.qwen.image_token_id
        )

    # ---- training forward ------------------------------------------------------------------------
    def images_per_sample(self, input_ids: torch.Tensor) -> list[int]:
        """Number of images in each row: ``<|vision_start|>`` directly followed by a pad."""
        q = self.cfg.qwen
        starts = input_ids[:, :-1] == q.vision_start_token_id
        return (starts & (input_ids[:, 1:] == q.image_token_id)).sum(dim=1).tolist()

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        *,
        vggt_frames: Sequence[torch.Tensor] | None = None,
        vggt_embeds: Sequence[torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ):
        """Teacher-forced pass: logits, and the loss when ``labels`` are given (-100 = ignored).

        ``pixel_values``/``image_grid_thw``: all images of the batch in row order (Qwen format).
        The spatial branch takes, per batch row, either ``vggt_embeds[i]`` (merger output,
        ``[tokens_per_image, hidden]``) or ``vggt_frames[i]`` (``[S_i, 3, H, W]``, the row's
        sampled frames, streamed through a fresh spatial cache; the last one is the current
        frame), as the release's training forward. Returns transformers'
        ``Qwen2_5_VLCausalLMOutputWithPast`` (``loss`` is the mean token cross-entropy in fp32).
        """
        input_ids = input_ids.to(self.device)
        image_embeds = None
        if pixel_values is not None:
            if image_grid_thw is None:
                raise ValueError("pixel_values needs image_grid_thw")
            image_embeds = self.encode_images(pixel_values, image_grid_thw)
            if self.vggt is not None:
                image_embeds = self._fuse_batch(
                    input_ids, image_embeds, image_grid_thw, vggt_frames, vggt_embeds
                )
        inputs_embeds = self.embed(input_ids, image_embeds)
        position_ids, _ = self.rope_positions(input_ids, image_grid_thw, attention_mask)
        return self.qwen(
            inputs_embeds=inputs_embeds,
            position_ids=position_ids,
            attention_mask=None if attention_mask is None else attention_mask.to(self.device),
            labels=None if labels is None else labels.to(self.device),
            use_cache=False,
            logits_to_keep=logits_to_keep,
        )

    def _fuse_batch(self, input_ids, image_embeds, image_grid_thw, vggt_frames, vggt_embeds):
        counts = self.images_per_sample(input_ids)
        batch = len(counts)
        if vggt_embeds is None:
            if vggt_frames is None or len(vggt_frames) != batch:
                raise ValueError(
                    f"the VGGT branch needs vggt_frames or vggt_embeds for each of the {batch} "
                    "batch rows (cfg.use_vggt is True)"
                )
            vggt_embeds = [self.encode_vggt(frames) for frames in vggt_frames]
        elif len(vggt_embeds) != batch:
            raise ValueError(f"got {len(vggt_embeds)} vggt_embeds for {batch} batch rows")
        merge = self.cfg.qwen.spatial_merge_size
        per_image = (image_grid_thw.prod(-1) // (merge * merge)).tolist()
        if sum(counts) != len(per_image):
            raise ValueError(
                f"input_ids hold {sum(counts)} images but image_grid_thw has {len(per_image)} rows"
            )
        pieces, row, image = [], 0, 0
        for i, n in enumerate(counts):
            size = sum(per_image[image : image + n])
            pieces.append(self.fuse(image_embeds[row : row + size], vggt_embeds[i], n))
            row, image = row + size, image + n
        return torch.cat(pieces, dim=0)

    # ---- generation ------------------------------------------------------------------------------
    @torch.no_grad()
    def greedy_generate(
        self,
        input_ids: torch.Tensor,
        inputs_embeds: torch.Tensor,
        image_grid_thw: torch.Tensor | None = None,
        max_new_tokens: int = 24,
        eos_token_ids: Sequence[int] = (),
    ) -> list[int]:
        """Greedy decoding for one prompt (batch 1): full prefill, then one token at a time.

        Stops after an ``eos_token_ids`` token (returned) or ``max_new_tokens`` tokens. Decode
        positions follow transformers: ``cache length + rope_delta`` on all three mRoPE axes.
        """
        if input_ids.shape[0] != 1:
            raise ValueError(f"greedy_generate takes one prompt, got batch {input_ids.shape[0]}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        position_ids, rope_deltas = self.rope_positions(input_ids, image_grid_thw)
        out = self.qwen(
            inputs_embeds=inputs_embeds, position_ids=position_ids, use_cache=True,
            logits_to_keep=1,
        )
        cache = output_cache(out)
        length = input_ids.shape[1]
        eos = set(int(i) for i in eos_token_ids)
        embed = self.qwen.get_input_embeddings()
        tokens: list[int] = []
        for step in range(max_new_tokens):
            next_id = out.logits[0, -1].float().argmax()
            tokens.append(int(next_id))
            if tokens[-1] in eos or step == max_new_tokens - 1:
                break
            position = length + step
            pos = (rope_deltas.to(self.device) + position).view(1, 1, 1).expand(3, 1, 1)
            out = self.qwen(
                inputs_embeds=embed(next_id.view(1, 1)), position_ids=pos, use_cache=True,
                **cache_arguments(cache, torch.tensor([position], device=self.device)),
            )
            cache = output_cache(out)
        return tokens

    # ---- training helpers ------------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Named parameters by role.

        ``llm``: embeddings, decoder, final norm, lm_head. ``merger``: Qwen's ``visual.merger``
        and the VGGT merger (both trained in the release). ``vit``: the rest of the Qwen vision
        tower. ``vggt``: the aggregator.
        """
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {
            "llm": [], "merger": [], "vit": [], "vggt": []
        }
        for name, param in self.named_parameters():
            if name.startswith("vggt."):
                groups["vggt"].append((name, param))
            elif name.startswith("merger.") or name.startswith("qwen.model.visual.merger."):
                groups["merger"].append((name, param))
            elif name.startswith("qwen.model.visual."):
                groups["vit"].append((name, param))
            else:
                groups["llm"].append((name, param))
        return groups

    def set_trainable(
        self, llm: bool = True, merger: bool = True, vit: bool = False, vggt: bool = False
    ) -> int:
        """Freeze/unfreeze by group (defaults = the release's recipe); returns #trainable params.

        VGGT stays in eval mode whatever ``vggt`` says.
        """
        wanted = {"llm": llm, "merger": merger, "vit": vit, "vggt": vggt}
        for group, params in self.parameter_groups().items():
            for _, param in params:
                param.requires_grad_(wanted[group])
        if self.vggt is not None:
            self.vggt.eval()
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def gradient_checkpointing_enable(self) -> None:
        """Turn on transformers' gradient checkpointing in the LLM and the ViT."""
        self.qwen.gradient_checkpointing_enable()


def build_model(
    cfg: JanusConfig,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    empty: bool = False,
) -> JanusVLNModel:
    """Build a JanusVLN model on ``device`` in ``dtype`` (defaults: ``cfg.device``/``cfg.dtype``).

    ``empty=False``: random weights (tests, benchmarks), initialised directly on the device.
    ``empty=True``: parameters on the meta device, to be filled by a checkpoint loader (buffers
    are real); using such a model before loading fails.
    """
    device = resolve_device(cfg.device if device is None else device)
    dtype = resolve_dtype(cfg.dtype if dtype is None else dtype, device)
    with contextlib.ExitStack() as stack:
        stack.enter_context(device)
        if empty:
            stack.enter_context(empty_parameters())
            stack.enter_context(no_init_weights())
        model = JanusVLNModel(cfg, dtype=dtype)
    log.info(
        "built %s (%s) on %s in %s%s", cfg.name, "with VGGT" if cfg.use_vggt else "no VGGT",
        device, dtype, " (empty)" if empty else "",
    )
    return model.eval()
