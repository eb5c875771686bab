"""Episode memory as explicit objects: the spatial cache and the semantic cache.

:class:`SpatialCache` holds VGGT global-block K/V (both modes). :class:`SemanticCache` holds the
LLM's K/V over the prompt prefix and the held frames, plus the frames' visual embeddings
(``streaming`` mode, docs/streaming.md).

The policy owns one :class:`SpatialCache` per episode (``reset()`` between episodes) and passes it
to :meth:`janus_core.vggt.Aggregator.forward`; the model itself keeps no episode state.

Spatial memory (JanusVLN paper section 3.2, release ``StartRecentKVCache(8, 48)``): for each of the
VGGT aggregator's global-attention blocks, the keys and values of the first ``initial`` frames of
the episode and of the ``recent`` most recent frames. A new frame's queries attend to those plus
the frame's own keys; afterwards the frame is kept and the oldest non-initial frame is evicted
once more than ``recent`` are held.

How this differs from the release (same outputs, less work): the release stores K before the q/k
LayerNorm and RoPE, so every step it re-normalises and re-rotates all cached keys, concatenates
the new frame onto the cache and then slices out the trimmed cache (two full copies). Here keys
are stored already normalised and rotated (every frame uses the same patch coordinates and there
is no temporal position, so a stored key never changes), in one buffer preallocated for
``initial + recent + 1`` frames. A step writes one frame's K/V into a free slot and attends over a
prefix view of the buffer; eviction only relabels a slot as free. Nothing is copied but the new
frame.
"""

from __future__ import annotations

import torch
from torch import Tensor

from janus_core.config import MemoryConfig, QwenVLConfig, VGGTConfig

_FREE = -1


