"""Stand-ins for Slurm (``srun``, ``scontrol`` and its variables) to run the sbatch scripts here."""

import os
import socket
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def fake_slurm(tmp_path, nodes=1):
    """``srun`` / ``scontrol`` stand-ins and the variables Slurm sets, for one local node."""
    bin_dir = tmp_path / "slurm_bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "srun").write_text(  # drop srun's own options, run the command once (one node)
        '#!/usr/bin/env bash\nwhile [[ $# -gt 0 && $1 == -* ]]; do shift; done\nexec "$@"\n')
    (bin_dir / "scontrol").write_text("#!/usr/bin/env bash\necho localhost\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "VENV": str(Path(sys.executable).parent.parent), "SLURM_JOB_ID": "4242",
            "SLURM_NNODES": str(nodes), "SLURM_JOB_NODELIST": "localhost",
            "SLURM_SUBMIT_DIR": str(REPO), "SLURM_CPUS_PER_TASK": "2", "GPUS_PER_NODE": "2",
            "MASTER_PORT": str(port)}
