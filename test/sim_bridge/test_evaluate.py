import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from janus_core.actions import Action
from janus_core.interface import Observation, Policy, StepResult
from sim_bridge.episodes import gt_path_for, load_split, save_split
from sim_bridge.evaluate import (
    EpisodeSeededRandomPolicy,
    EvalConfig,
    EvalError,
    evaluate,
    load_eval_config,
    main,
    merge,
    merge_main,
    resolve_shard,
    select_episodes,
    shard_episodes,
)
from sim_bridge.generate import GenerateConfig, generate_dataset
from sim_bridge.results import read_records

REPO = Path(__file__).resolve().parents[2]
VOLATILE = ("timings", "finished_at", "shard")


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    paths = generate_dataset(out, GenerateConfig(splits={"val_unseen": 6}, seed=11,
                                                 episodes_per_scene=3))
    return paths["val_unseen"]


def cfg_for(split, out, **kw):
    base = dict(split=str(split), output_dir=str(out), sim={"render": False}, progress=False)
    base.update(kw)
    return EvalConfig(**base)


def stable(record):
    return {k: v for k, v in record.items() if k not in VOLATILE}


def episodes_file(out):
    return [json.loads(line) for line in (Path(out) / "episodes.jsonl").read_text().splitlines()]


def test_expert_baseline_reaches_every_goal(split, tmp_path):
    data = evaluate(cfg_for(split, tmp_path, policy="expert"))
    s = data["summary"]
    assert data["complete"] and data["finished"] == 6 and s["errors"] == 0
    m = s["metrics"]
    assert m["sr"] == 1.0 and m["os"] == 1.0
    assert m["ndtw"] == pytest.approx(1.0, abs=1e-4)  # the gt is the same expert's replay
    assert m["sdtw"] == pytest.approx(1.0, abs=1e-4)
    assert m["spl"] > 0.9 and m["ne"] < 0.5
    for r in episodes_file(tmp_path):
        assert r["status"] == "ok" and r["end_reason"] == "stop"
        assert r["actions"][-1] == int(Action.STOP)
        assert len(r["positions"]) == len(r["actions"]) == r["metrics"]["steps"]
        assert r["metrics"]["ndtw_reference"] == "gt"
        assert r["timings"]["stages_s"]["expert"] > 0
    assert "| 6 |" in (tmp_path / "metrics.md").read_text()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["summary"] == s and saved["settings"]["policy"] == "expert"


def test_random_baseline_stays_low(split, tmp_path):
    m = evaluate(cfg_for(split, tmp_path, policy="random"))["summary"]["metrics"]
    assert m["sr"] <= 1 / 6 and m["ne"] > 3.0 and m["ndtw"] < 0.6


def test_step_limit_and_forced_stop(split, tmp_path):
    data = evaluate(cfg_for(split, tmp_path / "a", policy="forward", max_steps=20))
    for r in episodes_file(tmp_path / "a"):
        assert r["end_reason"] == "max_steps" and r["actions"] == [1] * 20
        assert r["metrics"]["sr"] == 0.0 and r["metrics"]["stop_called"] is False
    assert data["summary"]["metrics"]["steps"] == 20
    data = evaluate(cfg_for(split, tmp_path / "b", policy="forward", protocol="release",
                            force_stop_at=5))
    for r in episodes_file(tmp_path / "b"):
        assert r["end_reason"] == "forced_stop" and r["actions"] == [1] * 5 + [0]
        assert r["metrics"]["stop_called"] is True
    assert data["protocol"].startswith("release (JanusVLN release: STOP forced at step 5")
    # the protocols by name: VLN-CE never forces STOP, the release does at 400
    assert cfg_for(split, tmp_path, policy="forward").force_stop_at is None
    assert cfg_for(split, tmp_path, policy="forward", protocol="release").force_stop_at == 400
    with pytest.raises(EvalError, match="contradicts protocol vlnce"):
        cfg_for(split, tmp_path, policy="forward", force_stop_at=5)
    with pytest.raises(EvalError, match="protocol 'habitat' is not one of"):
        cfg_for(split, tmp_path, policy="forward", protocol="habitat")


