"""CUDA graphs for the stages of a streaming step, with an eager fallback.

:class:`StageGraphs` runs a stage function (``fn()``, which reads static input tensors and
writes static output tensors, see :mod:`janus_core.static_stages`): on CUDA with graphs on, the
first call for a key warms ``fn`` up on a side stream, captures it in a ``torch.cuda.CUDAGraph``
and replays it; later calls only replay. Off CUDA, with graphs off, or once a capture of that
stage failed, ``fn`` is simply called. A failed capture is retried once inside
``retry_context`` when one is given (the policy passes SDPA without the cuDNN kernel, whose
capture support depends on the cuDNN build); a stage whose capture failed is logged once,
recorded in :meth:`StageGraphs.status`, and runs eagerly from then on.

Each stage name (the key's first element) gets its own memory pool, shared by its variants
(the masked/unmasked VGGT step, the LLM step per length bucket): variants of one stage never
run at the same time, while different stages may (the ViT on a side stream).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Hashable

import torch

log = logging.getLogger(__name__)


class StageGraphs:
    """Capture-on-first-use CUDA graphs keyed by ``(stage, *variant)``.

    ``enabled`` is honoured only on a CUDA ``device``; ``warmup`` eager runs precede a capture
    (on a side stream, as PyTorch requires). ``fn`` must be idempotent for one step's inputs
    (warm-up and capture run it with the same inputs), must not synchronise with the host, and
    every tensor it reads must outlive the graph (the owner keeps them).
    """

    def __init__(self, device: torch.device, enabled: bool, warmup: int = 2,
                 retry_context: Callable[[], contextlib.AbstractContextManager] | None = None):
        self.device = torch.device(device)
        self.enabled = bool(enabled) and self.device.type == "cuda"
        self.warmup = warmup
        self.retry_context = retry_context
        self._retried: dict[Hashable, str] = {}
        self._graphs: dict[tuple, torch.cuda.CUDAGraph] = {}
        self._pools: dict[Hashable, object] = {}
        self._failures: dict[Hashable, str] = {}
        self._seen: dict[Hashable, None] = {}
        self.capture_seconds: dict[str, float] = {}
        self.replays = 0

    def run(self, key: tuple, fn: Callable[[], None]) -> bool:
        """Run ``fn`` for ``key``: replay (capturing on first use) or call it; True if replayed."""
        stage = key[0]
        self._seen[stage] = None
        if not self.enabled or stage in self._failures:
            fn()
            return False
        graph = self._graphs.get(key)
        if graph is None:
            graph = self._capture(key, fn)
            if graph is None:
                fn()
                return False
        graph.replay()
        self.replays += 1
        return True

    def _try_capture(self, key: tuple, fn: Callable[[], None],
                     context: Callable[[], contextlib.AbstractContextManager]
                     ) -> torch.cuda.CUDAGraph:
        main = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(main)
        with torch.cuda.stream(side), context():
            for _ in range(self.warmup):
                fn()
        main.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pools.get(key[0]),
                              capture_error_mode="thread_local"), context():
            fn()
        return graph

    def _capture(self, key: tuple, fn: Callable[[], None]) -> torch.cuda.CUDAGraph | None:
        stage, start = key[0], time.perf_counter()
        contexts = [contextlib.nullcontext]
        if self.retry_context is not None:
            contexts.append(self.retry_context)
        graph, reasons = None, []
        for context in contexts:
            try:
                graph = self._try_capture(key, fn, context)
                break
            except Exception as err:  # noqa: BLE001 - any capture failure: retry or go eager
                reasons.append(f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300]}")
                log.warning("CUDA graph capture of %s failed: %s", key, reasons[-1])
        if graph is None:
            self._failures[stage] = "; ".join(reasons)
            log.warning("%s runs eagerly from now on", stage)
            return None
        if reasons:
            self._retried[stage] = reasons[0]
        self._pools.setdefault(stage, graph.pool())
        self._graphs[key] = graph
        self.capture_seconds[":".join(str(k) for k in key)] = time.perf_counter() - start
        log.info("captured %s in %.2f s", key, time.perf_counter() - start)
        return graph

    def drop(self, stage: Hashable) -> None:
        """Forget the graphs of ``stage`` (their static buffers were reallocated)."""
        for key in [k for k in self._graphs if k[0] == stage]:
            del self._graphs[key]
        self._pools.pop(stage, None)

    def clear(self) -> None:
        """Forget every graph (frees their memory pools once nothing else holds them)."""
        self._graphs.clear()
        self._pools.clear()

    def status(self) -> dict[str, str]:
        """Per stage run so far: ``graph``, ``eager`` (graphs off / no CUDA) or the failure."""
        out = {}
        for stage in self._seen:
            if stage in self._failures:
                out[str(stage)] = "eager (capture failed: " + self._failures[stage] + ")"
            elif stage in self._retried:
                out[str(stage)] = "graph (retry context; first capture failed: " + (
                    self._retried[stage] + ")")
            else:
                out[str(stage)] = "graph" if self.enabled else "eager"
        return out

    @property
    def num_graphs(self) -> int:
        """Graphs currently held."""
        return len(self._graphs)
