"""``streaming`` mode: the full dual implicit memory, incremental, one fused LLM forward per step.

The release (``reference`` mode, :mod:`janus_core.policy`) keeps only the spatial half of the
paper's memory: every step it re-encodes up to 9 sampled frames with the Qwen ViT and re-prefills
about 3.6 K tokens. Here both halves are explicit, bounded, incremental objects owned by the
policy (docs/streaming.md has the whole story, including what differs from reference by design):

- **Spatial memory**: the VGGT global-block K/V (:class:`janus_core.memory.SpatialCache`), as in
  reference mode. With ``streaming.lean_vggt`` the trunk stops at ``vggt.feature_layer`` (the
  blocks after it feed nothing) and the cache holds only the blocks that run.
- **Semantic memory** (:class:`janus_core.memory.SemanticCache`): each frame goes through the
  Qwen ViT once, is fused with the VGGT block of that same frame, and is prefilled into the LLM
  once. Its K/V stay cached (first ``semantic_initial`` + last ``semantic_recent`` frames).

Prompt layout (:class:`StreamingLayout`): the release's evaluation prompt with every held frame
as an image, i.e. ``prefix | frame_0 | frame_1 | ... | suffix | candidate``, where the prefix is
the system turn plus the user-turn header (cached once per episode), each frame is
``<|vision_start|><|image_pad|> x 391<|vision_end|>``, the suffix is the task text plus the
assistant prefix, and a candidate is an action name plus ``<|im_end|>``. One step is one LLM
forward over ``new frame + suffix + the 4 candidates`` (a tree: each candidate sees the suffix
and itself, not the others), attending to the cached K/V; the frame's K/V are then kept and the
suffix/candidates dropped. The action is the candidate with the highest sequence log-probability;
``StepResult.probs`` is the softmax over the 4 sequence log-probabilities.

``streaming.static_shapes`` / ``streaming.cuda_graphs`` run the same step with fixed shapes
(:mod:`janus_core.static_memory`, :mod:`janus_core.static_stages`), each stage replayed as a
CUDA graph on CUDA (:mod:`janus_core.cuda_graphs`); docs/streaming.md has the details.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from janus_core.actions import Action
from janus_core.config import StreamingConfig
from janus_core.cuda_graphs import StageGraphs
from janus_core.interface import Observation, StepResult
from janus_core.llm_attention import (
    GROUPED_ATTENTION,
    REPEAT_ATTENTION,
    additive_mask,
    decoder_forward,
    grouped_attention_supported,
)
from janus_core.memory import SemanticCache, SpatialCache
from janus_core.model import JanusVLNModel
from janus_core.policy import JanusVLNPolicy
from janus_core.processor import JanusProcessor
from janus_core.static_memory import StaticSemanticCache, StaticSpatialCache
from janus_core.static_stages import (
    StaticLLMStep,
    StaticVGGTStep,
    StaticViT,
    bucket_length,
    padded_structure,
)
from janus_core.vggt_step import feature_depth, lean_vggt_embeds, new_lean_spatial_cache

log = logging.getLogger(__name__)

# ---- the prompt layout ------------------------------------------------------------------------
@dataclasses.dataclass
class StreamingLayout:
    """Token ids, relative mRoPE positions and masks of the streaming prompt for one episode.

    Cut from the release's evaluation prompt for one image (``processor.prompt_ids``): ``prefix``
    (before the first ``<|vision_start|>``), ``frame`` (the image chunk), ``suffix`` (after
    ``<|vision_end|>``), and checked against the prompt for two images. Positions are relative
    to each piece's first token (add the absolute start). ``step_*`` describe one step's new
    tokens: ``frame + suffix + candidates`` (each candidate without its last token, which is
    only predicted).
    """

    prefix_ids: list[int]
    frame_ids: list[int]
    suffix_ids: list[int]
    candidates: list[list[int]]  # per action (Action order): the tokens scored
    grid_thw: tuple[int, int, int]
    prefix_positions: Tensor  # [3, P], absolute (the prefix starts at 0)
    frame_positions: Tensor  # [3, L], relative to the frame's first position
    frame_span: int  # positions one frame advances (max relative position + 1)
    step_positions: Tensor  # [3, L + S + C]: frame then suffix/candidates, relative
    step_allowed: Tensor  # bool [L + S + C, L + S + C]: who sees whom among the new tokens
    score_rows: Tensor  # rows of the step whose logits predict a candidate token
    score_targets: Tensor  # the candidate token each of those rows predicts
    score_candidate: Tensor  # which candidate each of those rows belongs to

    @property
    def step_len(self) -> int:
        """New tokens per step: frame + suffix + candidates."""
        return self.step_positions.shape[1]

    @property
    def scratch_len(self) -> int:
        """Step tokens after the frame (never kept)."""
        return self.step_len - len(self.frame_ids)

    def step_ids(self) -> list[int]:
        """Token ids of one step's new tokens: frame, suffix, candidates without their last."""
        return self.frame_ids + self.suffix_ids + [t for c in self.candidates for t in c[:-1]]

    def full_ids(self, num_frames: int, action: int) -> list[int]:
        """The plain prompt with ``num_frames`` frames and one candidate appended."""
        return (self.prefix_ids + self.frame_ids * num_frames + self.suffix_ids
                + self.candidates[action])