DRIVER = textwrap.dedent("""
    import sys, time
    from sim_bridge.evaluate import EpisodeSeededRandomPolicy, EvalConfig, evaluate

    class Slow(EpisodeSeededRandomPolicy):
        def act(self, observation):
            time.sleep(0.004)
            return super().act(observation)

    cfg = EvalConfig(policy="random", split=sys.argv[1], output_dir=sys.argv[2],
                     sim={"render": False}, progress=False)
    evaluate(cfg, policy=Slow())
""")


def test_sigkill_mid_run_then_resume_matches_uninterrupted(split, tmp_path):
    out = tmp_path / "killed"
    shard_file = out / "results" / "shard-000-of-001.jsonl"
    # run from the repository root, like the tests, so the same packages import
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(split), str(out)], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if shard_file.exists() and shard_file.read_bytes().count(b"\n") >= 2:
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.005)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done_before = read_records(shard_file)
    assert 2 <= len(done_before) < 6
    with open(shard_file, "ab") as fh:  # and a write torn by the kill
        fh.write(b'{"scene_id": "embedded:apt_0', )

    evaluate(cfg_for(split, out, policy="random"))            # resume
    evaluate(cfg_for(split, tmp_path / "clean", policy="random"))  # uninterrupted

    lines = shard_file.read_text().splitlines()
    keys = [(json.loads(x)["scene_id"], json.loads(x)["episode_id"]) for x in lines]
    assert len(lines) == 6 and len(set(keys)) == 6           # none lost, none duplicated
    assert lines[: len(done_before)] == [json.dumps(r, separators=(",", ":"))
                                         for r in done_before]   # finished ones kept as they were
    resumed = [stable(r) for r in episodes_file(out)]
    clean = [stable(r) for r in episodes_file(tmp_path / "clean")]
    assert resumed == clean


def test_two_shards_equal_one(split, tmp_path, monkeypatch):
    for shard in (0, 1):
        evaluate(cfg_for(split, tmp_path / "two", policy="random", shard=shard, num_shards=2))
    one = evaluate(cfg_for(split, tmp_path / "one", policy="random"))
    two = merge(tmp_path / "two")
    assert two["complete"] and two["per_shard"] == {"shard-000-of-002.jsonl": 3,
                                                    "shard-001-of-002.jsonl": 3}
    assert two["summary"] == one["summary"]
    assert [stable(r) for r in episodes_file(tmp_path / "two")] == [
        stable(r) for r in episodes_file(tmp_path / "one")]
    ordered = select_episodes(load_split(split))
    first = [r["episode_id"] for r in read_records(
        tmp_path / "two" / "results" / "shard-000-of-002.jsonl")]
    assert first == [e.episode_id for e in shard_episodes(ordered, 0, 2)]
    # a later run with another shard count finds everything done and runs nothing
    evaluate(cfg_for(split, tmp_path / "two", policy="random"))
    assert read_records(tmp_path / "two" / "results" / "shard-000-of-001.jsonl") == []
    # torchrun's environment decides the shard when none is given
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert resolve_shard() == (1, 4)
    assert resolve_shard(0, 1) == (0, 1)
    with pytest.raises(EvalError):
        resolve_shard(3, None)
    with pytest.raises(EvalError):
        resolve_shard(4, 4)


def test_changed_settings_are_refused(split, tmp_path):
    evaluate(cfg_for(split, tmp_path, policy="random", limit=1))
    with pytest.raises(EvalError, match="max_steps: 500 -> 100"):
        evaluate(cfg_for(split, tmp_path, policy="random", limit=1, max_steps=100))
    with pytest.raises(EvalError, match=r"seed: 0 -> 1\); add --overwrite"):
        evaluate(cfg_for(split, tmp_path, policy="random", limit=1, seed=1))
    with pytest.raises(EvalError, match="policy: random -> expert"):
        evaluate(cfg_for(split, tmp_path, policy="expert", limit=1))
    with pytest.raises(EvalError, match="protocol: 'vlnce' -> 'release'"):
        evaluate(cfg_for(split, tmp_path, policy="random", limit=1, protocol="release"))


