"""Episode memory as explicit objects: the spatial cache (VGGT global-block K/V).

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

from janus_core.config import MemoryConfig, VGGTConfig

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
        T = self.tokens_per_frame
        start = self._next_slot * T
        self._kv[layer, 0, :, :, start : start + T] = k
        self._kv[layer, 1, :, :, start : start + T] = v
        self._pending_layers.add(layer)
        end = self._span * T
        return self._kv[layer, 0, :, :, :end], self._kv[layer, 1, :, :, :end]

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
