"""Kill a real training process after a checkpoint, then resume it: it continues from there."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from training.sft import last_complete_checkpoint

REPO = Path(__file__).resolve().parents[2]


def train_cmd(data, out, max_steps):
    return [sys.executable, "-m", "training.sft", "--config", "config/train_tiny.yaml",
            "--data", str(data), "--output-dir", str(out), "--max-steps", str(max_steps),
            "--set", "save_steps=3", "--set", "save_total_limit=null",
            "--set", "logging_steps=1", "--set", "per_device_train_batch_size=1"]


@pytest.mark.slow  # two fresh interpreters (~20 s of imports on a busy 2-core box)
def test_killed_run_resumes_from_last_complete_checkpoint(tiny_set, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(train_cmd(tiny_set.root, out, 16), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint-3" / "trainer_state.json").exists():
            assert proc.poll() is None, "training ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    last = last_complete_checkpoint(out)
    step = int(Path(last).name.split("-")[1])
    assert 3 <= step < 16
    # a checkpoint torn by the kill (weights written, no trainer state) is skipped
    torn = out / f"checkpoint-{step + 3}"
    if not (torn / "trainer_state.json").exists():
        torn.mkdir(exist_ok=True)
        (torn / "config.json").write_text("{}")
    resumed = subprocess.run(train_cmd(tiny_set.root, out, 16), cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    logged = re.findall(r"\{'loss': ", resumed.stdout + resumed.stderr)
    assert len(logged) == 16 - step  # only the steps after the checkpoint were trained
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 16
