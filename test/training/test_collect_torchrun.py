"""Collection under torchrun with two ranks: each rolls its share, rank 0 merges after a barrier."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from sim_bridge.generate import main as generate_main
from training.annotations import load_annotations

REPO = Path(__file__).resolve().parents[2]


def test_two_rank_collection(tmp_path):
    assert generate_main(["--out", str(tmp_path / "eps"), "--splits", "train:3", "--seed", "5",
                          "--min-geodesic", "3", "--max-geodesic", "5"]) == 0
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    out = tmp_path / "out"
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", "-m", "training.collect",
         "--config", "config/collect_tiny.yaml", "--split",
         str(tmp_path / "eps/train/train.json.gz"), "--output-dir", str(out), "--no-progress"],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "annotations.rank0.jsonl").exists() and (out / "annotations.rank1.jsonl").exists()
    aset = load_annotations(out)
    assert len(aset) == 3 and [t.id for t in aset.trajectories] == [0, 1, 2]
