"""``janus-vln`` as a user runs it: every mistake is one line and a non-zero exit, no traceback.

Each case runs the command as a subprocess (``python -m janus_vln_ros.cli``, what the
``janus-vln`` entry point calls) and checks the exit code, the first line of stderr and that no
traceback was printed. Also: every ``--help`` names ``janus-vln <command>`` and offers ``-v``;
Ctrl-C during ``eval`` keeps the finished episodes and exits 130; SIGKILL of ``record`` leaves no
process behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from janus_vln_ros import cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A generated split, a corrupt episode file, an empty folder and a plain file."""
    from sim_bridge.generate import GenerateConfig, generate_dataset

    root = tmp_path_factory.mktemp("cli")
    split = generate_dataset(root / "data", GenerateConfig(
        splits={"val_unseen": 3}, seed=3, episodes_per_scene=3, min_geodesic=2.0,
        max_geodesic=4.0, mean_geodesic=3.0))["val_unseen"]
    corrupt = root / "corrupt.json.gz"
    corrupt.write_bytes(split.read_bytes()[:40])
    empty = root / "empty"
    empty.mkdir()
    afile = root / "afile.txt"
    afile.write_text("not a folder\n")
    return {"split": split, "corrupt": corrupt, "empty": empty, "file": afile, "root": root,
            "data": root / "data"}


