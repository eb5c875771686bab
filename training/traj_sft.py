r"""SFT over whole trajectories: one VGGT/ViT pass per trajectory, every step a training sample.

The loss is the release's (cross-entropy on the reply tokens: the action word and
``<|im_end|>``), but a batch is built from whole trajectories with :mod:`training.fastpath`:

1. ``trajectories_per_step`` trajectories are drawn from the model's pool; all their frames go
   through the Qwen ViT once and through VGGT once, causally with the spatial cache's window
   (:func:`training.fastpath.causal_vggt_features`), so the VGGT features at step ``t`` are the
   ones the policy computes at step ``t`` of an episode.
2. From each trajectory up to ``samples_per_trajectory`` steps are taken (always the last one,
   which is the STOP of an expert trajectory); each step is one sample: the evaluation prompt
   with the frames ``sample_history(t, num_history)``, each image's tokens plus
   ``lam * merger(vggt_t)``, and the step's label as the reply.
3. The stock Qwen2.5-VL decoder runs over the padded samples; logits are taken only where a reply
   token is predicted. ``stop_weight`` scales the loss of STOP samples (one per trajectory).

Every part is trained (LLM, ViT, both mergers, VGGT): this recipe starts from random weights.
AdamW with linear warmup and cosine decay; bf16 autocast on CUDA. The number of steps is fixed
(``steps``) or fitted to a time budget after the first steps are timed. Several models (the
ablations) train in one process on the same batches, step after step, so they see identical
data in identical order (:func:`train_models`).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from janus_core.actions import Action
from janus_core.checkpoint import save_checkpoint
from janus_core.model import JanusVLNModel
from janus_core.processor import JanusProcessor, sample_history
from training.fastpath import (
    FrameEncoder,
    PromptBank,
    autocast_for,
    build_llm_batch,
    causal_vggt_features,
    frames_to_images,
    llm_hidden,
    merge_vggt,
    qwen_patches,
)
from training.trajectories import TrajectoryRecord, TrajectoryStore

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SFTSettings:
    """Optimisation settings of :func:`train_models` (YAML-loadable through the recipe)."""

    learning_rate: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 50
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    trajectories_per_step: int = 4
    samples_per_trajectory: int = 64
    stop_weight: float = 2.0
    aux_weight: float = 0.0  # auxiliary action head on each frame's fused visual tokens; 0: off
    steps: int = 0  # 0: fit the number of steps to the time budget
    max_steps: int = 100_000
    time_budget_s: float = 0.0
    timing_steps: int = 6  # steps timed (after the first) to fit the budget
    vggt_chunk: int = 16
    seed: int = 0
    log_every: int = 20

    def __post_init__(self):
        """Reject values outside their range, naming the field."""
        if self.learning_rate <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("sft: learning_rate must be > 0 and min_lr_ratio in [0, 1]")
        if self.trajectories_per_step < 1 or self.samples_per_trajectory < 1:
            raise ValueError("sft: trajectories_per_step and samples_per_trajectory must be >= 1")
        if self.steps < 0 or self.time_budget_s < 0:
            raise ValueError("sft: steps and time_budget_s must be >= 0")
        if self.steps == 0 and self.time_budget_s == 0:
            raise ValueError("sft: set steps or time_budget_s")


class FrameBank:
    """The frames of a list of records in one ``[N, H, W, 3]`` uint8 tensor on ``device``."""

    def __init__(self, store: TrajectoryStore, records: Sequence[TrajectoryRecord],
                 device: torch.device):
        self.records = list(records)
        self.offsets = np.zeros(len(self.records) + 1, dtype=np.int64)
        for i, rec in enumerate(self.records):
            self.offsets[i + 1] = self.offsets[i] + rec.length
        total = int(self.offsets[-1])
        self.frames = torch.empty((total, store.height, store.width, 3), dtype=torch.uint8,
                                  device=device)
        chunk: list[np.ndarray] = []
        start = filled = 0
        for rec in self.records:  # copy in ~256 MB pieces
            chunk.append(np.asarray(store.frames(rec)))
            filled += rec.length
            if filled - start >= 2048:
                self.frames[start:filled] = torch.from_numpy(np.concatenate(chunk)).to(device)
                chunk, start = [], filled
        if chunk:
            self.frames[start:filled] = torch.from_numpy(np.concatenate(chunk)).to(device)
        log.info("frame bank: %d trajectories, %d frames (%.2f GB on %s)", len(self.records),
                 total, self.frames.numel() / 1e9, device)

    def __len__(self) -> int:
        return len(self.records)

    def length(self, i: int) -> int:
        """Frames of record ``i``."""
        return int(self.offsets[i + 1] - self.offsets[i])

    def frames_of(self, i: int) -> torch.Tensor:
        """``[T, H, W, 3]`` frames of record ``i``."""
        return self.frames[int(self.offsets[i]) : int(self.offsets[i + 1])]


class ModelTrainer:
    """One model being trained: its optimizer, schedule, prompt bank and step function."""

    def __init__(self, name: str, model: JanusVLNModel, processor: JanusProcessor,
                 settings: SFTSettings):
        self.name = name
        self.model = model
        self.processor = processor
        self.settings = settings
        self.cfg = model.cfg
        self.prompts = PromptBank(model, processor)
        self.encoder = FrameEncoder(model)
        tok = processor.tokenizer
        eos = tok.eos_token_id
        self.answers = {int(a): tok(a.name, add_special_tokens=False)["input_ids"] + [eos]
                        for a in Action}
        if model.device.type == "cuda":
            # PyTorch 2.11's cuDNN SDPA backward failed on an H200 ("mha_graph.execute ...
            # is_good()") for these shapes; the flash / memory-efficient kernels are used instead
            torch.backends.cuda.enable_cudnn_sdp(False)
        model.set_trainable(llm=True, merger=True, vit=True, vggt=True)
        model.train()
        self.aux_head = None
        if settings.aux_weight > 0:  # training only: not part of the model or its checkpoint
            geo = model.geometry
            self.aux_head = torch.nn.Linear(geo.tokens_per_image * self.cfg.qwen.hidden_size,
                                            len(Action), device=model.device)
        decay, no_decay = [], []
        params = list(model.named_parameters())
        if self.aux_head is not None:
            params += [(f"aux_head.{n}", p) for n, p in self.aux_head.named_parameters()]
        self.params = [p for _, p in params]  # what the optimizer steps and the clip bounds
        for pname, p in params:
            if p.requires_grad:
                (decay if p.ndim >= 2 and "embed_tokens" not in pname else no_decay).append(p)
        fused = model.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": settings.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=settings.learning_rate, betas=(0.9, 0.95), fused=fused)
        self.total_steps = settings.steps or settings.max_steps
        self.step_count = 0
        self.history: list[dict[str, float]] = []

    def lr_at(self, step: int) -> float:
        """Linear warmup to ``learning_rate``, cosine down to ``min_lr_ratio`` of it."""
        s = self.settings
        if step < s.warmup_steps:
            return s.learning_rate * (step + 1) / s.warmup_steps
        span = max(1, self.total_steps - s.warmup_steps)
        progress = min(1.0, (step - s.warmup_steps) / span)
        scale = s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return s.learning_rate * scale

    def _encode(self, bank: FrameBank, records: Sequence[int]) -> dict[str, Any]:
        """ViT and (causal) VGGT features of every frame of ``records``, concatenated."""
        model, geo, s = self.model, self.model.geometry, self.settings
        lengths = [bank.length(i) for i in records]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        frames = torch.cat([bank.frames_of(i) for i in records]).to(model.device)
        images = frames_to_images(frames)
        pixel_values, _ = qwen_patches(images, geo, self.cfg.qwen.temporal_patch_size)
        vit = self.encoder(pixel_values, len(images))
        vggt = None
        if model.vggt is not None:
            t_max = max(lengths)
            padded = images.new_zeros((len(records), t_max, *images.shape[1:]))
            for b, n in enumerate(lengths):
                padded[b, :n] = images[offsets[b] : offsets[b] + n]
            feats = causal_vggt_features(model, padded, chunk=s.vggt_chunk)
            real = torch.cat([feats[b, :n] for b, n in enumerate(lengths)])
            vggt = merge_vggt(model, real)  # [F, tok, hidden]
        return {"vit": vit, "vggt": vggt, "lengths": lengths, "offsets": offsets,
                "n_frames": len(images)}

    def _reply_logits(self, bank: FrameBank, records: Sequence[int], enc: dict[str, Any],
                      steps: Sequence[Sequence[int]],
                      answers: Sequence[Sequence[int]]) -> tuple[torch.Tensor, list[tuple]]:
        """Logits predicting each reply token of each sample, as the policy would see it.

        ``steps[b]``: the steps of record ``records[b]`` to sample; ``answers``: one reply per
        sample (in that order). Each sample is the evaluation prompt with the frames
        ``sample_history(t, num_history)``, each image's tokens plus ``lam * merger(vggt_t)``.
        Returns ``[tokens, vocab]`` logits and one ``(sample, position in reply, token)`` per row.
        """
        model = self.model
        hidden_size = self.cfg.qwen.hidden_size
        vit, vggt, offsets = enc["vit"], enc["vggt"], enc["offsets"]
        prompts, image_idx, vggt_idx = [], [], []
        for b, rec_i in enumerate(records):
            rec = bank.records[rec_i]
            for t in steps[b]:
                idx = sample_history(t, self.cfg.memory.num_history)
                prompts.append(self.prompts.get(rec.instruction, len(idx)))
                image_idx.extend(int(offsets[b]) + i for i in idx)
                vggt_idx.extend([int(offsets[b]) + t] * len(idx))
        dev = model.device
        rows = vit[torch.tensor(image_idx, device=dev)]
        if vggt is not None:
            rows = rows + model.lam * vggt[torch.tensor(vggt_idx, device=dev)].to(rows.dtype)
        batch = build_llm_batch(prompts, answers, self.cfg.qwen.pad_token_id, dev)
        hidden = llm_hidden(model, batch, rows.reshape(-1, hidden_size))
        r, c, where = [], [], []
        for i, (p, a) in enumerate(zip(prompts, answers)):
            for j, token in enumerate(a):
                r.append(i)
                c.append(len(p) - 1 + j)
                where.append((i, j, token))
        logits = model.qwen.lm_head(hidden[torch.tensor(r, device=dev),
                                           torch.tensor(c, device=dev)]).float()
        return logits, where

    def batch_loss(self, bank: FrameBank, records: Sequence[int],
                   rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss (and stats) of one batch of whole trajectories (see the module docstring)."""
        model, s = self.model, self.settings
        with autocast_for_training(model):
            enc = self._encode(bank, records)
            steps = [self._pick_steps(n, rng) for n in enc["lengths"]]
            labels = [bank.records[i].labels[t] for i, st in zip(records, steps) for t in st]
            answers = [self.answers[label] for label in labels]
            logits, where = self._reply_logits(bank, records, enc, steps, answers)
        dev = model.device
        weights = [s.stop_weight if label == int(Action.STOP) else 1.0 for label in labels]
        targets_t = torch.tensor([tok for _, _, tok in where], device=dev)
        w_t = torch.tensor([weights[i] for i, _, _ in where], device=dev)
        ce = F.cross_entropy(logits, targets_t, reduction="none")
        loss = (ce * w_t).sum() / w_t.sum()
        aux = None
        if self.aux_head is not None:
            # every frame's own fused tokens -> that frame's label (the visual encoders learn
            # action-relevant features directly, not only through the LLM)
            vit, vggt = enc["vit"], enc["vggt"]
            hidden = vit.shape[-1]
            fused = model.fuse(vit.reshape(-1, hidden),
                               None if vggt is None else vggt.reshape(-1, hidden), 1)
            frame_labels = torch.tensor([a for i in records for a in bank.records[i].labels],
                                        device=dev)
            aux = F.cross_entropy(self.aux_head(fused.reshape(enc["n_frames"], -1).float()),
                                  frame_labels)
            loss = loss + s.aux_weight * aux
        with torch.no_grad():
            right = (logits.argmax(-1) == targets_t).float()
            per_sample = torch.zeros(len(labels), device=dev).index_add_(
                0, torch.tensor([i for i, _, _ in where], device=dev), 1 - right)
            correct = per_sample == 0
            stop = torch.tensor(labels, device=dev) == int(Action.STOP)
        stats = {
            "loss": float(loss.detach()),
            "acc": float(correct.float().mean()),
            "stop_acc": float(correct[stop].float().mean()) if bool(stop.any()) else float("nan"),
            "aux": float(aux.detach()) if aux is not None else float("nan"),
            "samples": float(len(labels)),
            "frames": float(enc["n_frames"]),
        }
        return loss, stats

    @torch.no_grad()
    def predict(self, bank: FrameBank, record: int, chunk: int = 64) -> list[int]:
        """The action the model takes at every step of ``record`` (teacher-forced history).

        Greedy decoding as reference mode does it: the first reply token is the argmax over
        the whole vocabulary (a token that starts no action name reads as STOP, the release's
        rule); after ``TURN`` the side is the likelier of the two. Eval mode, no gradients.
        """
        was_training = self.model.training
        self.model.eval()
        try:
            with autocast_for_training(self.model):
                enc = self._encode(bank, [record])
                first = {a: ids[0] for a, ids in self.answers.items()}
                turn = first[int(Action.TURN_LEFT)]
                sides = (self.answers[int(Action.TURN_LEFT)][1],
                         self.answers[int(Action.TURN_RIGHT)][1])
                out: list[int] = []
                n = enc["lengths"][0]
                for lo in range(0, n, chunk):
                    steps = list(range(lo, min(n, lo + chunk)))
                    logits, where = self._reply_logits(bank, [record], enc, [steps],
                                                       [[turn, sides[0]]] * len(steps))
                    lg = logits.view(len(steps), 2, -1)
                    top = lg[:, 0].argmax(-1).tolist()
                    left = (lg[:, 1, sides[0]] >= lg[:, 1, sides[1]]).tolist()
                    for tok, is_left in zip(top, left):
                        if tok == turn:
                            out.append(int(Action.TURN_LEFT if is_left else Action.TURN_RIGHT))
                        elif tok == first[int(Action.MOVE_FORWARD)]:
                            out.append(int(Action.MOVE_FORWARD))
                        else:
                            out.append(int(Action.STOP))
                return out
        finally:
            self.model.train(was_training)

    def _pick_steps(self, T: int, rng: np.random.Generator) -> list[int]:
        n = self.settings.samples_per_trajectory
        if T <= n:
            return list(range(T))
        chosen = rng.choice(T - 1, size=n - 1, replace=False)
        return sorted(int(i) for i in chosen) + [T - 1]

    def train_step(self, bank: FrameBank, records: Sequence[int],
                   rng: np.random.Generator) -> dict[str, float]:
        """One optimizer step on ``records``; returns the batch stats."""
        lr = self.lr_at(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss, stats = self.batch_loss(bank, records, rng)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.settings.grad_clip)
        self.optimizer.step()
        self.step_count += 1
        stats.update(lr=lr, grad_norm=float(norm), step=float(self.step_count))
        return stats


