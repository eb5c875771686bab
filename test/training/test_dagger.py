import json

import pytest
from fake_nav_sim import FakeSim, make_episodes

from janus_core.actions import Action
from janus_core.interface import Policy, StepResult
from sim_bridge.episodes import save_split
from training.annotations import load_annotations
from training.dagger import (
    DaggerConfig,
    DaggerError,
    collect_round,
    dagger_rollout,
    load_dagger_config,
    run_dagger,
)
from training.dagger_rules import DaggerRule

F, L, R, S = Action.MOVE_FORWARD, Action.TURN_LEFT, Action.TURN_RIGHT, Action.STOP


class Scripted(Policy):
    """Plays a fixed action (or a list, then repeats the last), counting the frames it saw."""

    def __init__(self, actions):
        self.actions = list(actions) if isinstance(actions, list) else [actions]
        self.frames = 0

    def reset(self, instruction):
        self.t = 0

    def act(self, observation):
        a = self.actions[min(self.t, len(self.actions) - 1)]
        self.t += 1
        self.frames += 1
        return StepResult(action=a)


class ExpertLike(Policy):
    """Asks the simulator's goal expert: agrees with DAgger's expert on a straight route."""

    def __init__(self, sim):
        self.sim = sim

    def reset(self, instruction):
        pass

    def act(self, observation):
        return StepResult(action=self.sim.expert_action())


def straight(episode):
    episode.reference_path = [episode.start_position, episode.goal_position]
    return episode


def rollout(policy, episode=None, sim=None, **kw):
    sim = sim or FakeSim()
    frames = []
    result = dagger_rollout(sim, policy, episode or make_episodes(1)[0], DaggerRule(),
                            frames.append, **kw)
    return result, frames, sim


def test_model_that_stops_at_once_is_taken_over():
    policy = Scripted(S)
    result, frames, sim = rollout(policy)
    assert result.errors[0] == (0, "stop_far") and result.model_failed
    assert result.by[0] == "expert" and result.executed[0] != S
    assert result.stopped and result.distance_to_goal <= 0.25
    assert len(frames) == len(result.executed) == policy.frames  # the model saw every frame
    assert result.keep  # failed, reached the goal, pl < 0.93 (it went via the corner)
    assert result.pl < 0.93


def test_disagreements_hand_over_after_limit():
    policy = Scripted(L)
    result, _, _ = rollout(policy)
    first = result.errors[0]
    assert first[1] == "disagreements"
    # the model's tolerated turns were executed (and recorded) before the takeover
    assert result.executed[: first[0]] == [int(L)] * first[0] and first[0] >= 1
    assert result.by[first[0]] == "expert"


def test_good_model_is_not_kept():
    sim = FakeSim()
    result, _, _ = rollout(ExpertLike(sim), episode=straight(make_episodes(1)[0]), sim=sim)
    assert not result.model_failed and result.stopped
    assert result.distance_to_goal <= 0.25 and result.pl > 0.85
    assert not result.keep


def test_forced_stop_and_step_limit():
    result, frames, _ = rollout(Scripted(F), max_steps=3, force_stop_at=None)
    assert len(frames) == 3 and not result.stopped and not result.keep
    result, _, _ = rollout(Scripted(F), force_stop_at=0)
    assert result.errors[0] == (0, "stop_far")  # forced STOP counts as a far STOP


@pytest.fixture
def split(tmp_path):
    path = tmp_path / "train" / "train.json.gz"
    save_split(path, make_episodes(3))
    return path


@pytest.fixture
def straight_split(tmp_path):
    path = tmp_path / "straight" / "train.json.gz"
    save_split(path, [straight(e) for e in make_episodes(3)])
    return path


def test_collect_round_keeps_by_rule(split, straight_split, tmp_path, caplog):
    cfg = DaggerConfig(policy="x", split=str(split), output_dir=str(tmp_path), progress=False)
    stats = collect_round(cfg, Scripted(S), tmp_path / "r1", 1, sim=FakeSim())
    assert stats["kept"] == 3 and stats["model_failed"] == 3
    aset = load_annotations(tmp_path / "r1")
    for traj in aset.trajectories:
        assert traj.extra["source"] == "dagger" and traj.extra["model_failed"]
        assert traj.labels()[-1] == S
        assert traj.extra["pl"] < 0.93
    # good driver: nothing kept, rejections recorded so a rerun skips them
    sim = FakeSim()
    cfg.split = str(straight_split)
    with caplog.at_level("WARNING"):
        stats = collect_round(cfg, ExpertLike(sim), tmp_path / "r2", 2, sim=sim)
    assert stats["kept"] == 0 and stats["rejected"] == 3
    assert "DAgger round 2 kept no rollout (3 rejected by the filter" in caplog.text
    again = collect_round(cfg, ExpertLike(sim), tmp_path / "r2", 2, sim=sim)
    assert again["skipped"] == 3


def test_a_failing_rollout_is_skipped_and_retried(split, tmp_path, caplog):
    class Broken(FakeSim):  # a simulator error in episode 2
        def step(self, action):
            if self.episode.episode_id == "2" and self.steps == 1:
                raise ValueError("the goal has no zero level set")
            return super().step(action)

    cfg = DaggerConfig(policy="x", split=str(split), output_dir=str(tmp_path), progress=False)
    stats = collect_round(cfg, Scripted(S), tmp_path / "r1", 1, sim=Broken())
    assert (stats["kept"], stats["errors"]) == (2, 1)
    assert "DAgger rollout failed (ValueError" in caplog.text
    again = collect_round(cfg, Scripted(S), tmp_path / "r1", 1, sim=FakeSim())
    assert (again["skipped"], again["kept"], again["errors"]) == (2, 1, 0)


def test_run_dagger_round_merges_and_trains(split, tmp_path, tiny_set):
    trained = []

    def fake_train(train_cfg):
        trained.append(train_cfg)
        return train_cfg.output_dir

    built = []

    def factory(spec):
        built.append(spec)
        return Scripted(S)

    cfg = DaggerConfig(policy="initial_model", split=str(split), output_dir=str(tmp_path / "d"),
                       rounds=2, base_data=[str(tiny_set.root)], progress=False,
                       train_config="config/train_tiny.yaml")
    state = run_dagger(cfg, policy_factory=factory, sim=FakeSim(), train=fake_train)
    assert built == ["initial_model", str(tmp_path / "d/round_1/model")]
    r1, r2 = (tmp_path / "d/round_1/data"), (tmp_path / "d/round_2/data")
    assert trained[0].data == [str(tiny_set.root), str(r1)]
    assert trained[1].data == [str(tiny_set.root), str(r1), str(r2)]
    assert trained[0].model == "initial_model"
    assert trained[1].model == str(tmp_path / "d/round_1/model")
    assert state["rounds"]["2"]["trained"]
    saved = json.loads((tmp_path / "d/dagger_state.json").read_text())
    assert saved["rounds"]["1"]["collect_stats"]["kept"] == 3
    # everything done: a rerun rolls out and trains nothing
    run_dagger(cfg, policy_factory=factory, sim=FakeSim(), train=fake_train)
    assert len(built) == 2 and len(trained) == 2


def test_config_errors():
    with pytest.raises(DaggerError, match="rule: .*beta"):
        load_dagger_config(None, rule={"beta": 3})
    with pytest.raises(DaggerError, match="unknown keys"):
        load_dagger_config(None, rule={"bta": 0})
    with pytest.raises(DaggerError, match="no policy"):
        run_dagger(DaggerConfig())