def build_layout(model: JanusVLNModel, processor: JanusProcessor, instruction: str,
                 score_eos: bool = True) -> StreamingLayout:
    """The :class:`StreamingLayout` for ``instruction`` (eval prompt style)."""
    cfg, tok = model.cfg, processor.tokenizer
    q = cfg.qwen
    ids = processor.prompt_ids(instruction, 1)[0].tolist()
    start, end = ids.index(q.vision_start_token_id), ids.index(q.vision_end_token_id)
    prefix, frame, suffix = ids[:start], ids[start : end + 1], ids[end + 1 :]
    two = processor.prompt_ids(instruction, 2)[0].tolist()
    if two != prefix + frame + frame + suffix:
        raise ValueError(
            "the prompt does not put images back to back between a fixed prefix and suffix, so "
            "frames cannot be appended to a cache (streaming needs prompt_style 'eval')"
        )
    eos = tok.eos_token_id
    candidates = []
    for action in Action:
        toks = list(tok(action.name, add_special_tokens=False)["input_ids"])
        if score_eos:
            if eos is None:
                raise ValueError("score_eos needs a tokenizer with an eos token")
            toks.append(eos)
        candidates.append(toks)
    device = model.device
    grid = processor.geometry.grid_thw
    prefix_pos, _ = model.rope_positions(torch.tensor([prefix]), None)
    frame_pos, _ = model.rope_positions(torch.tensor([frame]), torch.tensor([grid]))
    prefix_pos, frame_pos = prefix_pos[:, 0].to(device), frame_pos[:, 0].to(device)
    span = int(frame_pos.max()) + 1
    L, S = len(frame), len(suffix)
    # Suffix then each candidate continuing it: text tokens, one position on all three axes.
    # A candidate's last token is only predicted, never fed, so it is not in the step.
    text_pos = list(range(S))
    for c in candidates:
        text_pos += list(range(S, S + len(c) - 1))
    text_pos = torch.tensor(text_pos, device=device) + span
    step_pos = torch.cat([frame_pos, text_pos.expand(3, -1)], dim=1)
    n = step_pos.shape[1]
    allowed = torch.tril(torch.ones(n, n, dtype=torch.bool, device=device))
    rows, targets, owner = [], [], []
    row = L + S
    for k, c in enumerate(candidates):
        fed = len(c) - 1
        allowed[row : row + fed, L + S : row] = False  # earlier candidates are invisible
        rows += [L + S - 1] + list(range(row, row + fed))
        targets += c
        owner += [k] * len(c)
        row += fed
    return StreamingLayout(
        prefix_ids=prefix, frame_ids=frame, suffix_ids=suffix, candidates=candidates,
        grid_thw=grid, prefix_positions=prefix_pos, frame_positions=frame_pos, frame_span=span,
        step_positions=step_pos, step_allowed=allowed,
        score_rows=torch.tensor(rows, device=device),
        score_targets=torch.tensor(targets, device=device),
        score_candidate=torch.tensor(owner, device=device),
    )


