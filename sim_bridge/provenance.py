"""What produced a run's results: content hashes of episode files and of the policy.

An evaluation run directory records these (``run.json``) so that a resumed run can prove it
continues the same experiment: the same episodes (the content of the episode file and its
``_gt``, not their paths: a copy reached by another path resumes, a regenerated file does not)
and the same policy (a checkpoint's files, hashed; a preset's config; a baseline's name).

Hashing a checkpoint reads every weight file once (sha256 at 1.1 GiB/s from the page cache on a
2-core development machine: about 15 s for the 16 GB full model). A resumed run reuses the
recorded hash when every file has the same size, modification time and
inode as recorded (what ``git`` and ``rsync`` trust); any rewrite of a file hashes it again.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# files of a checkpoint folder that change what the policy does (besides the weight files)
CHECKPOINT_FILES = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json",
    "chat_template.json", "chat_template.jinja", "preprocessor_config.json",
)
# policies that are names, not files (the runner's baselines and the ROS navigator's specs)
NAMED_POLICIES = ("random", "forward", "expert")


class ProvenanceError(ValueError):
    """A file or policy cannot be identified; the one-line message says which and why."""


def content_sha256(path: str | Path) -> str:
    """sha256 of a JSON(.gz) file's content (gunzipped: the gzip header's mtime does not count)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise ProvenanceError(f"{path}: cannot read it ({err})") from None
    return hashlib.sha256(raw).hexdigest()


def file_sha256(path: Path, chunk: int = 8 << 20) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def checkpoint_files(path: Path) -> list[Path]:
    """The files of checkpoint folder ``path`` that decide the policy (weights, config, ...)."""
    if not (path / "config.json").is_file():
        raise ProvenanceError(f"policy {str(path)!r}: not a checkpoint folder (no config.json)")
    from janus_core.checkpoint import CheckpointError, weight_files

    try:
        weights = weight_files(path)
    except CheckpointError as err:
        raise ProvenanceError(f"policy {str(path)!r}: not a checkpoint folder ({err})") from None
    others = [path / name for name in CHECKPOINT_FILES if (path / name).is_file()]
    index = path / "model.safetensors.index.json"
    return sorted(set(weights + others + ([index] if index.is_file() else [])))


def checkpoint_sha256(path: Path, previous: Mapping[str, Any] | None = None) -> tuple[str, dict]:
    """``(sha256, stat record)`` of a checkpoint folder's files (see the module docstring)."""
    files = checkpoint_files(path)
    stats = {f.name: _stat_key(f) for f in files}
    if previous and previous.get("stat") == stats and previous.get("sha256"):
        return str(previous["sha256"]), stats
    total = sum(s[0] for s in stats.values())
    if total > 1 << 30:
        log.info("hashing checkpoint %s (%.1f GB) to tie the results to it", path, total / 2**30)
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}\0{file_sha256(f)}\n".encode())
    return digest.hexdigest(), stats


def policy_identity(spec: str, previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a policy spec is: ``{"kind": ..., ...}``; all keys but ``stat``/``path`` identify it.

    - a checkpoint folder: ``{"kind": "checkpoint", "sha256", "mode", "path", "stat"}``;
    - a preset name or YAML (random weights): ``{"kind": "preset", "name", "config_sha256",
      "mode"}``;
    - a baseline or a navigator spec (``random``, ``expert``, ``expert:ros``, ``constant:...``):
      ``{"kind": "named", "name"}``.

    ``previous`` (the identity recorded by an earlier run) lets an unchanged checkpoint skip the
    hashing. Raises ProvenanceError for a path that does not exist or is not a checkpoint.
    """
    spec = str(spec)
    if spec in NAMED_POLICIES or ":" in spec:
        return {"kind": "named", "name": spec}
    path = Path(spec).expanduser()
    if path.is_dir():
        from janus_core.checkpoint import CheckpointError, config_from_checkpoint

        old = previous if previous and previous.get("kind") == "checkpoint" else None
        sha, stats = checkpoint_sha256(path, old)
        try:
            cfg = config_from_checkpoint(path)
        except (CheckpointError, ValueError) as err:
            raise ProvenanceError(f"policy {spec!r}: {err}") from None
        return {"kind": "checkpoint", "sha256": sha, "mode": cfg.mode,
                "path": str(path.resolve()), "stat": stats}
    if path.exists():
        raise ProvenanceError(f"policy {spec!r} is a file; give a checkpoint folder, a preset name "
                              f"or one of {NAMED_POLICIES}")
    from janus_core.config import ConfigError, load_config

    try:
        cfg = load_config(spec)
    except ConfigError as err:
        if len(path.parts) > 1 or path.suffix:
            raise ProvenanceError(f"policy {spec!r}: no such checkpoint folder") from None
        raise ProvenanceError(f"policy {spec!r} is not a checkpoint folder, a preset or one of "
                              f"{NAMED_POLICIES} ({err})") from None
    text = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    return {"kind": "preset", "name": spec, "mode": cfg.mode,
            "config_sha256": hashlib.sha256(text.encode()).hexdigest()}


def policy_camera(spec: str) -> tuple[int, int, float] | None:
    """``(width, height, hfov_deg)`` of a checkpoint's or preset's frames; None for a named policy.

    Baselines take any size.
    """
    spec = str(spec)
    if spec in NAMED_POLICIES or ":" in spec:
        return None
    path = Path(spec).expanduser()
    if path.is_dir():
        from janus_core.checkpoint import CheckpointError, config_from_checkpoint

        checkpoint_files(path)  # "not a checkpoint folder" for an empty or foreign folder
        try:
            image = config_from_checkpoint(path).image
        except (CheckpointError, ValueError) as err:
            raise ProvenanceError(f"policy {spec!r}: {err}") from None
    else:
        from janus_core.config import ConfigError, load_config

        try:
            image = load_config(spec).image
        except ConfigError:
            return None  # policy_identity reports the bad spec
    return int(image.input_width), int(image.input_height), float(image.hfov_deg)


def compared(identity: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a policy identity that must match on resume (no path, no file stats)."""
    return {k: v for k, v in identity.items() if k not in ("path", "stat")}
