"""``janus-vln sim-eval``: the ROS evaluation without the launch tools.

* A tiny JanusVLN (random weights, a checkpoint on disk) evaluated through ROS gives exactly the
  per-episode actions and metrics of the in-process runner on the same episodes.
* Killing the navigator and then the bridge in the middle of a split: sim-eval starts each again
  and the run finishes with every episode recorded once, equal to an uninterrupted run.
* Command lines and environment, bad models and bad splits fail with a clear message.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from ros_harness import REPO, wait_until

from janus_vln_ros import sim_eval
from sim_bridge.evaluate import EvalConfig, evaluate
from sim_bridge.generate import GenerateConfig, generate_dataset
from sim_bridge.results import read_records

VOLATILE = ("timings", "finished_at", "shard", "parse_failures", "policy")


def stable(record):
    return {k: v for k, v in record.items() if k not in VOLATILE}


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    cfg = GenerateConfig(splits={"val_unseen": 3}, seed=5, episodes_per_scene=3,
                         min_geodesic=3.0, max_geodesic=5.0, mean_geodesic=4.0)
    return generate_dataset(out, cfg)["val_unseen"]


def results(out):
    return read_records(out / "results" / "shard-000-of-001.jsonl")


def start_sim_eval(args: list[str], log_path) -> subprocess.Popen:
    log = open(log_path, "wb")  # noqa: SIM115 - closed by the OS when the test ends
    return subprocess.Popen([sys.executable, "-m", "janus_vln_ros.sim_eval", *args],
                            stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                            start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float, log_path) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        raise AssertionError(f"sim-eval did not finish:\n{log_path.read_text()[-6000:]}") from None


# ---------------------------------------------------------------- tiny JanusVLN, deterministic
def action_head_checkpoint(path, seed):
    """A tiny streaming JanusVLN whose LM head only scores the action tokens.

    With random weights the shortest candidate (STOP) always wins; keeping only the rows of the
    candidates' tokens makes the choice depend on the frames and the memory instead.
    """
    import torch

    from janus_core.actions import Action
    from janus_core.checkpoint import save_checkpoint
    from janus_core.config import load_config
    from janus_core.model import build_model
    from janus_core.tokenizer import build_tokenizer

    torch.manual_seed(seed)
    cfg = load_config("tiny").replace(mode="streaming")
    model, tokenizer = build_model(cfg), build_tokenizer(cfg)
    tokens = {tokenizer.eos_token_id}
    for action in Action:
        tokens.update(tokenizer(action.name, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        head = model.qwen.lm_head.weight
        keep = torch.zeros(head.shape[0], dtype=torch.bool)
        keep[sorted(tokens)] = True
        head[~keep] = 0.0
        head[keep] = torch.randn(int(keep.sum()), head.shape[1]) * 2.0
    return save_checkpoint(model, tokenizer, cfg, path)


def test_tiny_janusvln_through_ros_equals_in_process(split, tmp_path):
    pytest.importorskip("janus_core.streaming")
    settings = dict(split=str(split), limit=3, max_steps=6, sim={"furniture": "shapes"},
                    progress=False)
    for seed in range(6):  # a model that does not answer STOP everywhere
        ckpt = action_head_checkpoint(tmp_path / f"ckpt{seed}", seed)
        inproc = tmp_path / f"inproc{seed}"
        evaluate(EvalConfig(policy=str(ckpt), output_dir=str(inproc), **settings))
        reference = results(inproc)
        actions = [a for r in reference for a in r["actions"]]
        if len(set(actions)) >= 2 and max(len(r["actions"]) for r in reference) > 1:
            break
    else:
        pytest.fail(f"no seed gave a tiny model with varied actions: {actions}")
    out = tmp_path / "ros"
    log_path = tmp_path / "sim_eval.log"
    proc = start_sim_eval([
        "--model", str(ckpt), "--split", str(split), "--output-dir", str(out), "--limit", "3",
        "--max-steps", "6", "--sim-settings", "{furniture: shapes}", "--namespace", "tiny",
        "--timeout", "150"], log_path)
    assert finish(proc, 170, log_path) == 0, log_path.read_text()[-6000:]
    records = results(out)
    assert [stable(r) for r in records] == [stable(r) for r in reference]
    assert all(r["policy"] == str(ckpt) for r in records)
    text = log_path.read_text()
    assert "| 3 |" in text and "3 of 3 episodes" in text  # the metrics table on stdout
    nav_log = (out / "logs" / "navigator-1.log").read_text()
    assert "policy StreamingPolicy ready" in nav_log


# ---------------------------------------------------------------- kill and resume
def test_killing_either_node_mid_split_loses_nothing(split, tmp_path):
    out = tmp_path / "ros"
    log_path = tmp_path / "sim_eval.log"
    proc = start_sim_eval([
        "--model", "expert:ros", "--split", str(split), "--output-dir", str(out),
        "--width", "64", "--height", "48", "--sim-settings", "{furniture: shapes}",
        "--namespace", "killed", "--timeout", "150"], log_path)

    def pid(name, number):
        found = re.findall(rf"started {name} \(pid (\d+)\)", log_path.read_text())
        return int(found[number - 1]) if len(found) >= number else None

    try:
        assert wait_until(lambda: len(results(out)) >= 1, 60.0, period=0.05), log_path.read_text()
        time.sleep(0.3)  # inside episode 2
        os.kill(pid("navigator", 1), signal.SIGKILL)
        assert wait_until(lambda: pid("navigator", 2) and pid("sim_bridge", 2), 40.0), \
            log_path.read_text()
        assert wait_until(lambda: len(results(out)) >= 2, 60.0, period=0.05), log_path.read_text()
        time.sleep(0.3)  # inside episode 3
        os.kill(pid("sim_bridge", 2), signal.SIGKILL)
        assert finish(proc, 90, log_path) == 0, log_path.read_text()[-6000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log_path.read_text()
    # each death restarts both nodes (the survivor's DDS transport may not recover)
    assert pid("sim_bridge", 3) and pid("navigator", 3) and not pid("navigator", 4), text
    assert "navigator exited with code -9; starting both nodes again (1 of 3" in text
    assert "sim_bridge exited with code -9; starting both nodes again (1 of 3" in text
    records = results(out)
    inproc = tmp_path / "inproc"
    evaluate(EvalConfig(policy="expert", split=str(split), output_dir=str(inproc),
                        sim={"render": False, "furniture": "shapes"}, progress=False))
    assert [stable(r) for r in records] == [stable(r) for r in results(inproc)]
    assert all(r["status"] == "ok" and r["metrics"]["sr"] == 1.0 for r in records)
    # each new bridge resumed from the results file
    assert "2 to run" in (out / "logs" / "sim_bridge-2.log").read_text()
    assert "1 to run" in (out / "logs" / "sim_bridge-3.log").read_text()
    # running the command again on a finished run does nothing and succeeds
    again = start_sim_eval(["--model", "expert:ros", "--split", str(split), "--output-dir",
                            str(out), "--width", "64", "--height", "48", "--sim-settings",
                            "{furniture: shapes}", "--namespace", "again", "--timeout", "60"],
                           tmp_path / "again.log")
    assert finish(again, 80, tmp_path / "again.log") == 0
    assert len(results(out)) == 3


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def test_sigkill_of_sim_eval_leaves_no_node_behind_and_a_rerun_resumes(split, tmp_path):
    out = tmp_path / "ros"
    args = ["--model", "expert:ros", "--split", str(split), "--output-dir", str(out),
            "--width", "64", "--height", "48", "--sim-settings", "{furniture: shapes}",
            "--timeout", "150"]
    log_path = tmp_path / "killed.log"
    proc = start_sim_eval([*args, "--namespace", "orphan1"], log_path)
    try:
        assert wait_until(lambda: len(results(out)) >= 1, 60.0, period=0.05), log_path.read_text()
        nodes = [int(p) for p in re.findall(r"started \w+ \(pid (\d+)\)", log_path.read_text())]
        assert len(nodes) == 2 and all(alive(p) for p in nodes)
        os.kill(proc.pid, signal.SIGKILL)  # the supervisor only: the nodes have own sessions
        proc.wait(timeout=10)
        assert wait_until(lambda: not any(alive(p) for p in nodes), 10.0, period=0.05), \
            [p for p in nodes if alive(p)]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    done = len(results(out))
    again = start_sim_eval([*args, "--namespace", "orphan2"], tmp_path / "again.log")
    assert finish(again, 90, tmp_path / "again.log") == 0, (tmp_path / "again.log").read_text()
    records = results(out)
    assert len(records) == 3 and len({r["episode_id"] for r in records}) == 3
    assert f"{3 - done} to run" in (tmp_path / "again.log").read_text() or done == 3


# ---------------------------------------------------------------- command lines, failures
def args_for(**kw):
    base = ["--model", "forward", "--split", "s.json"]
    for key, value in kw.items():
        base += [f"--{key.replace('_', '-')}", str(value)]
    return sim_eval._parser().parse_args(base)


def test_node_commands_and_environment(monkeypatch):
    args = args_for(namespace="robot1", max_steps=7, width=320, height=240, domain_id=42)
    args.bridge_param = ["step_timeout:=30.0"]
    commands = sim_eval.node_commands(args)
    bridge, navigator = commands["sim_bridge"], commands["navigator"]
    assert bridge[:3] == [sys.executable, "-m", "janus_vln_ros.sim_bridge_node"]
    assert navigator[:3] == [sys.executable, "-m", "janus_vln_ros.navigator_node"]
    for command, name, files in ((bridge, "sim_bridge", ["sim_bridge.yaml", "sim_eval.yaml"]),
                                 (navigator, "navigator", ["navigator.yaml", "sim_eval.yaml"])):
        assert command[3:7] == ["--ros-args", "-r", f"__node:={name}", "-r"]
        assert command[7] == "__ns:=/robot1"
        given = [command[i + 1] for i, a in enumerate(command) if a == "--params-file"]
        assert [os.path.basename(f) for f in given] == files
        assert all(os.path.exists(f) for f in given)
    assert "max_steps:=7" in navigator and "max_steps:=7" in bridge
    assert "model:=forward" in navigator and "policy_label:=forward" in bridge
    assert "exit_when_done:=true" in bridge and "autostart:=true" in navigator
    assert "episode_ids:=''" in bridge and "step_timeout:=30.0" in bridge
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    env = sim_eval.node_environment(args)
    assert env["ROS_DOMAIN_ID"] == "42"
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"].endswith("config/fastdds_shm.xml")


def test_a_model_that_cannot_load_fails_clearly(split, tmp_path, capsys):
    code = sim_eval.main(["--model", "constant:NOT_AN_ACTION", "--split",
                          str(split), "--output-dir", str(tmp_path / "out"), "--namespace",
                          "noload", "--width", "32", "--height", "24", "--timeout", "60"])
    assert code == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("janus-vln sim-eval: error: the navigator cannot load model "
                           "'constant:NOT_AN_ACTION': configure failed")
    assert "NOT_AN_ACTION" in line.split("configure failed", 1)[1]  # the navigator's reason


def test_a_bad_split_fails_before_any_node_starts(tmp_path, capsys):
    code = sim_eval.main(["--model", "forward", "--split", str(tmp_path / "missing.json.gz"),
                          "--output-dir", str(tmp_path / "out"), "--namespace", "nosplit",
                          "--timeout", "60"])
    assert code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("janus-vln sim-eval: error: ") and "does not exist" in line
    assert not (tmp_path / "out").exists()
    for bad, says in ((["--width", "0"], "width must be a positive number"),
                      (["--limit", "0"], "limit must be at least 1"),
                      (["--backend", "habitat"], "habitat-sim is not installed")):
        code = sim_eval.main(["--model", "forward", "--split", str(tmp_path / "x.json.gz"),
                              "--output-dir", str(tmp_path / "out"), *bad])
        assert code == 2 and says in capsys.readouterr().err, bad


def test_preflight_checks_the_run_as_eval_does(split, tmp_path):
    """sim-eval's --limit, protocol and camera mean what eval's do: the same run.json."""
    import json

    from sim_bridge.evaluate import plan_run

    args = args_for(split=split, output_dir=tmp_path / "ros", limit=2, protocol="release")
    sim_eval.preflight(args)
    assert (args.width, args.height) == (640, 480)   # a baseline: the default camera
    plan_run(EvalConfig(policy="forward", split=str(split), output_dir=str(tmp_path / "ev"),
                        limit=2, protocol="release")).close()
    ros, ev = (json.loads((tmp_path / d / "run.json").read_text()) for d in ("ros", "ev"))
    assert len(ros["episodes"]) == 2 and ros["episodes"] == ev["episodes"]
    assert ros["fingerprint"] == ev["fingerprint"]
    assert ros["fingerprint"]["force_stop_at"] == 400
    # a second preflight resumes; another protocol is refused in one line
    sim_eval.preflight(args_for(split=split, output_dir=tmp_path / "ros", limit=2,
                                protocol="release"))
    with pytest.raises(sim_eval.SimEvalError, match="protocol: 'release' -> 'vlnce'"):
        sim_eval.preflight(args_for(split=split, output_dir=tmp_path / "ros", limit=2))


def test_parser_requires_model_and_split():
    with pytest.raises(SystemExit):
        sim_eval._parser().parse_args(["--split", "x"])
    assert isinstance(args_for(), argparse.Namespace)
