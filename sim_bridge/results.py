"""Append-only JSONL results files: one complete line per finished episode.

The evaluation runner appends a record after every episode and makes it durable at once
(``flush`` + ``os.fsync``), so a crash or a SIGKILL loses at most the episode in flight. A write
cut short by a kill leaves a last line without its newline (or with broken JSON): the owner of the
file repairs it on open by cutting the file back to the end of the last complete record; readers
of other shards' files just ignore it. Anything broken *before* the last line is real corruption
and raises :class:`ResultsError` naming the file and line.

Records are JSON objects with at least ``scene_id``, ``episode_id`` and ``status`` (``"ok"`` or
``"error"``). Within a file the last record of an episode wins (a retried error is replaced by
its new result); across files an ``ok`` record beats an ``error`` one.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RESULTS_DIR = "results"
SHARD_GLOB = "shard-*-of-*.jsonl"


class ResultsError(RuntimeError):
    """A results file is corrupt (not just cut short at its end)."""


def record_key(record: Mapping[str, Any]) -> tuple[str, str]:
    """``(scene_id, episode_id)`` of a record, as strings."""
    return (str(record["scene_id"]), str(record["episode_id"]))


def shard_file_name(shard: int, num_shards: int) -> str:
    """File name of one shard's results, e.g. ``shard-000-of-002.jsonl``."""
    return f"shard-{shard:03d}-of-{num_shards:03d}.jsonl"


def _scan(path: Path) -> tuple[list[dict[str, Any]], int, int]:
    """Parse ``path``: (records, byte offset of the end of the last good line, file size)."""
    records: list[dict[str, Any]] = []
    data = path.read_bytes()
    good_end = 0
    pos = 0
    lineno = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        lineno += 1
        last = nl == -1
        chunk = data[pos:] if last else data[pos:nl]
        end = len(data) if last else nl + 1
        if not chunk.strip():
            if not last:
                good_end = end
            pos = end
            continue
        try:
            record = json.loads(chunk.decode("utf-8"))
            if not isinstance(record, dict) or "scene_id" not in record or (
                "episode_id" not in record
            ):
                raise ValueError("not a record object with scene_id and episode_id")
        except (ValueError, UnicodeDecodeError) as err:
            tail = data[end:].strip()
            if last or not tail:
                # the final line is damaged: an append cut short (e.g. SIGKILL)
                return records, good_end, len(data)
            raise ResultsError(f"{path}: line {lineno} is not a valid record ({err})") from err
        if last:
            # complete JSON but no newline: treat as cut short, it was never acknowledged
            return records, good_end, len(data)
        records.append(record)
        good_end = end
        pos = end
    return records, good_end, len(data)


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """All complete records of a results file, in file order (a damaged last line is ignored)."""
    path = Path(path)
    if not path.exists():
        return []
    records, _, _ = _scan(path)
    return records


def latest_by_key(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """One record per episode: the last one in order, except that ``ok`` beats ``error``."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        key = record_key(record)
        old = out.get(key)
        if old is not None and old.get("status") == "ok" and record.get("status") != "ok":
            continue
        out[key] = dict(record)
    return out


class ResultsFile:
    """One shard's append-only results file, opened by the process that owns it.

    Opening repairs a damaged last line (logging what was cut). :meth:`append` writes one record
    as one line and fsyncs before it returns; it refuses a second ``ok`` record for an episode.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._records: dict[tuple[str, str], dict[str, Any]] = {}
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self._lock()
        try:
            records, good_end, size = _scan(self.path)
        except ResultsError:
            self.close()
            raise
        if good_end < size:
            log.warning(
                "%s: cutting a damaged last line (%d bytes) left by an interrupted write",
                self.path, size - good_end,
            )
            os.truncate(self.path, good_end)  # appends (O_APPEND) continue at the new end
            os.fsync(self._fh.fileno())
        self._records = latest_by_key(records)

    def _lock(self) -> None:
        """Refuse a second writer: an exclusive flock, released when the process dies."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no protection against two writers
            return
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise ResultsError(
                f"{self.path}: another process is writing this results file (two runs of the "
                "same shard at once?)"
            ) from None

    @property
    def records(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Finished episodes of this file, keyed by ``(scene_id, episode_id)``."""
        return dict(self._records)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._records

    def append(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` as one line and make it durable (flush + fsync) before returning."""
        key = record_key(record)
        old = self._records.get(key)
        if old is not None and old.get("status") == "ok":
            raise ResultsError(f"{self.path}: episode {key} already has a result; not appending")
        line = json.dumps(record, separators=(",", ":"), allow_nan=True)
        if "\n" in line:
            raise ResultsError("a record must serialise to a single line")
        self._fh.write(line + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._records[key] = dict(record)

    def close(self) -> None:
        """Close the file handle."""
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def shard_files(output_dir: str | Path) -> list[Path]:
    """All shard results files under ``output_dir/results``, sorted by name."""
    return sorted((Path(output_dir) / RESULTS_DIR).glob(SHARD_GLOB))


def iter_all_records(output_dir: str | Path) -> Iterator[dict[str, Any]]:
    """Every complete record of every shard file of a run directory."""
    for path in shard_files(output_dir):
        yield from read_records(path)


def collect(output_dir: str | Path) -> dict[tuple[str, str], dict[str, Any]]:
    """One record per episode over all shard files of a run directory."""
    return latest_by_key(iter_all_records(output_dir))
