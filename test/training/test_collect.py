import json

import numpy as np
import pytest
from fake_nav_sim import FakeSim, make_episodes

from janus_core.actions import Action
from sim_bridge.episodes import save_split
from training.annotations import load_annotations, read_shards
from training.collect import CollectConfig, CollectError, collect, load_collect_config, main
from training.distributed import DistInfo


@pytest.fixture
def split(tmp_path):
    path = tmp_path / "train" / "train.json.gz"
    save_split(path, make_episodes(3))
    return path


def replay(episode, actions):
    sim = FakeSim()
    sim.reset(episode)
    for a in actions[1:]:
        sim.step(a)
    return sim


def test_collect_writes_release_layout(split, tmp_path):
    out = tmp_path / "out"
    cfg = CollectConfig(split=str(split), output_dir=str(out), progress=False)
    counts = collect(cfg, sim=FakeSim())
    assert counts == {"episodes": 3, "skipped": 0, "kept": 3, "rejected": 0, "errors": 0,
                      "total": 3}
    aset = load_annotations(out)  # every frame exists
    names = [t.name for t in aset.trajectories]
    assert names == ["scene_a_r2r_000001", "scene_a_r2r_000002", "scene_a_r2r_000003"]
    eps = {e.episode_id: e for e in make_episodes(3)}
    for traj in aset.trajectories:
        assert traj.actions[0] == -1 and traj.labels()[-1] == Action.STOP
        assert traj.extra["source"] == "expert:reference"
        ep = eps[traj.extra["episode_id"]]
        assert traj.instruction == ep.instruction
        # replaying the recorded actions reaches the goal, and it went via the corner
        sim = replay(ep, traj.actions)
        assert sim.distance_to_goal() <= 0.25
        straight = float(np.hypot(*np.subtract(ep.goal_position, ep.start_position)[[0, 2]]))
        assert traj.extra["path_length"] > straight + 0.2
        frame = np.asarray(__import__("PIL.Image").Image.open(aset.frame_path(traj, 0)))
        assert frame.shape == (84, 112, 3)


def test_collect_resumes(split, tmp_path):
    out = tmp_path / "out"
    cfg = CollectConfig(split=str(split), output_dir=str(out), progress=False)

    class Killed(FakeSim):  # the job is interrupted in the middle of episode 3
        def step(self, action):
            if self.episode.episode_id == "3" and self.steps == 4:
                raise KeyboardInterrupt
            return super().step(action)

    with pytest.raises(KeyboardInterrupt):
        collect(cfg, sim=Killed())
    assert not (out / "images" / "scene_a_r2r_000003").exists()  # partial frames removed
    counts = collect(cfg, sim=FakeSim())
    assert counts["skipped"] == 2 and counts["kept"] == 1 and counts["total"] == 3
    again = collect(cfg, sim=FakeSim())
    assert again["skipped"] == 3 and again["kept"] == 0


def test_a_failing_episode_is_skipped_and_retried_next_run(split, tmp_path, caplog,
                                                           monkeypatch):
    out = tmp_path / "out"

    class Broken(FakeSim):  # a simulator error in episode 2 (e.g. a geodesic query raising)
        def step(self, action):
            if self.episode.episode_id == "2" and self.steps == 3:
                raise ValueError("the goal has no zero level set")
            return super().step(action)

    cfg = CollectConfig(split=str(split), output_dir=str(out), progress=False)
    counts = collect(cfg, sim=Broken())  # the run goes on with episode 3
    assert (counts["kept"], counts["errors"], counts["total"]) == (2, 1, 2)
    assert "scene_a_r2r_000002: expert rollout failed (ValueError" in caplog.text
    assert not (out / "images" / "scene_a_r2r_000002").exists()
    assert not (out / "rejected.rank0.jsonl").exists()  # not remembered as done
    again = collect(cfg, sim=FakeSim())
    assert (again["skipped"], again["kept"], again["errors"], again["total"]) == (2, 1, 0, 3)
    # the command says so with its exit code
    monkeypatch.setattr("training.collect.make_sim", lambda settings: Broken())
    assert main(["--split", str(split), "--output-dir", str(tmp_path / "cli"),
                 "--no-progress"]) == 1
    assert "1 episode(s) failed" in caplog.text


