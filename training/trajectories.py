r"""Trajectories as the model sees them: resized frames and per-frame labels, on local disk.

The small-model recipe (:mod:`training.recipe`) keeps its training data in this compact form
instead of the JPEG annotation layout (:mod:`training.annotations`): frames are stored already
resized to the model's input size (``processor.preprocess_frame`` of the rendered camera frame,
byte for byte what the policy computes at inference), so training never decodes or resizes, and
no JPEG artefacts separate training from inference. :func:`export_annotations` writes a store
out in the annotation layout for the HF-Trainer SFT (:mod:`training.sft`) or the release's code.

Layout of a store directory (several writer processes append side by side)::

    store.json                 {"height": H, "width": W}
    <tag>-w<k>.u8              raw uint8 frames [n, H, W, 3], appended by writer k
    <tag>-w<k>.jsonl           one record per trajectory: name, instruction, labels (one action
                               id per frame), file, offset (frames), length, source, extras

``labels[i]`` is the action to take at frame ``i`` (expert data: the expert's action, the last
one STOP; DAgger: the expert's correction, or the executed action, per the recipe's setting).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from janus_core.actions import Action

META = "store.json"


class StoreError(ValueError):
    """A trajectory store is missing or inconsistent; the message names the file."""


@dataclasses.dataclass
class TrajectoryRecord:
    """One trajectory of a store: where its frames are and what to learn from them."""

    name: str
    instruction: str
    labels: list[int]
    file: str
    offset: int
    length: int
    source: str = "expert"
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON line of this record."""
        return {"name": self.name, "instruction": self.instruction, "labels": self.labels,
                "file": self.file, "offset": self.offset, "length": self.length,
                "source": self.source, **self.extra}

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> TrajectoryRecord:
        """Parse one JSON line; errors name ``where`` and the field."""
        keys = ("name", "instruction", "labels", "file", "offset", "length")
        missing = [k for k in keys if k not in data]
        if missing:
            raise StoreError(f"{where}: missing fields {missing}")
        labels = [int(a) for a in data["labels"]]
        if len(labels) != int(data["length"]) or not labels:
            raise StoreError(f"{where}: {len(labels)} labels for {data['length']} frames")
        bad = [a for a in labels if a not in Action._value2member_map_]
        if bad:
            raise StoreError(f"{where}: unknown action ids {bad[:5]} in labels")
        extra = {k: v for k, v in data.items() if k not in (*keys, "source")}
        return cls(name=str(data["name"]), instruction=str(data["instruction"]), labels=labels,
                   file=str(data["file"]), offset=int(data["offset"]),
                   length=int(data["length"]), source=str(data.get("source", "expert")),
                   extra=extra)


class StoreWriter:
    """Appends trajectories to ``<root>/<tag>-w<k>.{u8,jsonl}`` (one writer per process)."""

    def __init__(self, root: str | Path, tag: str, writer: int, height: int, width: int):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        write_meta(self.root, height, width)
        self.shape = (height, width, 3)
        self.frames_name = f"{tag}-w{writer}.u8"
        self.frames_path = self.root / self.frames_name
        self.records_path = self.root / f"{tag}-w{writer}.jsonl"
        size = self.frames_path.stat().st_size if self.frames_path.exists() else 0
        frame_bytes = int(np.prod(self.shape))
        if size % frame_bytes:
            raise StoreError(f"{self.frames_path}: size {size} is not a whole number of frames")
        self.count = size // frame_bytes

    def add(self, name: str, instruction: str, frames: Sequence[np.ndarray],
            labels: Sequence[int], source: str = "expert", **extra: Any) -> TrajectoryRecord:
        """Append one trajectory (frames first, then its record line); return the record."""
        if len(frames) != len(labels) or not frames:
            raise StoreError(f"{name}: {len(frames)} frames but {len(labels)} labels")
        for f in frames:
            if f.shape != self.shape or f.dtype != np.uint8:
                raise StoreError(f"{name}: frame {f.shape} {f.dtype}, expected {self.shape} uint8")
        with open(self.frames_path, "ab") as fh:
            for f in frames:
                fh.write(np.ascontiguousarray(f).tobytes())
        rec = TrajectoryRecord(name=name, instruction=instruction,
                               labels=[int(a) for a in labels], file=self.frames_name,
                               offset=self.count, length=len(frames), source=source, extra=extra)
        self.count += len(frames)
        with open(self.records_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec.to_json()) + "\n")
        return rec