def test_results_are_tied_to_the_episode_file_and_policy(split, tmp_path):
    """A regenerated split in the same place is refused; the same file elsewhere resumes;
    --overwrite starts over; records of other episodes never enter a table."""
    data_dir = tmp_path / "data" / "val_unseen"
    data_dir.mkdir(parents=True)
    mine = data_dir / "val_unseen.json.gz"
    for src, dst in ((split, mine), (gt_path_for(split), gt_path_for(mine))):
        dst.write_bytes(Path(src).read_bytes())
    out = tmp_path / "run"
    first = evaluate(cfg_for(mine, out, policy="random", limit=3))
    assert first["complete"] and first["finished"] == 3
    # the same content reached by another path resumes: nothing runs again
    moved = tmp_path / "elsewhere" / "copy.json.gz"
    moved.parent.mkdir()
    moved.write_bytes(mine.read_bytes())
    again = evaluate(cfg_for(moved, out, policy="random", limit=3, gt=str(gt_path_for(mine))))
    assert again["summary"] == first["summary"]
    shard = out / "results" / "shard-000-of-001.jsonl"
    assert len(read_records(shard)) == 3
    # the split regenerated in place (other instructions): refused, naming the file's content
    eps = load_split(mine, gt_path=gt_path_for(mine))
    eps = [dataclasses.replace(ep, instruction=ep.instruction + " Then wait.") for ep in eps]
    save_split(mine, eps, gt_path=gt_path_for(mine))
    with pytest.raises(EvalError, match="the episode file's content changed .*add --overwrite"):
        evaluate(cfg_for(mine, out, policy="random", limit=3))
    # --overwrite deletes the old results and runs the new episodes
    fresh = evaluate(cfg_for(mine, out, policy="random", limit=3, overwrite=True))
    assert fresh["complete"] and fresh["finished"] == 3
    assert {r["instruction"].endswith("Then wait.") for r in episodes_file(out)} == {True}
    # records of episodes that are not this run's (a stray shard file) are ignored
    stray = dict(read_records(shard)[0], episode_id="999", scene_id="embedded:apt_00001")
    with open(out / "results" / "shard-000-of-009.jsonl", "w") as fh:
        fh.write(json.dumps(stray) + "\n")
    merged = merge(out)
    assert merged["finished"] == 3 and merged["expected"] == 3 and merged["complete"]
    assert "999" not in {r["episode_id"] for r in episodes_file(out)}
    # a directory with results but no run.json is refused (what made them is unknown)
    (out / "run.json").unlink()
    with pytest.raises(EvalError, match="results without a run.json"):
        evaluate(cfg_for(mine, out, policy="random", limit=3))