def janus_vln(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "janus_vln_ros.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=env)


def check_one_line(result: subprocess.CompletedProcess, command: str, says: str,
                   code: int = 2) -> None:
    err = result.stderr
    assert "Traceback" not in err and "Traceback" not in result.stdout, err
    lines = err.splitlines()
    assert lines, f"nothing on stderr (exit {result.returncode})"
    assert lines[0].startswith(f"janus-vln {command}: error: "), err
    assert says in lines[0], err
    assert result.returncode == code, err


# (id, command line with {placeholders} from the data fixture, command, text of the first line);
# train imports transformers' Trainer (about 10 s): slow here, in-process in test_sft.py
SLOW = ("train-unknown-set", "train-set-not-a-number")
MISTAKES = [
    ("eval-habitat-without-habitat-sim",
     "eval --backend habitat --policy expert --split {split} --output-dir {root}/o1", "eval",
     "habitat-sim is not installed"),
    ("eval-release-config-without-habitat-sim",
     "eval --config config/eval_r2r.yaml --policy expert --split {split} --output-dir {root}/o2",
     "eval", "habitat-sim is not installed"),
    ("eval-without-policy", "eval --split {split} --output-dir {root}/o3", "eval",
     "no policy: give --policy"),
    ("eval-width-0", "eval --policy random --split {split} --width 0 --output-dir {root}/o4",
     "eval", "width must be a positive number of pixels, got 0"),
    ("eval-split-is-a-directory", "eval --policy random --split {data} --output-dir {root}/o5",
     "eval", "is a directory; give an episode file"),
    ("eval-corrupt-split", "eval --policy random --split {corrupt} --output-dir {root}/o6",
     "eval", "corrupt"),
    ("eval-empty-folder-as-policy",
     "eval --policy {empty} --split {split} --output-dir {root}/o7", "eval",
     "not a checkpoint folder"),
    ("eval-output-dir-is-a-file", "eval --policy random --split {split} --output-dir {file}",
     "eval", "is a file"),
    ("eval-limit-0", "eval --policy random --split {split} --limit 0 --output-dir {root}/o8",
     "eval", "limit must be at least 1"),
    ("eval-bad-set", "eval --policy random --split {split} --set max_step=3", "eval",
     "--set max_step=3: unknown setting 'max_step'"),
    ("eval-forced-stop-under-vlnce",
     "eval --policy random --split {split} --force-stop-at 400 --output-dir {root}/o9", "eval",
     "contradicts protocol vlnce"),
    ("merge-nothing", "merge --output-dir {root}/nothing", "merge", "no results files"),
    ("demo-corrupt-split", "demo --model expert --split {corrupt} --out {root}/d1", "demo",
     "--split"),
    ("demo-split-is-a-directory", "demo --model expert --split {data} --out {root}/d2", "demo",
     "is a directory"),
    ("demo-empty-model-folder", "demo --model {empty} --split {split} --out {root}/d3", "demo",
     "not a checkpoint folder"),
    ("demo-max-steps-0", "demo --model expert --split {split} --max-steps 0 --out {root}/d4",
     "demo", "--max-steps must be at least 1, got 0"),
    ("demo-out-is-a-file", "demo --model expert --split {split} --out {file}", "demo",
     "is a file"),
    ("replay-empty-model-folder", "replay {root}/nobag --model {empty}", "replay",
     "not a checkpoint folder"),
    ("replay-expert", "replay {root}/nobag --model expert", "replay",
     "model 'expert' needs a simulator"),
    ("generate-out-is-a-file", "generate --out {file} --splits val_unseen:1", "generate",
     "is a file"),
    ("generate-over-an-existing-split", "generate --out {data} --splits val_unseen:1",
     "generate", "exists; add --force"),
    ("train-unknown-set", "train --set learning_rat=1e-5", "train",
     "--set learning_rat=1e-5: unknown setting 'learning_rat'"),
    ("train-set-not-a-number", "train --set max_grad_norm=big", "train",
     "--set max_grad_norm=big: max_grad_norm: expected a number"),
    ("collect-split-is-a-directory",
     "collect --split {data} --output-dir {root}/c1 --no-progress", "collect",
     "is a directory"),
    ("eval-width-not-a-number", "eval --policy random --width abc", "eval",
     "argument --width: invalid int value: 'abc' (see janus-vln eval --help)"),
    ("sim-eval-without-arguments", "sim-eval", "sim-eval",
     "the following arguments are required: --model, --split"),
    ("demo-unknown-flag", "demo --width 320", "demo", "unrecognized arguments: --width 320"),
    ("sim-eval-width-0",
     "sim-eval --model forward --split {split} --width 0 --output-dir {root}/s1", "sim-eval",
     "width must be a positive number of pixels"),
]


@pytest.mark.parametrize("line,command,says", [
    pytest.param(*m[1:], id=m[0], marks=[pytest.mark.slow] if m[0] in SLOW else [])
    for m in MISTAKES])
def test_a_mistake_is_one_line(data, line, command, says):
    args = [a.format(**{k: str(v) for k, v in data.items()}) for a in line.split()]
    check_one_line(janus_vln(*args), command, says)
    for flag, value in zip(args, args[1:]):  # nothing was created where it would have written
        if flag in ("--output-dir", "--out") and value not in (str(data["file"]),
                                                                str(data["data"])):
            assert not Path(value).exists(), value


def test_help_names_the_command_and_offers_verbose(capsys):
    for name in cli.COMMANDS:
        with pytest.raises(SystemExit) as exit_:
            cli.main([name, "--help"])
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        assert text.startswith(f"usage: janus-vln {name} "), (name, text[:80])
        assert "-v, --verbose" in text, name
    assert cli.main([]) == 0 and "merge" in capsys.readouterr().out


def test_a_bug_is_reported_in_one_line(monkeypatch, capsys):
    """An exception no subcommand expected: one line naming it and where the traceback went."""
    import sim_bridge.render_scene as render

    def broken(argv):
        raise RuntimeError("boom")

    monkeypatch.setattr(render, "main", broken)
    assert cli.main(["render", "--out", "x"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("janus-vln render: error: unexpected RuntimeError: boom (details in ")
    path = Path(line.rsplit("details in ", 1)[1].rstrip(")"))
    assert "Traceback" in path.read_text()
    path.unlink()


def test_ctrl_c_during_eval_keeps_the_finished_episodes(data):
    out = data["root"] / "interrupted"
    shard = out / "results" / "shard-000-of-001.jsonl"
    args = ["eval", "--policy", "expert", "--split", str(data["split"]), "--output-dir",
            str(out), "--no-progress", "--set", "sim.furniture=shapes"]
    proc = subprocess.Popen([sys.executable, "-m", "janus_vln_ros.cli", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 90
        while not (shard.exists() and shard.read_bytes().count(b"\n") >= 1):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("janus-vln eval: interrupted: ") and "of 3 episodes finished" in last
    assert "rerun the same command to resume" in last
    assert (out / "metrics.json").exists()                  # partial metrics written
    again = janus_vln(*args)
    assert again.returncode == 0, again.stderr
    assert "3 of 3 episodes scored" in again.stdout


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry.name))
    return out


def test_sigkill_of_record_leaves_no_process_behind(tmp_path):
    pytest.importorskip("rclpy")
    bag = tmp_path / "bag"
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    proc = subprocess.Popen([sys.executable, "-m", "janus_vln_ros.cli", "record", str(bag),
                             "--namespace", "nobody"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while not bag.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(0.5)
        children = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert children == []  # record runs in one process: nothing can outlive it
    # and the half-written bag is refused by name, so nothing is appended to it
    check_one_line(janus_vln("record", str(bag)), "record", "already exists")