def write_meta(root: Path, height: int, width: int) -> None:
    """Write (or check) ``store.json``: every frame of a store has one size."""
    path = root / META
    if path.exists():
        meta = json.loads(path.read_text())
        if (meta.get("height"), meta.get("width")) != (height, width):
            raise StoreError(f"{path}: frames are {meta.get('width')}x{meta.get('height')}, "
                             f"cannot add {width}x{height}")
        return
    tmp = path.with_name(f".{META}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"height": height, "width": width}) + "\n")
    tmp.replace(path)


class TrajectoryStore:
    """Read side of a store directory: every record, and frames through memory maps."""

    def __init__(self, root: str | Path, tags: Iterable[str] | None = None):
        self.root = Path(root)
        meta_path = self.root / META
        if not meta_path.exists():
            raise StoreError(f"{self.root} is not a trajectory store (no {META})")
        meta = json.loads(meta_path.read_text())
        self.height, self.width = int(meta["height"]), int(meta["width"])
        wanted = None if tags is None else set(tags)
        self.records: list[TrajectoryRecord] = []
        for path in sorted(self.root.glob("*.jsonl")):
            tag = path.stem.rsplit("-w", 1)[0]
            if wanted is not None and tag not in wanted:
                continue
            for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as err:
                    raise StoreError(f"{path}:{lineno}: not JSON ({err})") from err
                self.records.append(TrajectoryRecord.from_json(data, f"{path}:{lineno}"))
        self._maps: dict[str, np.memmap] = {}

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_frames(self) -> int:
        """Frames over all records."""
        return sum(r.length for r in self.records)

    def frames(self, record: TrajectoryRecord) -> np.ndarray:
        """``[length, H, W, 3]`` uint8 (a read-only memory map view)."""
        if record.file not in self._maps:
            path = self.root / record.file
            if not path.exists():
                raise StoreError(f"{path}: frame file of {record.name} does not exist")
            frame_bytes = self.height * self.width * 3
            n = path.stat().st_size // frame_bytes
            self._maps[record.file] = np.memmap(path, dtype=np.uint8, mode="r",
                                                shape=(n, self.height, self.width, 3))
        data = self._maps[record.file]
        if record.offset + record.length > len(data):
            raise StoreError(f"{self.root / record.file}: {record.name} needs frames "
                             f"{record.offset}..{record.offset + record.length - 1}, file has "
                             f"{len(data)}")
        return data[record.offset : record.offset + record.length]


def export_annotations(store: TrajectoryStore, out: str | Path, jpeg_quality: int = 95) -> int:
    """Write ``store`` in the JanusVLN annotation layout (resized frames as JPEG); returns count.

    ``actions`` is rebuilt so that :func:`training.annotations.frame_labels` gives back the
    stored labels: ``actions[i + 1] = labels[i]`` (the last label must be STOP, as the layout
    implies; trajectories that end otherwise are skipped and counted in the return value's log).
    """
    from training.annotations import TrajectoryWriter

    writer = TrajectoryWriter(out, rank=0, jpeg_quality=jpeg_quality)
    count = 0
    for rec in store.records:
        if rec.labels[-1] != int(Action.STOP):
            continue
        recorder = writer.begin(rec.name)
        for frame in store.frames(rec):
            recorder.add_frame(np.asarray(frame))
        recorder.finish([rec.instruction], [-1] + rec.labels[:-1], source=rec.source)
        count += 1
    writer.merge()
    return count
