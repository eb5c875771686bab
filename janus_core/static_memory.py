"""Fixed-shape episode memories for streaming mode with static shapes / CUDA graphs.

:class:`StaticSpatialCache` (VGGT global blocks) and :class:`StaticSemanticCache` (the LLM) hold
the same frames as :class:`janus_core.memory.SpatialCache` and
:class:`janus_core.memory.SemanticCache` and evict in the same order (first ``initial`` frames of
the episode kept for good, then the ``recent`` most recent others), but every step has the same
tensor shapes, so one captured CUDA graph per stage replays for the whole episode:

- buffers are allocated once (zero-filled) and written in place; nothing is concatenated;
- the new frame is written with ``index_copy_`` at a device index tensor, so the slot it goes to
  is data, not part of the graph;
- attention reads the whole buffer; an additive mask (a static device tensor) hides the free
  slots and the unused scratch. Masked entries weigh exactly 0 and the buffers hold only finite
  values, so results equal the dynamic caches' up to the float summation order;
- the per-step device state (write index, mask columns, the first-frame flag) is updated in
  place by ``reset``/``commit`` with a few small kernels, outside any graph.

Slots: as in :class:`~janus_core.memory.SpatialCache`, frame ``t < initial`` lives in slot ``t``;
the other ``recent + 1`` slots form a ring, the new frame goes to the one free slot (so during a
step the frame about to be evicted is still visible, as in the release), and an eviction only
relabels a slot as free. Keys in a slot are in ring order, not time order: attention with explicit
masks and stored (rotated) positions does not depend on key order.
"""

from __future__ import annotations

import torch
from torch import Tensor

from janus_core.config import MemoryConfig, QwenVLConfig, VGGTConfig
from janus_core.memory import SemanticCache, SpatialCache

_FREE = -1
_HELD, _WORK, _UNUSED = "held", "work", "free"