def autocast_for_training(model: JanusVLNModel):
    """bf16 autocast for a float32 model on CUDA (master weights stay float32); else nothing."""
    if model.device.type == "cuda" and model.dtype == torch.float32:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return autocast_for(model)


def train_models(trainers: Sequence[ModelTrainer], pools: dict[str, Sequence[int]],
                 bank: FrameBank, settings: SFTSettings) -> dict[str, Any]:
    """Train every model for the same number of steps, interleaved step by step.

    ``pools[name]``: indices into ``bank.records`` that model ``name`` samples from (models with
    the same pool get the same batches: each draws with its own generator seeded alike). The
    number of steps is ``settings.steps``, or what fits in ``settings.time_budget_s`` measured on
    the first steps (all models together). Returns per-model step counts and logged stats.
    """
    start = time.perf_counter()
    rngs = {t.name: np.random.default_rng(settings.seed) for t in trainers}
    for t in trainers:
        if not pools.get(t.name):
            raise ValueError(f"model {t.name}: no training trajectories")
    total = settings.steps or settings.max_steps
    for t in trainers:
        t.total_steps = total
    step = 0
    timed_from = None
    logs: dict[str, list[dict[str, float]]] = {t.name: [] for t in trainers}
    running: dict[str, list[dict[str, float]]] = {t.name: [] for t in trainers}
    while step < total:
        for t in trainers:
            pool = pools[t.name]
            rng = rngs[t.name]
            k = min(settings.trajectories_per_step, len(pool))
            chosen = [int(pool[i]) for i in rng.choice(len(pool), size=k, replace=False)]
            running[t.name].append(t.train_step(bank, chosen, rng))
        step += 1
        if settings.steps == 0:
            if step == 1:
                _sync(trainers)
                timed_from = time.perf_counter()
            elif step == 1 + settings.timing_steps:
                _sync(trainers)
                per_step = (time.perf_counter() - timed_from) / settings.timing_steps
                left = settings.time_budget_s - (time.perf_counter() - start)
                total = int(min(settings.max_steps, step + max(0, left) / per_step))
                total = max(total, step)
                for t in trainers:
                    t.total_steps = total
                log.info("SFT: %.3f s per step (%d model(s)); %d steps fit in %.0f s",
                         per_step, len(trainers), total, settings.time_budget_s)
            elif (settings.time_budget_s > 0 and step < total
                  and time.perf_counter() - start > settings.time_budget_s):
                log.warning("SFT: time budget %.0f s spent after %d of %d steps; stopping",
                            settings.time_budget_s, step, total)
                total = step  # steps slowed down after the estimate: the budget is a hard limit
                for t in trainers:
                    t.total_steps = total
        if step % settings.log_every == 0 or step == total:
            for t in trainers:
                entry = _mean(running[t.name])
                entry["step"] = float(step)
                entry["elapsed_s"] = time.perf_counter() - start
                logs[t.name].append(entry)
                running[t.name] = []
                log.info("SFT %s step %d/%d: loss %.4f acc %.3f stop_acc %.3f aux %.3f lr %.2e",
                         t.name, step, total, entry["loss"], entry["acc"], entry["stop_acc"],
                         entry["aux"], entry["lr"])
    _sync(trainers)
    return {"steps": step, "seconds": time.perf_counter() - start, "log": logs}


def _mean(entries: list[dict[str, float]]) -> dict[str, float]:
    keys = entries[0].keys() if entries else []
    out = {}
    for k in keys:
        vals = [e[k] for e in entries if not math.isnan(e[k])]
        out[k] = float(np.mean(vals)) if vals else float("nan")
    return out


def _sync(trainers: Sequence[ModelTrainer]) -> None:
    if any(t.model.device.type == "cuda" for t in trainers):
        torch.cuda.synchronize()


def save_trained(model: JanusVLNModel, tokenizer: Any, path: str | Path,
                 dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write ``model`` (a ``dtype`` copy on the CPU) and ``tokenizer`` in the release layout."""
    copy_ = copy.deepcopy(model).to(device="cpu", dtype=dtype)
    copy_.eval()
    return save_checkpoint(copy_, tokenizer, copy_.cfg, path)