# ---- the reference-equivalent check ------------------------------------------------------------
@torch.no_grad()
def full_prefill_scores(
    model: JanusVLNModel,
    layout: StreamingLayout,
    frame_embeds: Sequence[Tensor],
    context_positions: Tensor | None = None,
) -> Tensor:
    """Candidate log-probabilities from a plain full prefill of the streaming token layout.

    For each action, one stock transformers forward (the model's configured attention, its own
    causal mask, no cache) over ``prefix + frames + suffix + candidate``, with the frames'
    visual embeddings ``frame_embeds`` (time order, each ``[tokens_per_image, hidden]``).
    Positions: transformers' ``get_rope_index`` over that sequence when
    ``context_positions`` is None; else ``context_positions`` (``[3, P + n * L]``) for prefix
    and frames (e.g. the positions the streaming cache kept, with gaps after an eviction) and
    the text continuing from their maximum + 1. Returns ``[num_actions]`` float32 sums of token
    log-probabilities, comparable to :attr:`StreamingPolicy.last_scores`.
    """
    n = len(frame_embeds)
    images = torch.cat(list(frame_embeds), 0)
    grids = torch.tensor([layout.grid_thw] * n) if n else None
    scores = []
    for k, cand in enumerate(layout.candidates):
        ids = torch.tensor([layout.full_ids(n, k)])
        embeds = model.embed(ids, images if n else None)
        if context_positions is None:
            pos, _ = model.rope_positions(ids, grids)
        else:
            ctx = context_positions.to(model.device)
            tail = len(layout.suffix_ids) + len(cand)
            text = torch.arange(tail, device=model.device) + int(ctx.max()) + 1
            pos = torch.cat([ctx, text.expand(3, -1)], dim=1)[:, None]
        logits = model.qwen(inputs_embeds=embeds, position_ids=pos, use_cache=False).logits[0]
        logp = logits.float().log_softmax(-1)
        start = ids.shape[1] - len(cand)
        rows = torch.arange(start - 1, ids.shape[1] - 1, device=logp.device)
        scores.append(logp[rows, torch.tensor(cand, device=logp.device)].sum())
    return torch.stack(scores)


# ---- the policy --------------------------------------------------------------------------------
@contextlib.contextmanager
def _stage(timings: dict[str, float], name: str, device: torch.device, sync: bool
           ) -> Iterator[None]:
    """Time a stage (seconds into ``timings[name]``), as a ``stage:<name>`` profiler range."""
    if sync and device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    try:
        with torch.profiler.record_function("stage:" + name):
            yield
    finally:
        if sync and device.type == "cuda":
            torch.cuda.synchronize(device)
        timings[name] = time.perf_counter() - start


def _sdpa_without_cudnn() -> contextlib.AbstractContextManager:
    """SDPA limited to flash, memory-efficient and math (a graph capture's second try)."""
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                        SDPBackend.MATH])