def _aligned(n: int, multiple: int = 16) -> int:
    """``n`` rounded up to a multiple (mask rows aligned for the fused attention kernels)."""
    return -(-n // multiple) * multiple


class StaticSpatialCache(SpatialCache):
    """:class:`~janus_core.memory.SpatialCache` with fixed shapes (CUDA-graph capturable).

    Same slots, same eviction and the same protocol (``append`` per global block, then
    ``commit``); the differences:

    - the buffer ``[layers, 2, B, heads, slots * tokens, head_dim]`` is allocated zero-filled
      here (``device`` and ``dtype`` are required) and never reallocated;
    - ``append`` writes the new frame with ``index_copy_`` at :attr:`write_index` and returns
      the whole buffer; :meth:`attention_mask` is an additive mask ``[1, 1, 1, slots * tokens]``
      that hides the free slots while the windows fill, and None once every slot is in use (the
      steady state, where the fused attention kernels without a mask run);
    - :attr:`first_flag` is a 0-d bool tensor, True before episode frame 0 (the aggregator picks
      the reference special tokens from it on the device);
    - after a CUDA graph replay of the step, :meth:`mark_written` stands for the ``append``
      calls the replay made, before ``commit``.
    """

    def __init__(
        self,
        vggt_cfg: VGGTConfig,
        memory_cfg: MemoryConfig,
        tokens_per_frame: int,
        device: torch.device | str,
        dtype: torch.dtype,
        batch_size: int = 1,
    ):
        if device is None or dtype is None:
            raise ValueError("StaticSpatialCache needs a device and a dtype (it allocates now)")
        self._ready = False
        super().__init__(vggt_cfg, memory_cfg, tokens_per_frame, batch_size, device, dtype)
        T, n = self.tokens_per_frame, self.num_slots * self.tokens_per_frame
        self._kv = torch.zeros(
            (self.num_layers, 2, self.batch_size, self.num_heads, n, self.head_dim),
            device=self.device, dtype=self.dtype,
        )
        self._arange = torch.arange(T, device=self.device)
        self.write_index = torch.zeros(T, dtype=torch.long, device=self.device)
        self._mask = torch.zeros((1, 1, 1, _aligned(n)), device=self.device, dtype=self.dtype)
        self._mask = self._mask[..., :n]
        self.first_flag = torch.ones((), dtype=torch.bool, device=self.device)
        self._slot_state: list[bool] | None = None  # what the mask columns say now
        self._flag_state: bool | None = None
        self._ready = True
        self._sync_device_state()

    # ---- device state ------------------------------------------------------------------------
    def _sync_device_state(self) -> None:
        T = self.tokens_per_frame
        torch.add(self._arange, self._next_slot * T, out=self.write_index)
        valid = [f != _FREE or s == self._next_slot for s, f in enumerate(self._slot_frame)]
        low = torch.finfo(self.dtype).min
        for s, ok in enumerate(valid):
            if self._slot_state is None or self._slot_state[s] != ok:
                self._mask[..., s * T : (s + 1) * T].fill_(0.0 if ok else low)
        self._slot_state = valid
        first = self._frames_seen == 0
        if first != self._flag_state:
            self.first_flag.fill_(first)
            self._flag_state = first

    @property
    def needs_mask(self) -> bool:
        """Whether the next step's attention must hide free slots (the windows are filling)."""
        return not all(self._slot_state)

    def attention_mask(self) -> Tensor | None:
        """``[1, 1, 1, slots * tokens]`` additive mask while slots are free, else None."""
        return self._mask if self.needs_mask else None

    # ---- protocol ----------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every frame (new episode); the buffer is kept, its stale slots are masked."""
        super().reset()
        if self._ready:
            self._sync_device_state()

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write the new frame's K/V for one global block; return the whole buffer's K/V.

        k, v: ``[B, heads, tokens_per_frame, head_dim]``; returns views
        ``[B, heads, slots * tokens_per_frame, head_dim]`` (attend with :meth:`attention_mask`).
        """
        self._check_kv(layer, k, v)
        kv = self._kv[layer]
        kv[0].index_copy_(2, self.write_index, k.to(self.dtype))
        kv[1].index_copy_(2, self.write_index, v.to(self.dtype))
        self._pending_layers.add(layer)
        return kv[0], kv[1]

    def mark_written(self) -> None:
        """Record that every layer was written (a replayed CUDA graph ran the ``append`` s)."""
        self._pending_layers = set(range(self.num_layers))

    def commit(self) -> None:
        """Keep the frame just written and evict beyond the windows; update the device state."""
        super().commit()
        self._sync_device_state()

    def __repr__(self) -> str:
        return "Static" + super().__repr__()


class StaticSemanticCache(SemanticCache):
    r"""The LLM's K/V over the prompt prefix and the held frames, in fixed-shape buffers.

    Holds the same frames as :class:`janus_core.memory.SemanticCache` (first ``initial`` +
    ``recent`` most recent, evicted in the same order, the same positions) with the same public
    protocol; see that class for what is kept and why. It inherits that class's slot
    bookkeeping (frame ids, spans, positions, embeddings) and replaces its storage, which here
    never changes shape. Buffer layout (tokens)::

        [0, P)                                   the prefix (P = prefix_len), written once
        [P + s * F, P + (s + 1) * F)             frame slot s, s < initial + recent + 1
        [scratch_start, scratch_start + scratch)  a step's text and candidates (and padding)

    with ``F = frame_tokens``. A step writes ``step_tokens = F + scratch_len`` tokens
    (``scratch_len`` is the padded length bucket of the step text and candidates): the frame to
    its working slot, the rest to the scratch region, through one ``index_copy_`` at
    :attr:`write_index`. It attends over the whole buffer with :meth:`step_mask`
    ``[1, 1, step_tokens, capacity]``: the prefix and the held slots visible to every row, the
    working slot and the scratch as the step's structure says (``set_step_structure``), free
    slots and unused scratch hidden. Eviction relabels a slot; nothing is ever copied.

    The scratch region is as large as the largest bucket seen; a larger one (or another prefix
    length) reallocates the buffers and increments :attr:`generation`, so graphs captured on the
    old buffers are dropped by their owner.

    **Protocol**: ``reset(prefix_len, scratch_len)``; ``begin(prefix_len)``, one LLM forward
    over the prefix (``update`` returns views of the prefix only), ``end_prefix(position_end)``;
    ``set_step_structure(allowed)``; then per step ``begin(step_tokens)``, one LLM forward (or a
    graph replay, then ``mark_written()``), ``commit_frame(embeds, position_end)``.
    """

    def __init__(
        self,
        qwen_cfg: QwenVLConfig,
        memory_cfg: MemoryConfig,
        frame_tokens: int,
        image_tokens: int,
        device: torch.device | str,
        dtype: torch.dtype,
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
        if device is None or dtype is None:
            raise ValueError("StaticSemanticCache needs a device and a dtype")
        self.num_layers = qwen_cfg.num_hidden_layers
        self.num_kv_heads = qwen_cfg.num_key_value_heads
        self.head_dim = qwen_cfg.head_dim
        self.hidden_size = qwen_cfg.hidden_size
        self.initial = memory_cfg.semantic_initial
        self.recent = memory_cfg.semantic_recent
        self.num_slots = self.initial + self.recent  # frames held between steps, at most
        self.frame_slots = self.num_slots + 1  # with the working slot
        self.frame_tokens = frame_tokens
        self.image_tokens = image_tokens
        self.device, self.dtype = torch.device(device), dtype
        self.generation = 0
        self.prefix_len = 0
        self.scratch_len = 0
        self.step_tokens = frame_tokens
        self._kv: Tensor | None = None
        self._mask_store: Tensor | None = None
        self._index_store: Tensor | None = None
        self._scratch_capacity = 0
        self._layout_prefix = -1
        self._embeds = torch.zeros((self.frame_slots, image_tokens, self.hidden_size),
                                   device=self.device, dtype=self.dtype)
        self._arange = torch.arange(frame_tokens, device=self.device)
        self._frame_block: Tensor | None = None
        self._structure: Tensor | None = None
        self._clear()

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """Tokens the K/V buffer holds (every step attends over all of them)."""
        return 0 if self._kv is None else self._kv.shape[4]

    @property
    def scratch_start(self) -> int:
        """Buffer index of the scratch region (a step's tokens after its frame)."""
        return self.prefix_len + self.frame_slots * self.frame_tokens

    @property
    def nbytes(self) -> int:
        """Bytes allocated: K/V buffer, frame embeddings, mask and index buffers."""
        return sum(t.numel() * t.element_size()
                   for t in (self._kv, self._embeds, self._mask_store, self._index_store)
                   if t is not None)

    # ---- episode bookkeeping -----------------------------------------------------------------
    def reset(self, prefix_len: int, scratch_len: int) -> None:
        """Forget everything (new episode); size for a prefix and a (padded) step scratch.

        Buffers are kept when they fit (stale entries stay masked), else reallocated and
        :attr:`generation` incremented.
        """
        if prefix_len < 0 or scratch_len < 0:
            raise ValueError(f"prefix_len and scratch_len must be >= 0, got {prefix_len}, "
                             f"{scratch_len}")
        self.prefix_len, self.scratch_len = prefix_len, scratch_len
        self.step_tokens = self.frame_tokens + scratch_len
        if (self._kv is None or prefix_len != self._layout_prefix
                or scratch_len > self._scratch_capacity):
            self._allocate(prefix_len, max(scratch_len, self._scratch_capacity
                                           if prefix_len == self._layout_prefix else 0))
        self._clear()

    def _clear(self) -> None:
        self._slot_frame = [_FREE] * self.frame_slots
        self._slot_positions = [(0, 0)] * self.frame_slots
        self._work_slot = 0
        self._frames_seen = 0
        self._prefix_done = False
        self._next_position = 0
        self._write_len = 0
        self._pending_layers: set[int] = set()
        self._structure = None
        self._column_state: list[str] | None = None

    def _allocate(self, prefix_len: int, scratch_capacity: int) -> None:
        self._kv = self._mask_store = self._index_store = None  # free before allocating
        self._layout_prefix, self._scratch_capacity = prefix_len, scratch_capacity
        capacity = prefix_len + self.frame_slots * self.frame_tokens + scratch_capacity
        self._kv = torch.zeros(
            (self.num_layers, 2, 1, self.num_kv_heads, capacity, self.head_dim),
            device=self.device, dtype=self.dtype,
        )
        rows = self.frame_tokens + scratch_capacity
        self._mask_store = torch.zeros((rows, _aligned(capacity)), device=self.device,
                                       dtype=self.dtype)
        self._index_store = torch.zeros(rows, dtype=torch.long, device=self.device)
        self.generation += 1

    def layer_kv(self, layer: int) -> tuple[Tensor, Tensor]:
        """Held K/V of one layer in time order (copies): ``[1, kv_heads, held, head_dim]``."""
        index = self.token_index().to(self.device)
        return (self._kv[layer, 0].index_select(2, index),
                self._kv[layer, 1].index_select(2, index))

    # ---- the step's structure and device state ---------------------------------------------
    def set_step_structure(self, allowed: Tensor) -> None:
        """Set who sees whom among a step's ``step_tokens`` new tokens (bool ``[n, n]``).

        Call after ``end_prefix`` and before the first step of the episode. Rows and columns:
        the frame's ``frame_tokens`` tokens, then the scratch (padding included). Every row
        must see at least one key (padding rows: themselves).
        """
        n = self.step_tokens
        if not self._prefix_done:
            raise RuntimeError("set_step_structure() after end_prefix()")
        if tuple(allowed.shape) != (n, n) or allowed.dtype != torch.bool:
            raise ValueError(f"allowed must be bool [{n}, {n}], got {tuple(allowed.shape)} "
                             f"{allowed.dtype}")
        allowed = allowed.to(self.device)
        low = torch.finfo(self.dtype).min
        additive = torch.zeros(allowed.shape, device=self.device, dtype=self.dtype)
        additive.masked_fill_(~allowed, low)
        F_, P, start = self.frame_tokens, self.prefix_len, self.scratch_start
        self._frame_block = additive[:, :F_].contiguous()
        mask = self._mask_store[:n, : self.capacity]
        mask.fill_(low)
        mask[:, :P] = 0.0
        mask[:, start : start + n - F_] = additive[:, F_:]
        index = self._index_store[:n]
        index[F_:] = torch.arange(start, start + n - F_, device=self.device)
        self._structure = allowed
        self._column_state = [_UNUSED] * self.frame_slots
        self._sync_device_state()

    def _sync_device_state(self) -> None:
        F_, P = self.frame_tokens, self.prefix_len
        mask = self._mask_store[: self.step_tokens, : self.capacity]
        torch.add(self._arange, P + self._work_slot * F_, out=self._index_store[:F_])
        for s, f in enumerate(self._slot_frame):
            state = _WORK if s == self._work_slot else (_UNUSED if f == _FREE else _HELD)
            if state == self._column_state[s]:
                continue
            cols = mask[:, P + s * F_ : P + (s + 1) * F_]
            if state == _HELD:
                cols.fill_(0.0)
            elif state == _WORK:
                cols.copy_(self._frame_block)
            else:
                cols.fill_(torch.finfo(self.dtype).min)
            self._column_state[s] = state

    @property
    def write_index(self) -> Tensor:
        """Buffer indices the step's tokens are written to: ``[step_tokens]`` (device)."""
        return self._index_store[: self.step_tokens]

    def step_mask(self) -> Tensor:
        """The step's additive mask ``[1, 1, step_tokens, capacity]`` (a static view)."""
        return self._mask_store[None, None, : self.step_tokens, : self.capacity]

    # ---- the per-forward protocol ------------------------------------------------------------
    def begin(self, num_new: int) -> int:
        """Declare the next forward: the prefix (``prefix_len`` tokens) or a step.

        A step writes ``step_tokens`` tokens. Returns where the new tokens start (0 for the
        prefix, else the working slot).
        """
        if not self._prefix_done:
            if num_new != self.prefix_len:
                raise ValueError(
                    f"the first forward of an episode writes the prefix ({self.prefix_len} "
                    f"tokens), got {num_new}"
                )
            start = 0
        else:
            if self._structure is None:
                raise RuntimeError("set_step_structure() before the first step")
            if num_new != self.step_tokens:
                raise ValueError(
                    f"a step writes one frame plus the padded scratch ({self.step_tokens} "
                    f"tokens), got {num_new}"
                )
            start = self.prefix_len + self._work_slot * self.frame_tokens
        self._write_len = num_new
        self._pending_layers = set()
        return start

    @property
    def kv_length(self) -> int:
        """Keys the declared forward attends over: the prefix, or the whole buffer."""
        return self.prefix_len if not self._prefix_done else self.capacity

    def update(
        self, key_states: Tensor, value_states: Tensor, layer_idx: int,
        cache_kwargs: dict | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Cache hook for transformers: store one layer's new (rotated) K/V, return its K/V.

        The prefix forward gets views of the prefix; a step gets the whole buffer
        ``[1, kv_heads, capacity, head_dim]`` (attend with :meth:`step_mask`).
        """
        if self._write_len == 0:
            raise RuntimeError("StaticSemanticCache.update() without begin()")
        if not 0 <= layer_idx < self.num_layers:
            raise ValueError(f"layer_idx must be in [0, {self.num_layers}), got {layer_idx}")
        expected = (1, self.num_kv_heads, self._write_len, self.head_dim)
        for name, t in (("key", key_states), ("value", value_states)):
            if tuple(t.shape) != expected:
                raise ValueError(f"{name}_states must have shape {expected}, got {tuple(t.shape)}")
        kv = self._kv[layer_idx]
        self._pending_layers.add(layer_idx)
        if not self._prefix_done:
            P = self.prefix_len
            kv[0, :, :, :P] = key_states
            kv[1, :, :, :P] = value_states
            return kv[0, :, :, :P], kv[1, :, :, :P]
        kv[0].index_copy_(2, self.write_index, key_states.to(self.dtype))
        kv[1].index_copy_(2, self.write_index, value_states.to(self.dtype))
        return kv[0], kv[1]

    def mark_written(self) -> None:
        """Record that every layer was written (a replayed CUDA graph ran the ``update`` s)."""
        self._pending_layers = set(range(self.num_layers))

    def commit_frame(self, embeds: Tensor, position_end: int) -> int | None:
        """Keep the frame written to the working slot; evict beyond the windows.

        Same contract as :meth:`janus_core.memory.SemanticCache.commit_frame`: returns the
        evicted frame's episode index (the new frame itself when ``recent`` is 0 and the
        initial window is full), or None.
        """
        if not self._prefix_done or self._write_len != self.step_tokens:
            raise RuntimeError("commit_frame() must follow a step forward (begin(), forward)")
        self._check_written("commit_frame()")
        self._check_frame(embeds, position_end)
        frame_id, slot = self._frames_seen, self._work_slot
        self._slot_frame[slot] = frame_id
        self._slot_positions[slot] = (self._next_position, position_end)
        self._embeds[slot].copy_(embeds)
        self._frames_seen += 1
        self._next_position = position_end
        self._write_len = 0
        evicted = None
        recent = [f for f in self._slot_frame if f != _FREE and f >= self.initial]
        if len(recent) > self.recent:  # at most one over: drop the oldest non-initial frame
            evicted = min(recent)
            self._slot_frame[self._slot_frame.index(evicted)] = _FREE
        self._work_slot = self._slot_frame.index(_FREE)
        self._sync_device_state()
        return evicted

    def __repr__(self) -> str:
        return (
            f"StaticSemanticCache(initial={self.initial}, recent={self.recent}, "
            f"frames_seen={self.frames_seen}, held={self.frame_ids}, "
            f"next_position={self.next_position}, capacity={self.capacity}, "
            f"nbytes={self.nbytes})"
        )
