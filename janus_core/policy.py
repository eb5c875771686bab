"""The JanusVLN policy: owns one episode's state and runs the model once per step.

``reference`` mode reproduces the release's evaluation loop (``src/evaluation.py``) step for
step; a driver (the eval runner, the ROS navigator, DAgger) calls::

    policy.reset(instruction)            # at the start of every episode
    while not done:
        result = policy.act(observation)  # once per env step, frames in order
        ...execute result.action...

Per step (reference digest §2.4, §9):

1. Resize the frame to 644x490 (PIL bicubic) and keep it in the episode history.
2. VGGT: the current frame, and only it, goes through the aggregator against the episode's
   persistent spatial cache (first 8 + last 48 frames), which then keeps it. One VGGT frame per
   env step, in order.
3. Qwen ViT: the sampled frames (all while ``t <= 8``, else ``linspace(0, t, 9)``) are encoded
   from scratch, cropped to 644x476.
4. Fusion: ``lam`` times the merged VGGT block of the current frame is added to every image's
   visual tokens; the prompt (eval layout) is prefilled in full and decoded greedily (<= 24
   tokens, stop at the tokenizer's eos).
5. The reply is parsed (exact action name, else STOP); from step ``max_steps`` on the action is
   STOP whatever the reply (the model still runs, as in the release).

``streaming`` mode (the full dual memory, incremental) is the subclass
:class:`janus_core.streaming.StreamingPolicy`. :func:`janus_core.factory.build_policy` loads a
checkpoint or preset and picks the class by ``cfg.mode`` (imports run one way: this module <-
``streaming`` <- ``factory``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

import numpy as np
import torch

from janus_core.config import JanusConfig
from janus_core.interface import Observation, Policy, StepResult
from janus_core.memory import SpatialCache
from janus_core.model import JanusVLNModel
from janus_core.processor import JanusProcessor, sample_history

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _stage(timings: dict[str, float], name: str, device: torch.device) -> Iterator[None]:
    """Time a stage in seconds, synchronising CUDA before and after so GPU work is counted."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    try:
        with torch.profiler.record_function("stage:" + name):  # a range in profiles
            yield
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timings[name] = time.perf_counter() - start


class JanusVLNPolicy(Policy):
    """JanusVLN behind the :class:`janus_core.interface.Policy` contract.

    Owns the episode state: the spatial cache (a :class:`janus_core.memory.SpatialCache`), the
    resized frame history, the instruction and the step counter. The model holds none of it.
    ``act`` returns timings for the stages ``preprocess``, ``vggt``, ``vit``, ``llm`` (prompt,
    fusion, prefill and decode), ``action`` (decode text and parse) and ``total``, in seconds.
    """

    def __init__(
        self, model: JanusVLNModel, processor: JanusProcessor, eos_token_ids: tuple[int, ...] = ()
    ):
        cfg = model.cfg
        if cfg.mode == "streaming" and type(self) is JanusVLNPolicy:
            raise ValueError(
                "JanusVLNPolicy runs mode 'reference' (the release's loop); for mode 'streaming' "
                "use janus_core.streaming.StreamingPolicy (janus_core.factory.build_policy picks "
                "it by cfg.mode)"
            )
        self.cfg: JanusConfig = cfg
        self.model = model.eval()
        self.processor = processor
        self.max_new_tokens = cfg.max_new_tokens
        # The release passes eos_token_id=tokenizer.eos_token_id (<|im_end|>) to generate().
        eos = processor.tokenizer.eos_token_id
        self.eos_token_ids = tuple(eos_token_ids) or ((eos,) if eos is not None else ())
        self.spatial_cache: SpatialCache | None = (
            model.new_spatial_cache() if model.vggt is not None else None
        )
        self.frames: list[np.ndarray] = []
        self.instruction: str | None = None
        self.step = 0
        self.last_token_ids: list[int] = []  # the last reply's token ids (debugging, benchmarks)
        self._prompts: dict[int, torch.Tensor] = {}

    # ---- episode ---------------------------------------------------------------------------------
    def reset(self, instruction: str) -> None:
        """Start an episode: clear the spatial cache, the history and the step counter.

        Call before the first ``act`` of every episode (the release clears its VGGT cache there).
        """
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"instruction must be a non-empty string, got {instruction!r}")
        self.instruction = instruction
        self.frames = []
        self.step = 0
        self._prompts = {}
        if self.spatial_cache is not None:
            self.spatial_cache.reset()

    @torch.no_grad()
    def act(self, observation: Observation) -> StepResult:
        """Run one reference step on ``observation.rgb`` (HxWx3 uint8, any camera size).

        ``JanusProcessor`` brings the frame to the model's input. A frame of an absurd size, the
        wrong dtype or channel count raises ValueError and leaves the episode state unchanged.
        """
        if self.instruction is None:
            raise RuntimeError("call reset(instruction) before act()")
        model, proc, device = self.model, self.processor, self.model.device
        timings: dict[str, float] = {}
        t = self.step
        start = time.perf_counter()
        with _stage(timings, "preprocess", device):
            frame = proc.preprocess_frame(observation.rgb)  # validates before any state changes
        self.frames.append(frame)
        self.step += 1

        vggt_embeds = None
        if model.vggt is not None:
            with _stage(timings, "vggt", device):
                vggt_embeds = model.encode_vggt(proc.vggt_input(frame), self.spatial_cache)
        indices = sample_history(t, self.cfg.memory.num_history)
        with _stage(timings, "vit", device):
            pixel_values, grid_thw = proc.qwen_inputs([self.frames[i] for i in indices])
            image_embeds = model.encode_images(pixel_values, grid_thw)
        with _stage(timings, "llm", device):
            input_ids = self._prompt_ids(len(indices))
            fused = model.fuse(image_embeds, vggt_embeds, len(indices))
            inputs_embeds = model.embed(input_ids, fused)
            tokens = model.greedy_generate(
                input_ids, inputs_embeds, grid_thw, self.max_new_tokens, self.eos_token_ids
            )
        self.last_token_ids = tokens
        with _stage(timings, "action", device):
            text = proc.decode(tokens)
            action, parsed = proc.parse(text, t)
        timings["total"] = time.perf_counter() - start
        if not parsed:
            log.info("step %d: reply %r is not an action name; STOP", t, text)
        if t >= self.cfg.max_steps:
            log.info("step %d: forced STOP (max_steps %d)", t, self.cfg.max_steps)
        return StepResult(action=action, timings=timings, text=text, parsed=parsed, step=t)

    def _prompt_ids(self, num_images: int) -> torch.Tensor:
        if num_images not in self._prompts:
            self._prompts[num_images] = self.processor.prompt_ids(self.instruction, num_images)
        return self._prompts[num_images]

    def close(self) -> None:
        """Drop the episode state and the model reference; free cached GPU memory."""
        self.spatial_cache = None
        self.frames = []
        self._prompts = {}
        device = self.model.device
        self.model = None
        if device.type == "cuda":
            torch.cuda.empty_cache()

