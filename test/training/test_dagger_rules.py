import pytest

from janus_core.actions import Action
from training.dagger_rules import (
    DaggerController,
    DaggerRule,
    keep_episode,
    path_ratio,
    segment_gt_actions,
)

F, L, R, S = Action.MOVE_FORWARD, Action.TURN_LEFT, Action.TURN_RIGHT, Action.STOP


def test_agreeing_model_drives():
    c = DaggerController(DaggerRule(), [10, 10])
    d = c.decide(F, F, 8.0)
    assert d.action == F and d.by == "model" and d.error is None and not c.model_failed


def test_far_stop_hands_over_until_next_waypoint():
    c = DaggerController(DaggerRule(), [10, 10])
    d = c.decide(S, L, 3.0)  # exactly 3 m counts as far (>= 3)
    assert d == (L, "expert", "stop_far") and c.expert_control and c.model_failed
    # the expert keeps control whatever the model says
    assert c.decide(F, R, 2.0) == (R, "expert", None)
    c.waypoint_reached()
    assert not c.expert_control and c.segment == 1 and c.final_segment
    assert c.decide(F, R, 2.0).by == "model"


def test_near_stop_outside_final_segment_is_replaced_without_failure():
    c = DaggerController(DaggerRule(), [10, 10])
    d = c.decide(S, F, 2.9)
    assert d == (F, "expert", None) and not c.model_failed and not c.expert_control
    c.waypoint_reached()
    assert c.decide(S, F, 2.9) == (S, "model", None)


def test_disagreement_limit_ratio():
    c = DaggerController(DaggerRule(), [5, 50])  # limit min(0.8*5, 12) = 4
    for _ in range(4):
        assert c.decide(L, F, 9.0) == (L, "model", None)
    assert c.decide(L, F, 9.0) == (F, "expert", "disagreements")
    c.waypoint_reached()
    assert c.disagreements == 0


def test_disagreement_limit_cap():
    rule = DaggerRule()
    assert rule.disagreement_limit(100) == 12 and rule.disagreement_limit(10) == 8
    c = DaggerController(rule, [100])
    for _ in range(12):
        assert c.decide(R, F, 9.0).by == "model"
    assert c.decide(R, F, 9.0).error == "disagreements"


def test_beta_one_is_expert_only():
    c = DaggerController(DaggerRule(beta=1.0), [3])
    assert all(c.decide(L, F, 9.0) == (F, "expert", None) for _ in range(5))
    assert not c.model_failed


def test_path_ratio_and_keep_rule():
    assert path_ratio(10, 5) == 1.0 and path_ratio(10, 20) == 0.5 and path_ratio(0, 0) == 1.0
    rule = DaggerRule()
    assert not keep_episode(rule, 0.5, 0.5, True)  # must end < 0.5 m from the goal
    assert keep_episode(rule, 0.4, 0.90, True)  # failed and pl < 0.93
    assert not keep_episode(rule, 0.4, 0.90, False)  # not failed needs pl < 0.85
    assert keep_episode(rule, 0.4, 0.84, False)
    assert not keep_episode(rule, 0.4, 0.95, True)


def test_rule_validation():
    with pytest.raises(ValueError, match="beta"):
        DaggerRule(beta=2)


def test_segment_counts_from_gt():
    ref = [[0, 0, 0], [2, 0, 0], [2, 0, 2]]
    locs = [[0, 0, 0], [0, 0, 0], [1, 0, 0], [2, 0, 0], [2, 0, 0], [2, 0, 1], [2, 0, 2]]
    acts = [2, 1, 1, 3, 1, 1, 0]
    assert segment_gt_actions(ref, locs, acts) == [3, 4]


def test_segment_counts_from_geometry():
    ref = [[0, 0, 0], [1, 0, 0], [1, 0, 1]]
    assert segment_gt_actions(ref, forward_step=0.25, turn_angle_deg=15) == [4, 4 + 6]
    assert segment_gt_actions([[0, 0, 0]], None, [1, 1, 0]) == [3]