class StreamingPolicy(JanusVLNPolicy):
    """JanusVLN with the full dual implicit memory (``mode: streaming``), one LLM forward a step.

    Owns the episode state: the spatial cache, the semantic cache, the layout of the current
    instruction and the step counter. Same weights and the same :class:`Policy` contract as
    :class:`JanusVLNPolicy` (:func:`janus_core.factory.build_policy` returns this class when
    ``cfg.mode`` is ``streaming``).

    Per step: resize the frame; VGGT on it against the spatial cache; the Qwen ViT on it alone;
    fuse (``vit + lam * vggt`` of this frame); one LLM forward over the frame, the step text
    and the 4 candidates on top of the semantic cache; keep the frame's K/V. ``act`` returns
    timings for ``preprocess``, ``vggt``, ``vit``, ``llm``, ``action`` and ``total`` (seconds)
    and ``probs`` (action name -> probability among the 4 candidates).

    With ``static_shapes`` (or ``cuda_graphs``) the caches are the fixed-shape
    :mod:`janus_core.static_memory` ones and the three stages run on static buffers
    (:mod:`janus_core.static_stages`); with ``cuda_graphs`` on CUDA each stage is replayed as a
    CUDA graph (:class:`janus_core.cuda_graphs.StageGraphs`; :meth:`graph_status` says which
    stages run as graphs). Same frames held, same eviction, same scores up to float rounding.

    ``options`` (default ``cfg.streaming``): see :class:`janus_core.config.StreamingConfig`.
    The model may be shared with a reference-mode policy (not at the same time); ``quantize``
    replaces its weights in place.
    """

    def __init__(self, model: JanusVLNModel, processor: JanusProcessor,
                 options: StreamingConfig | None = None):
        cfg = model.cfg
        if cfg.prompt_style != "eval":
            raise ValueError(
                "streaming needs prompt_style 'eval' (images back to back in the prompt), got "
                f"{cfg.prompt_style!r}"
            )
        self.cfg = cfg
        self.options = options if options is not None else cfg.streaming
        # cuda_graphs (the default) takes the fixed-shape path on CUDA only; a CPU runs the
        # plain eager step, which is faster there (no padding to buckets, no full-buffer masks)
        graphs = self.options.cuda_graphs and model.device.type == "cuda"
        if graphs and model.vggt is not None and not self.options.lean_vggt:
            log.warning("streaming.cuda_graphs needs lean_vggt; running the eager step")
            graphs = False
        self.static = self.options.static_shapes or graphs
        if self.static and model.vggt is not None and not self.options.lean_vggt:
            raise ValueError("streaming.static_shapes needs streaming.lean_vggt")
        if self.options.quantize != "none":
            from janus_core.quantize import quantize_model

            quantize_model(model, self.options.quantize, self.options.quantize_parts)
        self.model = model.eval()
        self.processor = processor
        self.max_new_tokens = cfg.max_new_tokens
        self.eos_token_ids = ()
        self.spatial_cache: SpatialCache | None = None
        self._rope = None
        self._side_stream = None
        geo, device = model.geometry, model.device
        if model.vggt is not None:
            agg = model.vggt.aggregator
            if agg.rope is not None and (self.options.lean_vggt or self.static):
                self._rope = agg.rope_tables(geo.vggt_height, geo.vggt_width, device)
            if self.static:
                tokens = geo.vggt_tokens_per_frame(cfg.vggt.num_register_tokens)
                lean = dataclasses.replace(cfg.vggt, depth=feature_depth(cfg))
                self.spatial_cache = StaticSpatialCache(lean, cfg.memory, tokens, device,
                                                        model.dtype)
            elif self.options.lean_vggt:
                self.spatial_cache = new_lean_spatial_cache(model)
            else:
                self.spatial_cache = model.new_spatial_cache()
        cache_cls = StaticSemanticCache if self.static else SemanticCache
        self.semantic_cache = cache_cls(
            cfg.qwen, cfg.memory, frame_tokens=geo.tokens_per_image + 2,
            image_tokens=geo.tokens_per_image, device=device, dtype=model.dtype,
        )
        self._attention = REPEAT_ATTENTION
        if self.options.llm_attention == "grouped":
            if grouped_attention_supported(device, model.dtype):
                self._attention = GROUPED_ATTENTION
            else:
                log.warning("llm_attention 'grouped' falls back to 'repeat' on this device")
        self.graphs = StageGraphs(device, enabled=graphs, retry_context=_sdpa_without_cudnn)
        self._vit_step: StaticViT | None = None
        self._vggt_step: StaticVGGTStep | None = None
        self._llm_step: StaticLLMStep | None = None
        if self.static:
            self._vit_step = StaticViT(model, processor.geometry.grid_thw)
            if model.vggt is not None:
                self._vggt_step = StaticVGGTStep(model, self.spatial_cache, self._rope)
            self._llm_step = StaticLLMStep(
                model, self.semantic_cache, self._attention, self._vit_step.out,
                None if self._vggt_step is None else self._vggt_step.out,
            )
            if self.options.overlap_encoders:
                log.warning("overlap_encoders is ignored with static_shapes / cuda_graphs")
        self.layout: StreamingLayout | None = None
        self.instruction: str | None = None
        self.step = 0
        self.frames: list[np.ndarray] = []  # unused (reference keeps its history here)
        self.last_scores: Tensor | None = None  # the last step's candidate log-probabilities
        self.last_evicted: int | None = None
        self.last_token_ids: list[int] = []
        self._layouts: dict[str, StreamingLayout] = {}
        self._masks: dict[tuple[int, int], Tensor] = {}

    # ---- episode ---------------------------------------------------------------------------------
    def reset(self, instruction: str) -> None:
        """Start an episode: clear both memories, lay out the prompt and prefill its prefix.

        Call before the first ``act`` of every episode. Runs one LLM forward over the prefix
        (the system turn and the user-turn header, about 60 tokens at full size).
        """
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"instruction must be a non-empty string, got {instruction!r}")
        if instruction not in self._layouts:
            if len(self._layouts) > 8:
                self._layouts.clear()
            self._layouts[instruction] = build_layout(
                self.model, self.processor, instruction, self.options.score_eos
            )
        layout = self.layout = self._layouts[instruction]
        self.instruction = instruction
        self.step = 0
        self.last_scores, self.last_evicted = None, None
        if self.spatial_cache is not None:
            self.spatial_cache.reset()
        cache = self.semantic_cache
        scratch = bucket_length(layout.scratch_len) if self.static else layout.scratch_len
        cache.reset(len(layout.prefix_ids), scratch)
        self._masks.clear()
        embed = self.model.qwen.get_input_embeddings()
        device = self.model.device
        with torch.no_grad():
            ids = torch.tensor(layout.step_ids(), device=device)
            text = embed(ids)
            L = len(layout.frame_ids)
            self._vision_start, self._vision_end = text[:1], text[L - 1 : L]
            self._step_text = text[L:]  # suffix + candidates: the same every step
            prefix = embed(torch.tensor(layout.prefix_ids, device=device))
            allowed = torch.tril(torch.ones(len(prefix), len(prefix), dtype=torch.bool,
                                            device=device))
            self._forward(prefix, layout.prefix_positions, allowed)
            cache.end_prefix(int(layout.prefix_positions.max()) + 1)
            if self.static:
                cache.set_step_structure(padded_structure(layout.step_allowed,
                                                          cache.step_tokens))
                generation = self._llm_step.generation
                self._llm_step.set_layout(layout, text)
                if self._llm_step.generation != generation:
                    self.graphs.drop("llm")  # its buffers were reallocated

    def _mask(self, start: int, allowed: Tensor) -> Tensor:
        """Additive mask ``[1, 1, q, start + q]``: held keys visible, new keys per ``allowed``."""
        key = (start, allowed.shape[0])
        if key not in self._masks:
            q = allowed.shape[0]
            width = -(-(start + q) // 16) * 16  # aligned rows for the fused kernels
            full = torch.zeros((q, width), dtype=self.model.dtype, device=self.model.device)
            full[:, start : start + q] = additive_mask(allowed, self.model.dtype)
            if len(self._masks) > 2:
                self._masks.clear()
            self._masks[key] = full[None, None, :, : start + q]
        return self._masks[key]

    def _forward(self, embeds: Tensor, positions: Tensor, allowed: Tensor) -> Tensor:
        """One LLM forward of new tokens on top of the semantic cache; final hidden states."""
        cache = self.semantic_cache
        start = cache.begin(embeds.shape[0])
        mask = self._mask(start, allowed)
        cache_position = torch.arange(start, start + embeds.shape[0], device=embeds.device)
        return decoder_forward(self.model.qwen.model.language_model, embeds, positions, mask,
                               cache, cache_position, self._attention)

    # ---- one step ------------------------------------------------------------------------------
    def _vggt(self, frame: np.ndarray) -> Tensor:
        image = self.processor.vggt_input(frame)
        if self.options.lean_vggt:
            return lean_vggt_embeds(self.model, image, self.spatial_cache, self._rope)
        return self.model.encode_vggt(image, self.spatial_cache)

    def encode_frame(self, frame: np.ndarray, timings: dict[str, float]) -> Tensor:
        """VGGT (updating the spatial cache) and ViT on one resized frame; fused embeddings.

        With ``overlap_encoders`` on CUDA the ViT runs on a side stream while VGGT runs on the
        current one; ``vggt`` and ``vit`` are then each stream's GPU time (CUDA events, they
        overlap) and ``encoders`` the wall time of both.
        """
        model, proc, device = self.model, self.processor, self.model.device
        sync = self.options.stage_sync
        if self.options.overlap_encoders and device.type == "cuda" and model.vggt is not None:
            return self._encode_overlapped(frame, timings)
        vggt = None
        if model.vggt is not None:
            with _stage(timings, "vggt", device, sync):
                vggt = self._vggt(frame)
        with _stage(timings, "vit", device, sync):
            pixel_values, grid_thw = proc.qwen_inputs([frame])
            vit = model.encode_images(pixel_values, grid_thw)
        return model.fuse(vit, vggt, 1)

    def _encode_overlapped(self, frame: np.ndarray, timings: dict[str, float]) -> Tensor:
        model, device = self.model, self.model.device
        if self._side_stream is None:
            self._side_stream = torch.cuda.Stream(device)
        main, side = torch.cuda.current_stream(device), self._side_stream
        events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        with _stage(timings, "encoders", device, self.options.stage_sync):
            pixel_values, grid_thw = self.processor.qwen_inputs([frame])
            side.wait_stream(main)
            with torch.cuda.stream(side):
                events[0].record(side)
                vit = model.encode_images(pixel_values, grid_thw)
                events[1].record(side)
            events[2].record(main)
            vggt = self._vggt(frame)
            events[3].record(main)
            main.wait_stream(side)
            vit.record_stream(main)
            fused = model.fuse(vit, vggt, 1)
        if self.options.stage_sync:
            timings["vit"] = events[0].elapsed_time(events[1]) / 1e3
            timings["vggt"] = events[2].elapsed_time(events[3]) / 1e3
        return fused

    def _static_scores(self, frame: np.ndarray, timings: dict[str, float]) -> Tensor:
        """The fixed-shape step: VGGT, ViT and LLM stages (graphs or eager); scores ``[4]``.

        Leaves the frame's fused embeddings in the LLM stage's ``fused`` for ``commit_frame``.
        """
        device, sync = self.model.device, self.options.stage_sync
        if self._vggt_step is not None:
            spatial = self.spatial_cache
            with _stage(timings, "vggt", device, sync):
                self._vggt_step.load(self.processor.vggt_input(frame))
                self.graphs.run(("vggt", spatial.needs_mask), self._vggt_step.run)
                spatial.mark_written()
                spatial.commit()
        with _stage(timings, "vit", device, sync):
            pixel_values, _ = self.processor.qwen_inputs([frame])
            self._vit_step.load(pixel_values)
            self.graphs.run(("vit",), self._vit_step.run)
        cache, llm = self.semantic_cache, self._llm_step
        with _stage(timings, "llm", device, sync):
            llm.set_positions(cache.next_position)
            cache.begin(cache.step_tokens)
            self.graphs.run(("llm", cache.step_tokens, llm.generation), llm.run)
            cache.mark_written()
        return llm.scores

    @torch.no_grad()
    def act(self, observation: Observation) -> StepResult:
        """Run one streaming step on ``observation.rgb`` (HxWx3 uint8, any camera size).

        ``JanusProcessor`` brings the frame to the model's input. A frame of an absurd size, the
        wrong dtype or channel count raises ValueError and leaves the episode state unchanged.
        """
        if self.instruction is None or self.layout is None:
            raise RuntimeError("call reset(instruction) before act()")
        layout, cache, device = self.layout, self.semantic_cache, self.model.device
        sync = self.options.stage_sync
        timings: dict[str, float] = {}
        t = self.step
        start = time.perf_counter()
        with _stage(timings, "preprocess", device, sync):
            frame = self.processor.preprocess_frame(observation.rgb)
        if self.static:
            scores = self._static_scores(frame, timings)
            fused = self._llm_step.fused
        else:
            fused = self.encode_frame(frame, timings)
            with _stage(timings, "llm", device, sync):
                embeds = torch.cat([self._vision_start, fused.to(self._step_text.dtype),
                                    self._vision_end, self._step_text])
                positions = layout.step_positions + cache.next_position
                hidden = self._forward(embeds, positions, layout.step_allowed)
                logits = self.model.qwen.lm_head(hidden[layout.score_rows])
        with _stage(timings, "action", device, sync):
            if not self.static:
                logp = logits.float().log_softmax(-1)
                token_logp = logp.gather(1, layout.score_targets[:, None])[:, 0]
                scores = torch.zeros(len(layout.candidates), device=device).index_add_(
                    0, layout.score_candidate, token_logp
                )
            scores = scores.clone()
            self.last_evicted = cache.commit_frame(
                fused, cache.next_position + layout.frame_span
            )
            self.step += 1
            probs = scores.softmax(0).tolist()
            best = int(np.argmax(probs))
            action = Action(best)
            if t >= self.cfg.max_steps:
                action = Action.STOP
        self.last_scores = scores
        self.last_token_ids = layout.candidates[best]
        timings["total"] = time.perf_counter() - start
        if t >= self.cfg.max_steps:
            log.info("step %d: forced STOP (max_steps %d)", t, self.cfg.max_steps)
        return StepResult(
            action=action, timings=timings,
            probs={a.name: p for a, p in zip(Action, probs)},
            text=Action(best).name, parsed=True, step=t,
        )

    def graph_status(self) -> dict[str, str]:
        """Per stage run so far: ``graph``, ``eager``, or why its capture failed."""
        return self.graphs.status()

    def close(self) -> None:
        """Drop both memories, the graphs and the model reference; free cached GPU memory."""
        self.graphs.clear()
        self._vit_step = self._vggt_step = self._llm_step = None
        self.spatial_cache = None
        self.semantic_cache = None
        self._masks = {}
        self._layouts = {}
        device = self.model.device
        self.model = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