def test_collect_shards_by_rank(split, tmp_path):
    out = tmp_path / "out"
    cfg = CollectConfig(split=str(split), output_dir=str(out), progress=False)
    c1 = collect(cfg, sim=FakeSim(), info=DistInfo(rank=1, world_size=2))
    c0 = collect(cfg, sim=FakeSim(), info=DistInfo(rank=0, world_size=2))
    assert (c0["kept"], c1["kept"]) == (2, 1) and c0["total"] == 3
    assert (out / "annotations.rank0.jsonl").exists() and (out / "annotations.rank1.jsonl").exists()


def test_unreachable_stop_is_rejected(split, tmp_path):
    out = tmp_path / "out"
    cfg = CollectConfig(split=str(split), output_dir=str(out), progress=False, max_steps=5)
    counts = collect(cfg, sim=FakeSim())
    assert counts["kept"] == 0 and counts["rejected"] == 3
    rejected = [json.loads(x) for x in (out / "rejected.rank0.jsonl").read_text().splitlines()]
    assert {r["stopped"] for r in rejected} == {False}
    assert not list((out / "images").iterdir())


def test_goal_expert_goes_straight(split, tmp_path):
    cfg = CollectConfig(split=str(split), output_dir=str(tmp_path / "o"), progress=False,
                        expert="goal", episode_ids=["1"])
    collect(cfg, sim=FakeSim())
    (traj,) = load_annotations(tmp_path / "o").trajectories
    ep = make_episodes(1)[0]
    straight = float(np.hypot(*np.subtract(ep.goal_position, ep.start_position)[[0, 2]]))
    assert traj.extra["path_length"] < straight + 0.3


def test_config_errors(tmp_path):
    with pytest.raises(CollectError, match="expert"):
        CollectConfig(expert="oracle")
    with pytest.raises(CollectError, match="unknown keys"):
        load_collect_config(None, spilt="x")
    with pytest.raises(CollectError, match="no episode file"):
        collect(CollectConfig(output_dir=str(tmp_path)), sim=FakeSim())


def test_cli_errors_are_reported(capsys, tmp_path):
    assert main(["--merge-only"]) == 2
    assert "janus-vln collect: error: --merge-only needs --output-dir" in capsys.readouterr().err
    assert main(["--split", str(tmp_path / "missing.json.gz"), "--output-dir",
                 str(tmp_path / "o")]) == 2
    assert "missing.json.gz" in capsys.readouterr().err


def test_a_record_torn_by_a_crash_is_recovered(split, tmp_path):
    """A crash mid-append leaves a last line without its newline: the next run cuts it instead
    of gluing its own record onto it (that episode is already in annotations.json here)."""
    out = tmp_path / "out"
    cfg = CollectConfig(split=str(split), output_dir=str(out), progress=False, limit=2)
    collect(cfg, sim=FakeSim())
    shard = out / "annotations.rank0.jsonl"
    lines = shard.read_text().splitlines(keepends=True)
    shard.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # episode 2's record torn
    counts = collect(CollectConfig(split=str(split), output_dir=str(out), progress=False),
                     sim=FakeSim())
    assert counts["skipped"] == 2 and counts["kept"] == 1 and counts["total"] == 3
    assert [json.loads(x)["id"] for x in shard.read_text().splitlines()] == [
        "scene_a_r2r_000001", "scene_a_r2r_000003"]
    assert len(load_annotations(out).trajectories) == 3
    # a file already damaged by an older writer (a record glued onto a torn one) still merges
    first, second = shard.read_text().splitlines()[:2]
    shard.write_text(first[:30] + second + "\n")
    assert [t.name for t in read_shards(out)] == ["scene_a_r2r_000003"]