def test_backend_is_checked_before_the_first_episode(split, tmp_path, monkeypatch, capsys):
    """MP3D scenes are never run on the embedded simulator; a missing habitat-sim is one line."""
    monkeypatch.setitem(sys.modules, "habitat_sim", None)  # habitat-sim is not installed
    eps = load_split(split, gt_path=gt_path_for(split))
    mp3d = [dataclasses.replace(ep, scene_id="mp3d/zsNo4HB9uLZ/zsNo4HB9uLZ.glb") for ep in eps]
    official = tmp_path / "val_unseen.json.gz"
    save_split(official, mp3d, gt_path=gt_path_for(official))
    out = tmp_path / "run"
    with pytest.raises(EvalError, match="scene 'mp3d/zsNo4HB9uLZ/zsNo4HB9uLZ.glb' of "
                       "val_unseen.json.gz cannot be loaded by the embedded backend .*use "
                       "--backend habitat"):
        evaluate(cfg_for(official, out, policy="random"))
    for backend in ("auto", "habitat"):
        with pytest.raises(EvalError, match="backend habitat: habitat-sim is not installed .*"
                           "conda"):
            evaluate(cfg_for(official, out, policy="random", backend=backend))
    # the embedded episodes under auto: the embedded backend
    data = evaluate(cfg_for(split, out, policy="random", backend="auto", limit=1))
    assert data["settings"]["backend"] == "embedded"
    assert main(["--policy", "random", "--split", str(official), "--backend", "habitat",
                 "--output-dir", str(tmp_path / "h")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "habitat-sim is not installed" in err
    assert not (tmp_path / "h").exists()


def test_outcome_codes_and_degenerate_episodes(split, tmp_path, capsys):
    """Exit 1 when an episode errored or none was scored; start-at-goal episodes are counted."""
    eps = load_split(split, gt_path=gt_path_for(split))
    at_goal = dataclasses.replace(eps[0], start_position=list(eps[0].goal_position))
    broken = dataclasses.replace(eps[1], start_position=[500.0, 0.0, 500.0])
    path = tmp_path / "odd.json.gz"
    save_split(path, [at_goal, broken], gt_path=gt_path_for(path))
    argv = ["--policy", "expert", "--split", str(path), "--output-dir", str(tmp_path / "a"),
            "--set", "sim.render=false", "--no-progress"]
    assert main(argv) == 1                                 # one episode errored
    out = capsys.readouterr().out
    assert "1 of 2 episodes scored, 1 errored" in out and "1 start at the goal" in out
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["summary"]["degenerate"] == {"start_at_goal": 1, "unreachable_goal": 0}
    assert not metrics["complete"] and metrics["errors"] == 1
    (record,) = [r for r in episodes_file(tmp_path / "a") if r["status"] == "ok"]
    assert record["metrics"]["spl"] == record["metrics"]["sr"] == 1.0
    save_split(path, [broken], gt_path=gt_path_for(path))
    assert main([*argv[:5], str(tmp_path / "b"), *argv[6:]]) == 1  # none scored
    assert main(["merge", "--output-dir", str(tmp_path / "b")]) == 1


def test_interrupted_cli_run_keeps_partial_metrics(split, tmp_path, monkeypatch, capsys):
    import sim_bridge.evaluate as ev

    monkeypatch.setattr(ev, "build_policy",
                        lambda spec, sim, cfg=None: InterruptAfterFirstEpisode())
    out = tmp_path / "run"
    argv = ["--policy", "random", "--split", str(split), "--output-dir", str(out),
            "--set", "sim.render=false", "--no-progress"]
    assert main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"janus-vln eval: interrupted: 1 of 6 episodes finished, partial metrics "
                       f"in {out / 'metrics.json'}; rerun the same command to resume")
    assert json.loads((out / "metrics.json").read_text())["finished"] == 1
    monkeypatch.undo()
    assert main(argv) == 0 and merge(out)["complete"]


class FlakyPolicy(Policy):
    """Random policy that raises inside act() for one instruction."""

    def __init__(self, bad_instruction):
        self.inner = EpisodeSeededRandomPolicy()
        self.bad = bad_instruction
        self.instruction = None

    def seed_episode(self, seed):
        self.inner.seed_episode(seed)

    def reset(self, instruction):
        self.instruction = instruction
        self.inner.reset(instruction)

    def act(self, observation: Observation) -> StepResult:
        if self.instruction == self.bad:
            raise RuntimeError("policy exploded")
        return self.inner.act(observation)


def test_bad_episodes_are_recorded_and_the_run_goes_on(split, tmp_path):
    eps = load_split(split, gt_path=gt_path_for(split))
    eps[1] = dataclasses.replace(eps[1], start_position=[500.0, 0.0, 500.0])  # the sim refuses
    bad_split = tmp_path / "bad.json.gz"
    save_split(bad_split, eps, gt_path=gt_path_for(bad_split))
    flaky = eps[3].instruction
    out = tmp_path / "run"
    data = evaluate(cfg_for(bad_split, out, policy="random"), policy=FlakyPolicy(flaky))
    assert data["finished"] == 6 and data["summary"]["errors"] == 2
    assert data["summary"]["episodes"] == 4 and data["scored"] == 4 and data["errors"] == 2
    assert not data["complete"]                   # complete means every episode was scored
    assert data["shard"] == {"episodes": 6, "scored": 4, "errors": 2}
    md = (out / "metrics.md").read_text()
    assert "4 of 6 episodes scored, 2 errored" in md and "(incomplete run)" in md
    by_id = {r["episode_id"]: r for r in episodes_file(out)}
    assert "start_position" in by_id[eps[1].episode_id]["error"]
    assert by_id[eps[3].episode_id]["error"] == "RuntimeError: policy exploded"
    assert "Traceback" in by_id[eps[3].episode_id]["traceback"]
    # a plain restart keeps the errors; retry_errors runs them again (the flaky one now works)
    assert evaluate(cfg_for(bad_split, out, policy="random"))["summary"]["errors"] == 2
    cfg = cfg_for(bad_split, out, policy="random", retry_errors=True)
    data = evaluate(cfg)
    assert data["summary"]["errors"] == 1 and data["finished"] == 6 and not data["complete"]
    again = [r for r in read_records(out / "results" / "shard-000-of-001.jsonl")
             if r["episode_id"] == eps[1].episode_id]
    assert [r["status"] for r in again] == ["error", "error"]  # retried, and refused again
    assert {r["status"] for r in episodes_file(out) if r["episode_id"] == eps[3].episode_id} == {
        "ok"}


def test_release_configs():
    r2r = load_eval_config(REPO / "config" / "eval_r2r.yaml")
    rxr = load_eval_config(REPO / "config" / "eval_rxr.yaml")
    for c in (r2r, rxr):
        assert (c.width, c.height, c.hfov_deg) == (None, None, 79.0)  # the checkpoint's camera
        assert (c.forward_step, c.success_distance) == (0.25, 3.0)
        assert (c.max_steps, c.protocol, c.force_stop_at) == (500, "vlnce", None)
        assert c.policy == ""                      # --policy is required
    release = load_eval_config(REPO / "config" / "eval_r2r.yaml", protocol="release")
    assert release.force_stop_at == 400
    # R2R-CE: JanusVLN's vln_r2r.yaml on habitat-lab's defaults; RxR-CE: VLN-CE's RxR task
    assert r2r.turn_angle == 15.0 and rxr.turn_angle == 30.0
    sim_fields = ("agent_height", "agent_radius", "camera_height", "allow_sliding", "depth_min",
                  "depth_max")
    assert [r2r.sim[k] for k in sim_fields] == [1.5, 0.1, 1.25, True, 0.0, 10.0]
    assert [rxr.sim[k] for k in sim_fields] == [0.88, 0.18, 0.88, False, 0.5, 5.0]
    assert rxr.split.endswith("val_unseen_guide.json.gz") and rxr.languages == ["en"]
    assert load_eval_config(REPO / "config" / "eval_r2r.yaml", max_steps=7).max_steps == 7
    with pytest.raises(EvalError, match="unknown eval config keys"):
        load_eval_config(REPO / "config" / "eval_r2r.yaml", max_step=7)


def test_cli_run_and_merge(split, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["--config", str(REPO / "config" / "eval_r2r.yaml"), "--policy", "expert",
            "--split", str(split), "--backend", "embedded", "--output-dir", str(out),
            "--limit", "2", "--set", "sim.render=false", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "| 2 |" in printed.out and "Protocol: vlnce (VLN-CE" in printed.out
    assert "| 2 |" not in printed.err           # the table on stdout, the logs on stderr
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["protocol"] == "vlnce" and run["settings"]["force_stop_at"] is None
    assert (run["settings"]["width"], run["settings"]["height"]) == (640, 480)
    assert main(["merge", "--output-dir", str(out)]) == 0
    assert merge_main(["--output-dir", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["summary"]["metrics"]["sr"] == 1.0
    assert metrics["protocol"].startswith("vlnce (VLN-CE: episodes end at STOP or after "
                                          "500 actions, no forced STOP")
    assert "Protocol: vlnce (VLN-CE" in (out / "metrics.md").read_text()
    assert "Degenerate episodes: 0 start at the goal" in (out / "metrics.md").read_text()
    capsys.readouterr()
    assert main(["--policy", "random", "--split", str(tmp_path / "missing.json.gz"),
                 "--output-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("janus-vln eval: error: ") and "does not exist" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
    assert main(["merge", "--output-dir", str(tmp_path / "nothing")]) == 2
    # eval without a policy is an error, not a silent baseline
    assert main(["--split", str(split), "--output-dir", str(tmp_path / "y")]) == 2
    assert "no policy: give --policy" in capsys.readouterr().err


def test_video_of_an_episode(split, tmp_path):
    import imageio.v2 as imageio

    cfg = cfg_for(split, tmp_path, policy="expert", limit=1, video=True, width=96, height=72,
                  sim={"furniture": "shapes"})
    evaluate(cfg)
    (record,) = episodes_file(tmp_path)
    video = tmp_path / record["video"]
    frames = [f for f in imageio.get_reader(str(video))]  # list() would ask len(): inf here
    assert len(frames) == len(record["positions"])       # the start plus one per move
    assert frames[0].shape[0] == 72 and frames[0].shape[1] > 96   # RGB beside the map


def test_rxr_split_language_filter_and_gt(split, tmp_path):
    eps = load_split(split, gt_path=gt_path_for(split))
    for i, ep in enumerate(eps):
        ep.language = ["en-US", "hi-IN", "en-IN"][i % 3]
        ep.instruction_id = f"r{i}"
    rxr = tmp_path / "val_unseen_guide.json.gz"
    save_split(rxr, eps, gt_path=gt_path_for(rxr), fmt="rxr")
    data = evaluate(cfg_for(rxr, tmp_path / "out", policy="expert", languages=["en"]))
    records = episodes_file(tmp_path / "out")
    assert data["finished"] == 4 and {r["language"] for r in records} == {"en-US", "en-IN"}
    assert all(r["metrics"]["ndtw_reference"] == "gt" for r in records)
    assert {r["instruction_id"] for r in records} == {"r0", "r2", "r3", "r5"}


def test_janusvln_tiny_end_to_end(split, tmp_path):
    pytest.importorskip("janus_core.factory", reason="janus_core.factory (build_policy) missing")
    with pytest.raises(EvalError, match="was trained on 640x480 frames, but 64x48"):
        evaluate(cfg_for(split, tmp_path / "small", policy="tiny", limit=1, width=64, height=48))
    assert not (tmp_path / "small").exists()       # refused before the run directory exists
    cfg = cfg_for(split, tmp_path, policy="tiny", limit=1, max_steps=3,
                  sim={"furniture": "shapes"})
    data = evaluate(cfg)
    (record,) = episodes_file(tmp_path)
    assert record["status"] == "ok", record.get("traceback")
    assert 1 <= len(record["actions"]) <= 3
    assert set(record["timings"]["stages_s"]) >= {"vggt", "vit", "llm"}
    assert data["complete"]


class InterruptAfterFirstEpisode(EpisodeSeededRandomPolicy):
    """Random policy whose second episode is interrupted (as by Ctrl-C) at its first step."""

    def __init__(self):
        super().__init__()
        self.episodes = 0

    def reset(self, instruction):
        self.episodes += 1
        super().reset(instruction)

    def act(self, observation):
        if self.episodes > 1:
            raise KeyboardInterrupt
        return super().act(observation)


def test_missing_checkpoint_and_empty_split_are_clear_errors(split, tmp_path, capsys):
    missing = tmp_path / "checkpoints" / "janus_missing"
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        evaluate(cfg_for(split, out, policy="random"), policy=InterruptAfterFirstEpisode())
    shard_file = out / "results" / "shard-000-of-001.jsonl"
    before = read_records(shard_file)
    assert len(before) == 1
    # a checkpoint that is not there: a clear error before anything runs, the run is kept
    with pytest.raises(EvalError, match=r"janus_missing'?: no such checkpoint folder"):
        evaluate(cfg_for(split, out, policy=str(missing)))
    assert read_records(shard_file) == before
    argv = ["--policy", str(missing), "--split", str(split), "--output-dir", str(out),
            "--set", "sim.render=false", "--no-progress"]
    assert main(argv) == 2 and "no such checkpoint folder" in capsys.readouterr().err
    assert read_records(shard_file) == before
    empty_dir = tmp_path / "empty_ckpt"
    empty_dir.mkdir()
    with pytest.raises(EvalError, match="not a checkpoint folder"):
        evaluate(cfg_for(split, tmp_path / "e1", policy=str(empty_dir)))
    with pytest.raises(EvalError, match="unknown preset 'no_such_preset'"):
        evaluate(cfg_for(split, tmp_path / "p", policy="no_such_preset"))
    # an empty split
    empty = tmp_path / "empty.json.gz"
    save_split(empty, [])
    with pytest.raises(EvalError, match="no episodes to evaluate"):
        evaluate(cfg_for(empty, tmp_path / "e", policy="random"))


def test_refused_episodes_name_the_file_episode_and_field(split, tmp_path):
    """A start inside a wall: the run records an error naming the episode file, the episode and
    the field, and goes on. An unknown scene id is refused before the first episode."""
    from sim_bridge.backends import make_simulator
    from sim_bridge.simulator import SimConfig

    eps = load_split(split)
    sim = make_simulator(SimConfig(render=False))
    try:
        sim.load_scene(eps[2].scene_id)
        bx0, bz0, bx1, bz1 = sim.scene.bounds
        mids = [(0.5 * (w.rect[0] + w.rect[2]), 0.5 * (w.rect[1] + w.rect[3]))
                for w in sim.scene.walls if w.y0 == 0.0]
        x, z = next((x, z) for x, z in mids
                    if bx0 + 0.5 < x < bx1 - 0.5 and bz0 + 0.5 < z < bz1 - 0.5)
        inside = [x, 0.0, z]  # the middle of an interior wall
    finally:
        sim.close()
    eps[2] = dataclasses.replace(eps[2], start_position=inside)
    bad_split = tmp_path / "refused.json.gz"
    save_split(bad_split, eps)
    out = tmp_path / "run"
    data = evaluate(cfg_for(bad_split, out, policy="random", max_steps=5))
    assert data["summary"]["errors"] == 1
    by_id = {r["episode_id"]: r for r in episodes_file(out)}
    wall_start = by_id[eps[2].episode_id]["error"]
    assert f"{bad_split}: episode {eps[2].episode_id}: field start_position" in wall_start
    assert "inside a wall" in wall_start
    eps[1] = dataclasses.replace(eps[1], scene_id="embedded:apt_nope")
    save_split(tmp_path / "unknown.json.gz", eps)
    with pytest.raises(EvalError, match="scene 'embedded:apt_nope' of unknown.json.gz cannot be "
                       "loaded by the embedded backend .*no backend loads it"):
        evaluate(cfg_for(tmp_path / "unknown.json.gz", tmp_path / "run2", policy="random"))
    assert not (tmp_path / "run2").exists()


def test_the_protocol_not_the_policy_decides_the_forced_stop(split, tmp_path):
    # a JanusVLN policy forces STOP at its own max_steps (400, the release loop); evaluated, the
    # protocol decides: the policy's limit moves to the episode's, where it never fires
    from sim_bridge.evaluate import build_policy

    cfg = cfg_for(split, tmp_path, policy="tiny", max_steps=37)
    policy = build_policy("tiny", None, cfg)
    assert policy.cfg.max_steps == 37 and cfg.force_stop_at is None
    assert build_policy("tiny", None).cfg.max_steps == 400  # outside an evaluation: unchanged
