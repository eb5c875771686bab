"""Shared helpers for benchmark scripts: machine description and dated markdown results."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """One line describing this machine: CPU count, OS, Python, torch and GPU when present."""
    parts = [
        f"{os.cpu_count()} CPU cores",
        platform.platform(terse=True),
        f"Python {sys.version.split()[0]}",
    ]
    try:
        import torch

        parts.append(f"torch {torch.__version__}")
        if torch.cuda.is_available():
            parts.append(f"GPU {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})")
    except ImportError:
        pass
    return ", ".join(parts)


def command() -> str:
    """The command line that ran this benchmark."""
    return "python -m " + (sys.modules["__main__"].__spec__.name if sys.modules["__main__"].__spec__
                          else sys.argv[0]) + " " + shlex.join(sys.argv[1:])


def write_result(name: str, title: str, table: str, notes: str = "", append: bool = True) -> Path:
    """Append (or write) a dated markdown section with machine, command and ``table``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = f"## {title} ({stamp})\n\n- Machine: {machine()}\n- Command: `{command().strip()}`"
    section = f"{header}\n\n{table.rstrip()}\n\n{notes.rstrip()}".rstrip() + "\n\n"
    if append and path.exists():
        path.write_text(path.read_text() + section)
    else:
        path.write_text(f"# {name}\n\n" + section)
    return path


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
