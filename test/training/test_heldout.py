"""The held-out score: accuracy, majority share, STOP recall and the early-STOP rate."""

import math

import pytest

from training.heldout import majority_baseline, previous_action_baseline, score_actions

S, F, L, R = 0, 1, 2, 3


def test_scores_count_every_step():
    labels = [[R, R, F, F, F, S], [F, F, L, F, S]]
    preds = [[R, F, F, F, S, S], [F, F, L, F, F]]
    score = score_actions(labels, preds)
    assert score.steps == 11
    assert score.accuracy == pytest.approx(8 / 11)
    assert score.majority_action == "MOVE_FORWARD"
    assert score.majority_share == pytest.approx(6 / 11)
    assert score.stop_recall == pytest.approx(1 / 2)
    assert score.early_stop_rate == pytest.approx(1 / 9)  # one STOP on nine non-STOP steps
    assert score.per_action_recall["TURN_RIGHT"] == pytest.approx(1 / 2)
    assert "early-STOP rate 11.11 %" in score.line()


def test_baselines():
    labels = [[R, R, F, S], [F, F, S]]
    assert previous_action_baseline(labels) == [[F, R, R, F], [F, F, F]]
    assert majority_baseline(labels) == [[F] * 4, [F] * 3]
    assert score_actions(labels, majority_baseline(labels)).accuracy == pytest.approx(3 / 7)
    score = score_actions([[F, F]], [[F, F]])
    assert math.isnan(score.stop_recall) and score.early_stop_rate == 0.0


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="trajectory 0: 2 labels but 1 predictions"):
        score_actions([[F, S]], [[F]])
    with pytest.raises(ValueError, match="no held-out steps"):
        score_actions([], [])
