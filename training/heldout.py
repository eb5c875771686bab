"""The held-out learnability score: per-step action accuracy on apartments never trained on.

One number is tracked everywhere (SFT logs, the learning curve, the model card): the per-step
accuracy of the model's action on a fixed set of expert trajectories from held-out apartments,
beside the share of the majority action on the same steps (what a constant answer scores). SR
is governed by early STOPs, so the score also carries the STOP recall and the **early-STOP rate**
(STOP predicted on a step whose label is not STOP): a rate above ~0.5 % of steps already costs
most of the SR (a STOP ends the episode where it is).

:func:`score_actions` scores any predictor; :func:`previous_action_baseline` is the simple
baseline that copies the previous label (a lower bound a useful model should pass).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from typing import Any

from janus_core.actions import Action


@dataclasses.dataclass
class HeldoutScore:
    """Per-step scores of one predictor on the held-out trajectories."""

    steps: int
    accuracy: float
    majority_action: str
    majority_share: float
    stop_recall: float  # STOP predicted where the label is STOP
    early_stop_rate: float  # STOP predicted where the label is not STOP (share of those steps)
    per_action_recall: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (rounded)."""
        out = dataclasses.asdict(self)
        for k, v in out.items():
            if isinstance(v, float):
                out[k] = round(v, 4)
        out["per_action_recall"] = {k: round(v, 4) for k, v in self.per_action_recall.items()}
        return out

    def line(self) -> str:
        """One log line: accuracy against the majority share, STOP recall, early-STOP rate."""
        return (f"held-out accuracy {self.accuracy:.3f} (majority {self.majority_action} "
                f"{self.majority_share:.3f}), STOP recall {self.stop_recall:.3f}, early-STOP "
                f"rate {100 * self.early_stop_rate:.2f} % of {self.steps} steps")


def score_actions(labels: Sequence[Sequence[int]],
                  predictions: Sequence[Sequence[int]]) -> HeldoutScore:
    """Score ``predictions`` against ``labels`` (one list of action ids per trajectory)."""
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} trajectories of labels but {len(predictions)} of "
                         "predictions")
    flat_l: list[int] = []
    flat_p: list[int] = []
    for i, (lab, pred) in enumerate(zip(labels, predictions)):
        if len(lab) != len(pred):
            raise ValueError(f"trajectory {i}: {len(lab)} labels but {len(pred)} predictions")
        flat_l += [int(a) for a in lab]
        flat_p += [int(a) for a in pred]
    if not flat_l:
        raise ValueError("no held-out steps to score")
    counts = Counter(flat_l)
    majority, n_major = counts.most_common(1)[0]
    stop = int(Action.STOP)
    recall = {}
    for a in Action:
        n = counts.get(int(a), 0)
        hits = sum(1 for lab, p in zip(flat_l, flat_p) if lab == int(a) and p == lab)
        recall[a.name] = hits / n if n else float("nan")
    not_stop = [p for lab, p in zip(flat_l, flat_p) if lab != stop]
    return HeldoutScore(
        steps=len(flat_l),
        accuracy=sum(lab == p for lab, p in zip(flat_l, flat_p)) / len(flat_l),
        majority_action=Action(majority).name,
        majority_share=n_major / len(flat_l),
        stop_recall=recall[Action.STOP.name],
        early_stop_rate=sum(p == stop for p in not_stop) / max(1, len(not_stop)),
        per_action_recall=recall,
    )


def previous_action_baseline(labels: Sequence[Sequence[int]]) -> list[list[int]]:
    """Predict each step's label as the previous step's (the first step: MOVE_FORWARD).

    An oracle of the agent's own last action: it never predicts the final STOP, and it shows
    how much of the accuracy is just "keep doing what you did".
    """
    return [[int(Action.MOVE_FORWARD)] + [int(a) for a in lab[:-1]] for lab in labels]


def majority_baseline(labels: Sequence[Sequence[int]]) -> list[list[int]]:
    """Predict the majority action of ``labels`` everywhere (a constant answer)."""
    flat = [int(a) for lab in labels for a in lab]
    top = Counter(flat).most_common(1)[0][0] if flat else int(Action.MOVE_FORWARD)
    return [[top] * len(lab) for lab in labels]
