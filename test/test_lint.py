"""Lint as tests, the ROS way: ``colcon test`` fails on style or missing docstrings."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def ruff(*args):
    exe = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(exe).exists():
        pytest.fail("ruff is not installed: run the README set-up command")
    return subprocess.run([exe, *args], cwd=REPO, capture_output=True, text=True)


def findings(docstrings: bool):
    """Ruff findings (rules from ruff.toml), split into docstring rules (D) and the rest."""
    result = ruff("check", "--output-format", "concise", "--no-fix", ".")
    assert result.returncode in (0, 1), result.stderr
    rows = [line for line in result.stdout.splitlines() if ": " in line and line[0] != " "]
    return [row for row in rows if (row.split(": ", 1)[1].startswith("D")) == docstrings]


def test_ruff_style():
    bad = findings(docstrings=False)
    assert not bad, "\n".join(bad)


def test_docstrings():
    bad = findings(docstrings=True)
    assert not bad, "\n".join(bad)


def test_no_build_outputs_tracked():
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if files.returncode != 0:
        pytest.skip("not a git checkout")
    bad = [f for f in files.stdout.splitlines()
           if any(part in f for part in ("__pycache__/", ".egg-info/", "build/", "install/"))
           or f.endswith(".pyc")]
    assert not bad, f"generated files are tracked: {bad}"


def test_rclpy_only_under_janus_vln_ros():
    offenders = []
    for root in ("janus_core", "sim_bridge", "training"):
        for path in (REPO / root).rglob("*.py"):
            text = path.read_text()
            if "import rclpy" in text or "from rclpy" in text:
                offenders.append(str(path.relative_to(REPO)))
    assert not offenders, f"rclpy imported outside janus_vln_ros/: {offenders}"
