"""``janus-vln instruct`` against a real navigator process: every instruction arrives.

``ros2 topic pub --once -w 0`` delivered 1 of 6 instructions (it publishes before the match and
exits); the command waits for the match and for the navigator's acknowledgement, so six in a
row all arrive, in order, each one a new episode. Without a navigator it fails in one line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest
from nav_harness import NavigatorUnderTest
from ros_harness import REPO, RosHarness, wait_until

from janus_vln_ros import cli


@pytest.fixture(scope="module")
def harness():
    h = RosHarness("instruct_test")
    yield h
    h.close()


def janus_vln() -> list[str]:
    exe = shutil.which("janus-vln", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "janus_vln_ros.cli"]


def test_six_instructions_in_a_row_all_arrive(harness, capsys):
    nav = NavigatorUnderTest(harness, "nav_instr", {"model": "constant:STOP"})
    try:
        # before configure: the navigator already takes (and acknowledges) the instruction
        run = subprocess.run(
            janus_vln() + ["instruct", "--namespace", "/nav_instr", "go to the hall"],
            capture_output=True, text=True, timeout=60, cwd=REPO,
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.startswith("/nav_instr/navigator: episode 1: 'go to the hall'")
        assert "state unconfigured" in run.stdout
        assert nav.transition("configure") and nav.transition("activate")
        texts = [f"instruction number {i}" for i in range(2, 7)]
        for text in texts:
            assert cli.main(["instruct", "--namespace", "nav_instr", text]) == 0
            out = capsys.readouterr().out
            assert f"'{text}'" in out and "state" not in out  # active: no remark
        # `instruct` returns once its own subscription saw the acknowledgement; the harness's
        # status subscription may get that message a moment later
        wanted = {"go to the hall", *texts}
        wait_until(lambda: wanted <= {s.instruction for s in nav.statuses()}, 5.0)
        got = [s.instruction for s in nav.statuses()]
        for text in wanted:
            assert text in got, got
        assert wait_until(lambda: nav.statuses()[-1].instruction == texts[-1], 3.0)
        episodes = sorted({s.episode for s in nav.statuses() if s.instruction in texts})
        assert len(episodes) == len(texts)  # each one a new episode
    finally:
        nav.close()


def test_no_navigator_fails_in_one_line(capsys):
    start = time.monotonic()
    code = cli.main(["instruct", "--namespace", "/nobody_here", "--timeout", "1.5", "go"])
    err = capsys.readouterr().err
    assert code == 1 and time.monotonic() - start < 10.0
    assert err.count("\n") == 1
    assert err.startswith(
        "janus-vln instruct: error: no navigator subscribes to /nobody_here/instruction")
    assert cli.main(["instruct", "  "]) == 2
    assert "instruction is empty" in capsys.readouterr().err