class SpatialCache:
    """Per-episode K/V of the VGGT global blocks: first ``initial`` + last ``recent`` frames.

    Storage: one tensor ``[layers, 2 (K, V), B, heads, slots * tokens_per_frame, head_dim]``
    with ``slots = initial + recent + 1``, allocated on the first write (on the device and dtype
    given here, or those of the first K written). Keys are stored after q/k LayerNorm and RoPE.

    Slots: frame ``t < initial`` lives in slot ``t`` for the whole episode (the first-frame
    reference, episode frame 0, is never moved or overwritten). The remaining ``recent + 1`` slots
    form a ring: each step writes the new frame into the one free slot (the "+1 working slot"),
    so during attention all held frames and the new one are present, and after the step the
    oldest recent frame's slot becomes the free one. Held frames plus the slot being written are
    always the prefix ``[0, min(num_frames + 1, slots))`` of the buffer, so attention reads a view.

    Key order: within that prefix, recent frames are in ring order, not time order. Softmax
    attention without a mask and without temporal positions does not depend on key order, so
    results equal the release's [initial, recent..., current] order up to float rounding.

    Protocol used by the aggregator for one frame: ``append(layer, k, v)`` once per global block
    (returns the K/V to attend over), then ``commit()``. Until ``commit()`` the held frames do
    not change, so a step that fails half way leaves the cache as it was.

    All batch rows share one episode timeline (same frame count, reset together).
    """

    def __init__(
        self,
        vggt_cfg: VGGTConfig,
        memory_cfg: MemoryConfig,
        tokens_per_frame: int,
        batch_size: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        if tokens_per_frame <= 0:
            raise ValueError(f"tokens_per_frame must be positive, got {tokens_per_frame}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if memory_cfg.spatial_initial < 0 or memory_cfg.spatial_recent < 0:
            raise ValueError(
                "memory.spatial_initial and memory.spatial_recent must be >= 0, got "
                f"{memory_cfg.spatial_initial} and {memory_cfg.spatial_recent}"
            )
        self.num_layers = vggt_cfg.depth
        self.num_heads = vggt_cfg.num_heads
        self.head_dim = vggt_cfg.embed_dim // vggt_cfg.num_heads
        self.initial = memory_cfg.spatial_initial
        self.recent = memory_cfg.spatial_recent
        self.num_slots = self.initial + self.recent + 1
        self.tokens_per_frame = tokens_per_frame
        self.batch_size = batch_size
        self.device = torch.device(device) if device is not None else None
        self.dtype = dtype
        self._kv: Tensor | None = None
        self.reset()

    # ---- sizes -------------------------------------------------------------------------------
    @staticmethod
    def size_bytes(
        vggt_cfg: VGGTConfig,
        memory_cfg: MemoryConfig,
        tokens_per_frame: int,
        dtype: torch.dtype,
        batch_size: int = 1,
        working_slot: bool = True,
    ) -> int:
        """Cache bytes: layers * 2 * B * heads * frames * tokens * head_dim * itemsize.

        ``frames = initial + recent + 1`` with ``working_slot=True`` (what :attr:`nbytes` reports
        once allocated), ``initial + recent`` without it (the frames held between steps, i.e. the
        release's cache after trimming). Full size, bf16, 1615 tokens: 9.05 GB with the working
        slot, 8.89 GB without (158.8 MB per frame).
        """
        frames = memory_cfg.spatial_initial + memory_cfg.spatial_recent + int(working_slot)
        head_dim = vggt_cfg.embed_dim // vggt_cfg.num_heads
        itemsize = torch.empty((), dtype=dtype).element_size()
        return (
            vggt_cfg.depth * 2 * batch_size * vggt_cfg.num_heads * frames * tokens_per_frame
            * head_dim * itemsize
        )

    @property
    def nbytes(self) -> int:
        """Bytes allocated: 0 before the first write, then ``size_bytes(..., working_slot=True)``.

        Constant for the rest of the cache's life: ``reset()`` keeps the buffer for reuse.
        """
        return 0 if self._kv is None else self._kv.numel() * self._kv.element_size()

    # ---- episode bookkeeping -----------------------------------------------------------------
    def reset(self) -> None:
        """Forget every frame (new episode). Keeps the allocated buffer; nothing stale is read."""
        self._slot_frame = [_FREE] * self.num_slots  # episode frame index held by each slot
        self._frames_seen = 0
        self._next_slot = 0  # the free slot the next frame is written into
        self._span = 1  # slots attended during the next frame: held + the one being written
        self._pending_layers: set[int] = set()

    @property
    def frames_seen(self) -> int:
        """Episode frames committed since the last reset (the next frame's episode index)."""
        return self._frames_seen

    @property
    def num_frames(self) -> int:
        """Frames currently held (at most initial + recent)."""
        return sum(f != _FREE for f in self._slot_frame)

    @property
    def frame_ids(self) -> list[int]:
        """Episode indices of the held frames, sorted."""
        return sorted(f for f in self._slot_frame if f != _FREE)

    # ---- the per-frame protocol --------------------------------------------------------------
    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write the new frame's K/V for one global block; return the K/V to attend over.

        k, v: [B, heads, tokens_per_frame, head_dim], k already q/k-normalised and rotated.
        Returns views [B, heads, (held + 1) * tokens_per_frame, head_dim] of the buffer (held
        frames and this one, in slot order). Writing the same layer twice before ``commit()``
        overwrites (a retried step).
        """
        self._check_kv(layer, k, v)
        T = self.tokens_per_frame
        start = self._next_slot * T
        self._kv[layer, 0, :, :, start : start + T] = k
        self._kv[layer, 1, :, :, start : start + T] = v
        self._pending_layers.add(layer)
        end = self._span * T
        return self._kv[layer, 0, :, :, :end], self._kv[layer, 1, :, :, :end]

    def attention_mask(self) -> Tensor | None:
        """Additive mask over the K/V that ``append`` returns; None: attend to all of them.

        Always None here (``append`` returns exactly the held frames and the new one); the
        fixed-shape :class:`janus_core.static_memory.StaticSpatialCache` masks its free slots.
        """
        return None

    def _check_kv(self, layer: int, k: Tensor, v: Tensor) -> None:
        """Validate one layer's new K/V (shape, no autograd, device); allocate on first use."""
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"layer must be in [0, {self.num_layers}), got {layer}")
        expected = (self.batch_size, self.num_heads, self.tokens_per_frame, self.head_dim)
        for name, t in (("k", k), ("v", v)):
            if tuple(t.shape) != expected:
                raise ValueError(
                    f"{name} must have shape [B, heads, tokens, head_dim] = {expected}, "
                    f"got {tuple(t.shape)}"
                )
        if k.requires_grad or v.requires_grad:
            raise RuntimeError(
                "SpatialCache is inference-only: run the aggregator under torch.no_grad() "
                "(or with frozen weights) when a cache is given"
            )
        if self._kv is None:
            self._allocate(k)
        elif k.device != self._kv.device:
            raise ValueError(f"k is on {k.device} but the cache lives on {self._kv.device}")

    def commit(self) -> None:
        """Keep the frame just written (all layers) and evict beyond the windows."""
        if len(self._pending_layers) != self.num_layers:
            missing = sorted(set(range(self.num_layers)) - self._pending_layers)
            raise RuntimeError(f"commit() before every layer was written; missing {missing}")
        self._slot_frame[self._next_slot] = self._frames_seen
        self._frames_seen += 1
        self._pending_layers.clear()
        recent = [f for f in self._slot_frame if f >= self.initial]
        if len(recent) > self.recent:  # at most one over: drop the oldest non-initial frame
            self._slot_frame[self._slot_frame.index(min(recent))] = _FREE
        self._next_slot = self._slot_frame.index(_FREE)
        self._span = min(self.num_frames + 1, self.num_slots)

    def frame_kv(self, layer: int, frame_id: int) -> tuple[Tensor, Tensor]:
        """Stored K/V of a held episode frame for one layer: views [B, heads, tokens, head_dim]."""
        if frame_id not in self._slot_frame or frame_id == _FREE:
            raise KeyError(f"frame {frame_id} is not held; held frames: {self.frame_ids}")
        start = self._slot_frame.index(frame_id) * self.tokens_per_frame
        stop = start + self.tokens_per_frame
        return self._kv[layer, 0, :, :, start:stop], self._kv[layer, 1, :, :, start:stop]

    def _allocate(self, like: Tensor) -> None:
        device = self.device if self.device is not None else like.device
        dtype = self.dtype if self.dtype is not None else like.dtype
        shape = (
            self.num_layers,
            2,
            self.batch_size,
            self.num_heads,
            self.num_slots * self.tokens_per_frame,
            self.head_dim,
        )
        self._kv = torch.empty(shape, device=device, dtype=dtype)
        self.device, self.dtype = self._kv.device, self._kv.dtype

    def __repr__(self) -> str:
        return (
            f"SpatialCache(initial={self.initial}, recent={self.recent}, "
            f"frames_seen={self.frames_seen}, held={self.frame_ids}, nbytes={self.nbytes})"
        )


class SemanticCache:
    r"""Per-episode semantic memory: LLM K/V of the prefix and held frames, and their embeddings.

    The embeddings are each held frame's visual tokens as fed to the LLM (Qwen ViT + ``lam`` *
    VGGT merger output).

    Used by ``streaming`` mode (:mod:`janus_core.streaming`). The prompt is laid out as the
    release's evaluation prompt with every frame as an image (docs/streaming.md)::

        prefix (system turn + "<|im_start|>user\n")   kept for the episode
        frame 0   <|vision_start|> <|image_pad|> x N <|vision_end|>   (frame_tokens tokens)
        frame 1   ...                                  initial frames: kept for the episode;
        ...                                            the others: a sliding window
        step text (task text + assistant prefix) and the action candidates: never kept

    **Which frames are held.** The first ``initial`` frames of the episode and the ``recent``
    most recent others (``memory.semantic_initial`` / ``semantic_recent``). During a step the
    new frame is appended, so the LLM sees up to ``initial + recent`` frames plus the current
    one; :meth:`commit_frame` then keeps the new frame and evicts the oldest non-initial frame
    once more than ``recent`` non-initial frames are held (the spatial cache's rule).

    **What eviction drops.** The frame's whole K/V span (all its ``frame_tokens`` tokens,
    vision_start and vision_end included, in every layer) and its embeddings. Nothing else
    changes: the kept tokens' K/V are not recomputed, so they still carry what they attended to
    when they were computed (the evicted frame included), as in StreamingLLM and in the
    release's VGGT cache.

    **Positions (mRoPE).** Keys are stored after rotary embedding, at the positions they were
    computed with. Positions are never reused or shifted: :attr:`next_position` only grows
    (prefix, then each frame's position span in arrival order), so a new frame's tokens are
    rotated beyond every held token and the relative positions between held tokens stay those
    they had when written. Eviction leaves a gap in the positions, and nothing re-rotates.

    **Storage.** One buffer ``[layers, 2 (K, V), 1, kv_heads, capacity, head_dim]`` with
    ``capacity = prefix + (initial + recent + 1) * frame_tokens + scratch``; a step writes its
    new tokens (the frame, then the step text and candidates) at ``write_start = prefix +
    held * frame_tokens``, so the held tokens and the new ones always form the prefix
    ``[0, write_start + new)`` of the buffer and attention reads a view. The frame slots are in
    slot order, not time order (attention with explicit masks does not depend on key order).
    When all ``initial + recent`` slots are full, the new frame sits after them and
    :meth:`commit_frame` copies its span into the evicted frame's slot (one frame's K/V, the only
    copy). Embeddings: ``[initial + recent, image_tokens, hidden]``. Nothing else is allocated
    per step.

    **Protocol** (the policy): ``reset(prefix_len, scratch_len)``; ``begin(prefix_len)``, one
    LLM forward over the prefix, ``end_prefix(position_end)``; then per step ``begin(new)``,
    one LLM forward (transformers calls :meth:`update` once per layer), ``commit_frame(...)``.
    """

    def __init__(
        self,
        qwen_cfg: QwenVLConfig,
        memory_cfg: MemoryConfig,
        frame_tokens: int,
        image_tokens: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        if image_tokens <= 0 or frame_tokens < image_tokens:
            raise ValueError(
                f"need 0 < image_tokens <= frame_tokens, got {image_tokens} and {frame_tokens}"
            )
        if memory_cfg.semantic_initial < 0 or memory_cfg.semantic_recent < 0:
            raise ValueError(
                "memory.semantic_initial and memory.semantic_recent must be >= 0, got "
                f"{memory_cfg.semantic_initial} and {memory_cfg.semantic_recent}"
            )
        self.num_layers = qwen_cfg.num_hidden_layers
        self.num_kv_heads = qwen_cfg.num_key_value_heads
        self.head_dim = qwen_cfg.head_dim
        self.hidden_size = qwen_cfg.hidden_size
        self.initial = memory_cfg.semantic_initial
        self.recent = memory_cfg.semantic_recent
        self.num_slots = self.initial + self.recent
        self.frame_tokens = frame_tokens
        self.image_tokens = image_tokens
        self.device = torch.device(device) if device is not None else None
        self.dtype = dtype
        self.prefix_len = 0
        self.scratch_len = 0
        self._kv: Tensor | None = None
        self._embeds: Tensor | None = None
        self.reset(0, 0)

    # ---- sizes -------------------------------------------------------------------------------
    @staticmethod
    def capacity_for(memory_cfg: MemoryConfig, frame_tokens: int, prefix_len: int,
                     scratch_len: int) -> int:
        """Buffer tokens: ``prefix + (initial + recent + 1) * frame_tokens + scratch``."""
        slots = memory_cfg.semantic_initial + memory_cfg.semantic_recent + 1
        return prefix_len + slots * frame_tokens + scratch_len

    @staticmethod
    def size_bytes(
        qwen_cfg: QwenVLConfig,
        memory_cfg: MemoryConfig,
        frame_tokens: int,
        image_tokens: int,
        prefix_len: int,
        scratch_len: int,
        dtype: torch.dtype,
    ) -> int:
        """Bytes held once allocated: K/V buffer plus the embeddings of the frame slots.

        Full size (28 layers, 4 K/V heads of 128, 393 tokens per frame, 8 + 48 frames) in
        bf16: 57,344 bytes per token, about 1.26 GiB of K/V for a 60-token prefix and a
        256-token scratch, plus 157 MB of embeddings.
        """
        itemsize = torch.empty((), dtype=dtype).element_size()
        tokens = SemanticCache.capacity_for(memory_cfg, frame_tokens, prefix_len, scratch_len)
        kv = (qwen_cfg.num_hidden_layers * 2 * qwen_cfg.num_key_value_heads * tokens
              * qwen_cfg.head_dim * itemsize)
        slots = memory_cfg.semantic_initial + memory_cfg.semantic_recent
        return kv + slots * image_tokens * qwen_cfg.hidden_size * itemsize

    @property
    def capacity(self) -> int:
        """Tokens the K/V buffer holds (0 before allocation)."""
        return 0 if self._kv is None else self._kv.shape[4]

    @property
    def nbytes(self) -> int:
        """Bytes allocated (K/V buffer + embeddings); unchanged by ``reset`` unless it grows."""
        total = 0
        for t in (self._kv, self._embeds):
            if t is not None:
                total += t.numel() * t.element_size()
        return total

    # ---- episode bookkeeping -----------------------------------------------------------------
    def reset(self, prefix_len: int, scratch_len: int) -> None:
        """Forget everything (new episode) and size for a prefix and a per-step scratch.

        ``scratch_len`` is the most tokens a step writes after its frame (step text and action
        candidates). The buffer is kept when it is large enough, else freed and reallocated on
        the next write.
        """
        if prefix_len < 0 or scratch_len < 0:
            raise ValueError(f"prefix_len and scratch_len must be >= 0, got {prefix_len}, "
                             f"{scratch_len}")
        self.prefix_len, self.scratch_len = prefix_len, scratch_len
        needed = self.capacity_for(
            MemoryConfig(semantic_initial=self.initial, semantic_recent=self.recent),
            self.frame_tokens, prefix_len, scratch_len,
        )
        if self._kv is not None and self._kv.shape[4] < needed:
            self._kv = None  # reallocated by the next update()
        self._needed = needed
        self._slot_frame = [_FREE] * self.num_slots  # episode frame index held by each slot
        self._slot_positions = [(0, 0)] * self.num_slots  # [start, end) mRoPE positions
        self._frames_seen = 0
        self._prefix_done = False
        self._next_position = 0
        self._write_start = 0
        self._write_len = 0
        self._pending_layers: set[int] = set()

    @property
    def frames_seen(self) -> int:
        """Frames committed since the last reset (the next frame's episode index)."""
        return self._frames_seen

    @property
    def num_frames(self) -> int:
        """Frames held (at most initial + recent)."""
        return sum(f != _FREE for f in self._slot_frame)

    @property
    def frame_ids(self) -> list[int]:
        """Episode indices of the held frames, sorted."""
        return sorted(f for f in self._slot_frame if f != _FREE)

    @property
    def next_position(self) -> int:
        """The mRoPE position the next frame starts at (one past every position written)."""
        return self._next_position

    @property
    def held_tokens(self) -> int:
        """Tokens held between steps: prefix + held frames."""
        return (self.prefix_len if self._prefix_done else 0) + self.num_frames * self.frame_tokens

    def _slot_of(self, frame_id: int) -> int:
        if frame_id == _FREE or frame_id not in self._slot_frame:
            raise KeyError(f"frame {frame_id} is not held; held frames: {self.frame_ids}")
        return self._slot_frame.index(frame_id)

    def frame_positions(self, frame_id: int) -> tuple[int, int]:
        """``[start, end)`` mRoPE positions of a held frame (all three axes lie in it)."""
        return self._slot_positions[self._slot_of(frame_id)]

    def frame_span(self, frame_id: int) -> tuple[int, int]:
        """``[start, end)`` buffer indices of a held frame's tokens."""
        start = self.prefix_len + self._slot_of(frame_id) * self.frame_tokens
        return start, start + self.frame_tokens

    def frame_embeds(self, frame_id: int) -> Tensor:
        """Visual embeddings a held frame was prefilled with: view ``[image_tokens, hidden]``."""
        return self._embeds[self._slot_of(frame_id)]

    def token_index(self) -> Tensor:
        """Buffer indices of the held tokens in time order (prefix, then frames by index)."""
        spans = [range(self.prefix_len)] if self._prefix_done else []
        spans += [range(*self.frame_span(f)) for f in self.frame_ids]
        return torch.tensor([i for span in spans for i in span], dtype=torch.long)

    def layer_kv(self, layer: int) -> tuple[Tensor, Tensor]:
        """Held K/V of one layer in buffer order: views ``[1, kv_heads, held_tokens, head_dim]``."""
        end = self.held_tokens
        return self._kv[layer, 0, :, :, :end], self._kv[layer, 1, :, :, :end]

    # ---- the per-forward protocol ------------------------------------------------------------
    def begin(self, num_new: int) -> int:
        """Declare the next LLM forward's new tokens; returns where they go (``write_start``).

        Before the prefix is written, ``num_new`` must equal ``prefix_len`` (the prefix
        forward). After it, a step writes its frame (``frame_tokens``) then at most
        ``scratch_len`` tokens. The forward's keys are then ``[0, kv_length)``.
        """
        if not self._prefix_done:
            if num_new != self.prefix_len:
                raise ValueError(
                    f"the first forward of an episode writes the prefix ({self.prefix_len} "
                    f"tokens), got {num_new}"
                )
            start = 0
        else:
            if not self.frame_tokens <= num_new <= self.frame_tokens + self.scratch_len:
                raise ValueError(
                    f"a step writes one frame ({self.frame_tokens} tokens) plus at most "
                    f"{self.scratch_len} tokens, got {num_new}"
                )
            start = self.prefix_len + self.num_frames * self.frame_tokens
        self._write_start, self._write_len = start, num_new
        self._pending_layers.clear()
        return start

    @property
    def kv_length(self) -> int:
        """Keys the declared forward attends over: held tokens + its new ones."""
        return self._write_start + self._write_len

    def update(
        self, key_states: Tensor, value_states: Tensor, layer_idx: int,
        cache_kwargs: dict | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Cache hook for transformers: store one layer's new (rotated) K/V, return all its K/V.

        key_states/value_states: ``[1, kv_heads, new, head_dim]`` as declared by :meth:`begin`.
        Returns views ``[1, kv_heads, kv_length, head_dim]`` of the buffer.
        """
        if self._write_len == 0:
            raise RuntimeError("SemanticCache.update() without begin(): declare the forward")
        if not 0 <= layer_idx < self.num_layers:
            raise ValueError(f"layer_idx must be in [0, {self.num_layers}), got {layer_idx}")
        expected = (1, self.num_kv_heads, self._write_len, self.head_dim)
        for name, t in (("key", key_states), ("value", value_states)):
            if tuple(t.shape) != expected:
                raise ValueError(f"{name}_states must have shape {expected}, got {tuple(t.shape)}")
        if self._kv is None:
            device = self.device if self.device is not None else key_states.device
            dtype = self.dtype if self.dtype is not None else key_states.dtype
            shape = (self.num_layers, 2, 1, self.num_kv_heads, self._needed, self.head_dim)
            self._kv = torch.zeros(shape, device=device, dtype=dtype)
            self.device, self.dtype = self._kv.device, self._kv.dtype
        start, end = self._write_start, self.kv_length
        self._kv[layer_idx, 0, :, :, start:end] = key_states
        self._kv[layer_idx, 1, :, :, start:end] = value_states
        self._pending_layers.add(layer_idx)
        return self._kv[layer_idx, 0, :, :, :end], self._kv[layer_idx, 1, :, :, :end]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Tokens held between steps (transformers' cache API)."""
        return self.held_tokens

    def _check_written(self, what: str) -> None:
        if len(self._pending_layers) != self.num_layers:
            missing = sorted(set(range(self.num_layers)) - self._pending_layers)
            raise RuntimeError(f"{what} before every layer was written; missing {missing}")

    def end_prefix(self, position_end: int) -> None:
        """Keep the prefix just written; the first frame starts at ``position_end``."""
        if self._prefix_done or self._write_len != self.prefix_len:
            raise RuntimeError("end_prefix() must follow the prefix forward, once per episode")
        self._check_written("end_prefix()")
        self._prefix_done = True
        self._next_position = position_end
        self._write_len = 0

    def _check_frame(self, embeds: Tensor, position_end: int) -> None:
        """Refuse a frame's embeddings of the wrong shape or positions that do not advance."""
        if tuple(embeds.shape) != (self.image_tokens, self.hidden_size):
            raise ValueError(
                f"embeds must be [{self.image_tokens}, {self.hidden_size}], "
                f"got {tuple(embeds.shape)}"
            )
        if position_end <= self._next_position:
            raise ValueError(
                f"position_end {position_end} must exceed next_position {self._next_position}"
            )

    def commit_frame(self, embeds: Tensor, position_end: int) -> int | None:
        """Keep the frame written at ``write_start``; evict beyond the windows.

        ``embeds``: the frame's visual embeddings ``[image_tokens, hidden]``. The frame's
        positions are ``[next_position, position_end)``. Returns the evicted frame's episode
        index (None if nothing was evicted; the new frame itself when ``recent`` is 0 and the
        initial window is full). The step's tokens after the frame are dropped.
        """
        if not self._prefix_done or self._write_len < self.frame_tokens:
            raise RuntimeError("commit_frame() must follow a step forward (begin(), forward)")
        self._check_written("commit_frame()")
        self._check_frame(embeds, position_end)
        frame_id, positions = self._frames_seen, (self._next_position, position_end)
        self._frames_seen += 1
        self._next_position = position_end
        self._write_len = 0
        held = self.num_frames
        evicted = None
        if held < self.num_slots:  # the frame was written into slot `held`: nothing moves
            slot = held
        elif self.recent == 0:  # windows full and no sliding window: the frame is not kept
            return frame_id
        else:  # evict the oldest non-initial frame; the new frame moves into its slot
            slot = self._slot_frame.index(min(f for f in self._slot_frame if f >= self.initial))
            evicted = self._slot_frame[slot]
            src = self._write_start
            dst = self.prefix_len + slot * self.frame_tokens
            self._kv[:, :, :, :, dst : dst + self.frame_tokens] = (
                self._kv[:, :, :, :, src : src + self.frame_tokens]
            )
        if self._embeds is None:
            self._embeds = torch.zeros(
                (self.num_slots, self.image_tokens, self.hidden_size),
                device=self._kv.device, dtype=self._kv.dtype,
            )
        self._embeds[slot] = embeds
        self._slot_frame[slot] = frame_id
        self._slot_positions[slot] = positions
        return evicted

    def __repr__(self) -> str:
        return (
            f"SemanticCache(initial={self.initial}, recent={self.recent}, "
            f"frames_seen={self.frames_seen}, held={self.frame_ids}, "
            f"next_position={self.next_position}, nbytes={self.nbytes})"
        )
