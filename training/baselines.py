"""A small reference predictor for the held-out score: a CNN on the frame + instruction words.

Not a navigation policy: it tells what per-step accuracy a plain model reaches on the same
trajectories (:mod:`training.heldout`), so JanusVLN-small's number has a yardstick beside the
majority and previous-action baselines. Input: the current frame (downsampled to 64x48), the
first frame of the trajectory (so the initial turn can be judged), a bag of the instruction's
words and the step index; output: the action. Trained with AdamW on the same training bank.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

WORD = re.compile(r"[a-z]+")


def vocabulary(instructions: Sequence[str], size: int = 256) -> dict[str, int]:
    """The ``size`` most frequent lower-case words of ``instructions`` -> index."""
    counts: dict[str, int] = {}
    for text in instructions:
        for w in WORD.findall(text.lower()):
            counts[w] = counts.get(w, 0) + 1
    words = sorted(counts, key=lambda w: (-counts[w], w))[:size]
    return {w: i for i, w in enumerate(words)}


def bag_of_words(text: str, vocab: dict[str, int]) -> torch.Tensor:
    """Counts of ``vocab``'s words in ``text`` (float vector)."""
    out = torch.zeros(len(vocab))
    for w in WORD.findall(text.lower()):
        if w in vocab:
            out[vocab[w]] += 1
    return out


class FrameWordsCNN(nn.Module):
    """Two frames (current, first) through a shared CNN, words and step through an MLP."""

    def __init__(self, vocab_size: int, width: int = 32, actions: int = 4):
        super().__init__()
        self.cnn = nn.Sequential(
            nn.Conv2d(3, width, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d((3, 4)), nn.Flatten())
        feat = width * 12
        self.words = nn.Linear(vocab_size, 64)
        self.head = nn.Sequential(nn.Linear(2 * feat + 64 + 1, 128), nn.ReLU(),
                                  nn.Linear(128, actions))

    def forward(self, current: torch.Tensor, first: torch.Tensor, words: torch.Tensor,
                step: torch.Tensor) -> torch.Tensor:
        """``current``/``first``: [B, 3, H, W] in [0, 1]; ``words``: [B, V]; ``step``: [B]."""
        x = torch.cat([self.cnn(current), self.cnn(first), F.relu(self.words(words)),
                       (step.float() / 50.0)[:, None]], dim=-1)
        return self.head(x)


def _images(frames: torch.Tensor) -> torch.Tensor:
    x = frames.permute(0, 3, 1, 2).float() / 255.0
    return F.interpolate(x, size=(48, 64), mode="area")


def _batch(bank, vocab, items):
    current, first, words, steps, labels = [], [], [], [], []
    for i, t in items:
        frames = bank.frames_of(i)
        current.append(frames[t])
        first.append(frames[0])
        words.append(bag_of_words(bank.records[i].instruction, vocab))
        steps.append(t)
        labels.append(bank.records[i].labels[t])
    dev = bank.frames.device
    return (_images(torch.stack(current)), _images(torch.stack(first)),
            torch.stack(words).to(dev), torch.tensor(steps, device=dev),
            torch.tensor(labels, device=dev))


def train_cnn(bank, steps: int = 600, batch: int = 64, lr: float = 2e-3,
              seed: int = 0) -> tuple[FrameWordsCNN, dict[str, int]]:
    """Train :class:`FrameWordsCNN` on every step of ``bank`` (a FrameBank); the model, vocab."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    vocab = vocabulary([r.instruction for r in bank.records])
    model = FrameWordsCNN(len(vocab)).to(bank.frames.device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    index = [(i, t) for i in range(len(bank)) for t in range(bank.length(i))]
    for k in range(steps):
        pick = rng.choice(len(index), size=min(batch, len(index)), replace=False)
        cur, fst, words, st, labels = _batch(bank, vocab, [index[j] for j in pick])
        loss = F.cross_entropy(model(cur, fst, words, st), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (k + 1) % 100 == 0:
            log.info("cnn baseline step %d/%d: loss %.4f", k + 1, steps, float(loss))
    return model.eval(), vocab


@torch.no_grad()
def predict_cnn(model: FrameWordsCNN, vocab: dict[str, int], bank) -> list[list[int]]:
    """The CNN's action at every step of every trajectory of ``bank``."""
    out = []
    for i in range(len(bank)):
        items = [(i, t) for t in range(bank.length(i))]
        cur, fst, words, st, _ = _batch(bank, vocab, items)
        out.append(model(cur, fst, words, st).argmax(-1).tolist())
    return out
