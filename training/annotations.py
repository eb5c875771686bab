"""Trajectory annotations in the StreamVLN / JanusVLN ``annotations.json`` layout.

One annotation directory (a *set*) looks like the release's ScaleVLN and DAgger data::

    <root>/annotations.json              [{id, video, instructions, actions}, ...]
    <root>/images/<name>/rgb/000.jpg     frame 0 of trajectory <name>
    <root>/images/<name>/rgb/001.jpg     ...

Each record is ``{"id": int, "video": "images/<name>", "instructions": [str, ...],
"actions": [-1, a1, a2, ...]}`` with habitat action ids (0 STOP, 1 MOVE_FORWARD, 2 TURN_LEFT,
3 TURN_RIGHT). ``actions[k]`` (k >= 1) is the action that led *to* frame k, so a trajectory has
``len(actions)`` frames, and the training label of frame i is ``actions[i + 1]``; the last frame is
labelled STOP (:func:`frame_labels`). Only ``instructions[0]`` is used for training, as in the
release. Records may carry more keys (``scene_id``, ``episode_id``, ``source``...); they are kept.

Writers (expert collection, DAgger) never touch ``annotations.json`` while they run: each rank
appends one JSON line per finished trajectory to ``annotations.rank<r>.jsonl`` after its frames are
on disk, which makes collection resumable, and :func:`merge_shards` folds those lines into
``annotations.json``.

Every problem in a file is an :class:`AnnotationError` naming the file, the trajectory and the field
or frame that is wrong.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from janus_core.actions import Action

log = logging.getLogger(__name__)

ANNOTATIONS_FILE = "annotations.json"
IMAGES_DIR = "images"
RGB_DIR = "rgb"
SHARD_GLOB = "annotations.rank*.jsonl"
NO_ACTION = -1  # actions[0]: no action led to the first frame

_RECORD_KEYS = ("id", "video", "instructions", "actions")
_NAME_OK = re.compile(r"[^A-Za-z0-9_.-]+")


class AnnotationError(ValueError):
    """An annotation file, record or frame is wrong; the message names which and why."""


def frame_name(step: int) -> str:
    """File name of frame ``step``: zero-padded to 3 digits, as the release writes them."""
    return f"{int(step):03d}.jpg"


def frame_labels(actions: Sequence[int]) -> list[Action]:
    """Training label of every frame: frame i gets ``actions[i + 1]``, the last frame STOP."""
    return [Action(int(a)) for a in actions[1:]] + [Action.STOP]


def actions_from_executed(executed: Sequence[int]) -> list[int]:
    """The ``actions`` field for a rollout whose per-frame executed actions were ``executed``.

    ``executed[i]`` is the action taken from frame i; the final one (normally STOP) is implied by
    the format, so ``[-1] + executed[:-1]`` round-trips through :func:`frame_labels` whenever the
    last executed action is STOP.
    """
    if not executed:
        raise ValueError("a trajectory needs at least one frame")
    return [NO_ACTION] + [int(Action(int(a))) for a in executed[:-1]]


def trajectory_name(scene_id: str, dataset: str, episode_id: str | int) -> str:
    """The release's trajectory name ``{scene}_{dataset}_{episode:06d}`` (file-name safe)."""
    scene = Path(str(scene_id)).name.rsplit(":", 1)[-1]  # "embedded:apt_00001" -> apt_00001
    for suffix in (".basis.glb", ".glb", ".json", ".ply"):
        if scene.endswith(suffix):
            scene = scene[: -len(suffix)]
            break
    eid = str(episode_id)
    eid = f"{int(eid):06d}" if eid.isdigit() else eid
    return _NAME_OK.sub("-", f"{scene}_{dataset}_{eid}")


@dataclasses.dataclass
class Trajectory:
    """One annotation record."""

    id: int | str
    video: str
    instructions: list[str]
    actions: list[int]
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        """The trajectory's directory name (last part of ``video``)."""
        return Path(self.video).name

    @property
    def num_frames(self) -> int:
        """Frames on disk for this trajectory (= ``len(actions)``)."""
        return len(self.actions)

    @property
    def instruction(self) -> str:
        """The instruction used for training (the first one, as in the release)."""
        return self.instructions[0]

    def labels(self) -> list[Action]:
        """Per-frame training labels (see :func:`frame_labels`)."""
        return frame_labels(self.actions)

    def frame_dir(self, root: str | Path) -> Path:
        """Directory holding this trajectory's frames under annotation root ``root``."""
        return Path(root) / self.video / RGB_DIR

    def frame_path(self, root: str | Path, step: int) -> Path:
        """Path of frame ``step`` under annotation root ``root``."""
        return self.frame_dir(root) / frame_name(step)

    def to_json(self) -> dict[str, Any]:
        """The record as written to ``annotations.json``."""
        out: dict[str, Any] = {
            "id": self.id,
            "video": self.video,
            "instructions": list(self.instructions),
            "actions": [int(a) for a in self.actions],
        }
        out.update(self.extra)
        return out


def _where(path: Path | str | None, index: int | None, data: Any = None) -> str:
    where = str(path) if path is not None else "<annotations>"
    if index is not None:
        where += f": record #{index}"
        if isinstance(data, dict):
            if "id" in data:
                where += f" (id {data['id']!r}"
                where += f", video {data['video']!r})" if "video" in data else ")"
            elif "video" in data:
                where += f" (video {data['video']!r})"
    return where


def trajectory_from_json(data: Any, path: Path | str | None = None, index: int = 0) -> Trajectory:
    """Validate one record and build a :class:`Trajectory`; errors name file, record and field."""
    where = _where(path, index, data)
    if not isinstance(data, dict):
        raise AnnotationError(f"{where}: expected an object, got {type(data).__name__}")
    for key in _RECORD_KEYS:
        if key not in data:
            raise AnnotationError(f"{where}: field {key!r}: missing")
    rid = data["id"]
    if isinstance(rid, bool) or not isinstance(rid, (int, str)):
        raise AnnotationError(f"{where}: field 'id': expected an integer or string, got {rid!r}")
    video = data["video"]
    if not isinstance(video, str) or not video.strip():
        raise AnnotationError(f"{where}: field 'video': expected 'images/<name>', got {video!r}")
    vpath = Path(video)
    if vpath.is_absolute() or ".." in vpath.parts:
        raise AnnotationError(
            f"{where}: field 'video': {video!r} must be relative to the annotation directory "
            "(e.g. 'images/<name>')"
        )
    instructions = data["instructions"]
    if isinstance(instructions, str):
        raise AnnotationError(
            f"{where}: field 'instructions': expected a list of strings, got a bare string"
        )
    if (
        not isinstance(instructions, list)
        or not instructions
        or not all(isinstance(s, str) and s.strip() for s in instructions)
    ):
        raise AnnotationError(
            f"{where}: field 'instructions': expected a non-empty list of non-empty strings, "
            f"got {instructions!r}"
        )
    actions = data["actions"]
    if not isinstance(actions, list) or not actions:
        raise AnnotationError(
            f"{where}: field 'actions': expected a non-empty list [-1, a1, ...], got {actions!r}"
        )
    known = ", ".join(f"{int(a)} ({a.name})" for a in Action)
    for k, a in enumerate(actions):
        if k == 0:
            if a != NO_ACTION or isinstance(a, bool):
                raise AnnotationError(
                    f"{where}: field 'actions[0]': expected -1 (no action before the first "
                    f"frame), got {a!r}"
                )
            continue
        if isinstance(a, bool) or not isinstance(a, int) or a not in Action._value2member_map_:
            raise AnnotationError(
                f"{where}: field 'actions[{k}]': unknown action {a!r}; expected one of {known}"
            )
    extra = {k: v for k, v in data.items() if k not in _RECORD_KEYS}
    return Trajectory(id=rid, video=video, instructions=list(instructions),
                      actions=list(actions), extra=extra)


@dataclasses.dataclass
class AnnotationSet:
    """The trajectories of one annotation directory, with frame paths resolved against ``root``."""

    root: Path
    trajectories: list[Trajectory]

    @property
    def path(self) -> Path:
        """The ``annotations.json`` file."""
        return self.root / ANNOTATIONS_FILE

    @property
    def num_frames(self) -> int:
        """Total frames (= per-step training samples) in the set."""
        return sum(t.num_frames for t in self.trajectories)

    def __len__(self) -> int:
        return len(self.trajectories)

    def frame_path(self, trajectory: Trajectory, step: int) -> Path:
        """Path of frame ``step`` of ``trajectory``."""
        return trajectory.frame_path(self.root, step)

    def verify_frames(self) -> None:
        """Check every frame file exists; raise :class:`AnnotationError` naming the first gap.

        One directory listing per trajectory, so this is cheap even for large sets. Extra frames
        beyond ``len(actions)`` are tolerated and counted in a warning.
        """
        extra_total = 0
        for index, traj in enumerate(self.trajectories):
            fdir = traj.frame_dir(self.root)
            where = _where(self.path, index, traj.to_json())
            try:
                present = set(os.listdir(fdir))
            except FileNotFoundError:
                raise AnnotationError(
                    f"{where}: frame directory {fdir} does not exist (expected "
                    f"{traj.num_frames} frames {frame_name(0)}..{frame_name(traj.num_frames - 1)})"
                ) from None
            except NotADirectoryError:
                raise AnnotationError(f"{where}: {fdir} is not a directory") from None
            expected = [frame_name(i) for i in range(traj.num_frames)]
            missing = [name for name in expected if name not in present]
            if missing:
                raise AnnotationError(
                    f"{where}: missing frame {fdir / missing[0]} ({len(missing)} of "
                    f"{traj.num_frames} frames missing; len(actions) = {traj.num_frames})"
                )
            extra_total += len(present) - len(expected)
        if extra_total > 0:
            log.warning("%s: %d frame files beyond len(actions) are ignored", self.path,
                        extra_total)


def load_annotations(
    root: str | Path, verify_frames: bool = True, filename: str = ANNOTATIONS_FILE
) -> AnnotationSet:
    """Read and validate ``<root>/annotations.json`` (``root`` may also name the file itself).

    With ``verify_frames`` every frame file is checked to exist (see
    :meth:`AnnotationSet.verify_frames`).
    """
    root = Path(root)
    path = root if root.suffix == ".json" else root / filename
    root = path.parent
    if not path.exists():
        raise AnnotationError(f"{path}: annotation file does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise AnnotationError(f"{path}: not UTF-8 text ({err})") from err
    except json.JSONDecodeError as err:
        raise AnnotationError(
            f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from err
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a JSON list of records, got "
                              f"{type(data).__name__}")
    trajectories = [trajectory_from_json(item, path, i) for i, item in enumerate(data)]
    seen: dict[str, int] = {}
    for i, traj in enumerate(trajectories):
        if traj.video in seen:
            raise AnnotationError(
                f"{path}: record #{i}: field 'video': {traj.video!r} duplicates record "
                f"#{seen[traj.video]}"
            )
        seen[traj.video] = i
    out = AnnotationSet(root=root, trajectories=trajectories)
    if verify_frames:
        out.verify_frames()
    log.info("%s: %d trajectories, %d frames", path, len(out), out.num_frames)
    return out


def write_annotations(path: str | Path, trajectories: Iterable[Trajectory]) -> None:
    """Write ``annotations.json`` atomically (write a temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps([t.to_json() for t in trajectories], indent=1), encoding="utf-8")
    tmp.replace(path)


# ---- writing trajectories (collection, DAgger) --------------------------------------------------


def shard_path(root: str | Path, rank: int) -> Path:
    """The append-only record file of ``rank`` in annotation directory ``root``."""
    return Path(root) / f"annotations.rank{int(rank)}.jsonl"


def repair_torn_tail(path: str | Path) -> int:
    """Cut an append-only JSONL file back to its last complete line; return the bytes cut.

    A crash in the middle of an append leaves a last line without its newline. The record on it
    was never acknowledged (its episode is redone), and the next append would otherwise be
    glued onto it. Call before appending, in the one process that writes the file.
    """
    path = Path(path)
    if not path.exists():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1
    os.truncate(path, keep)
    log.warning("%s: cut a torn last line (%d bytes) left by an interrupted write; its episode "
                "is done again", path, len(data) - keep)
    return len(data) - keep


def _salvage(line: str) -> Any:
    """The complete JSON object at the end of ``line`` (a record appended to a torn one)."""
    for start in (i for i, c in enumerate(line) if c == "{" and i > 0):
        try:
            return json.loads(line[start:])
        except json.JSONDecodeError:
            continue
    return None


def read_shards(root: str | Path) -> list[Trajectory]:
    """Every finished trajectory in the shard files of ``root``.

    A torn last line (an interrupted write) is skipped; a record glued onto a torn line by an
    older writer (one that did not :func:`repair_torn_tail`) is recovered.
    """
    out: list[Trajectory] = []
    for path in sorted(Path(root).glob(SHARD_GLOB)):
        lines = path.read_text(encoding="utf-8").splitlines()
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                data = _salvage(line)
                if data is not None:
                    log.warning("%s: line %d holds a torn record followed by a complete one; "
                                "kept the complete one", path, lineno)
                elif lineno == len(lines):
                    log.warning("%s: line %d is incomplete (interrupted write); ignoring it",
                                path, lineno)
                    continue
                else:
                    raise AnnotationError(f"{path}: line {lineno} is not valid JSON") from None
            out.append(trajectory_from_json(data, path, lineno - 1))
    return out


def merge_shards(root: str | Path) -> AnnotationSet:
    """Fold the shard files of ``root`` into ``annotations.json`` (ids renumbered 0..N-1).

    Records already in ``annotations.json`` are kept; a shard record with the same ``video``
    replaces it. Records are sorted by ``video`` so the result does not depend on rank order.
    """
    root = Path(root)
    by_video: dict[str, Trajectory] = {}
    if (root / ANNOTATIONS_FILE).exists():
        for traj in load_annotations(root, verify_frames=False).trajectories:
            by_video[traj.video] = traj
    for traj in read_shards(root):
        by_video[traj.video] = traj
    merged = [dataclasses.replace(t, id=i) for i, t in enumerate(
        by_video[v] for v in sorted(by_video))]
    write_annotations(root / ANNOTATIONS_FILE, merged)
    log.info("%s: merged %d trajectories", root / ANNOTATIONS_FILE, len(merged))
    return AnnotationSet(root=root, trajectories=merged)


def finished_videos(root: str | Path) -> set[str]:
    """``video`` of every trajectory already finished in ``root`` (merged or in a shard)."""
    root = Path(root)
    done = {t.video for t in read_shards(root)}
    if (root / ANNOTATIONS_FILE).exists():
        done |= {t.video for t in load_annotations(root, verify_frames=False).trajectories}
    return done


class TrajectoryRecorder:
    """Writes one trajectory: frames as they come, then its record once it is finished.

    Made by :meth:`TrajectoryWriter.begin`. Frames are JPEG files written immediately, so a long
    episode never sits in memory. :meth:`finish` appends the record (the trajectory is then done and
    survives a restart); :meth:`discard` removes the frames (DAgger's filter rejected it).
    """

    def __init__(self, writer: TrajectoryWriter, name: str):
        self.writer = writer
        self.name = name
        self.video = f"{IMAGES_DIR}/{name}"
        self.dir = Path(writer.root) / self.video / RGB_DIR
        if self.dir.parent.exists():  # left over from an interrupted run
            shutil.rmtree(self.dir.parent)
        self.dir.mkdir(parents=True)
        self.num_frames = 0

    def add_frame(self, rgb: np.ndarray) -> None:
        """Write the next frame (HxWx3 uint8 RGB)."""
        from PIL import Image

        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"frames must be HxWx3 uint8, got {rgb.shape} {rgb.dtype}")
        Image.fromarray(rgb).save(self.dir / frame_name(self.num_frames), format="JPEG",
                                  quality=self.writer.jpeg_quality)
        self.num_frames += 1

    def finish(
        self, instructions: Sequence[str], actions: Sequence[int], **extra: Any
    ) -> Trajectory:
        """Record the finished trajectory; ``actions`` is the ``[-1, a1, ...]`` field."""
        if len(actions) != self.num_frames:
            raise AnnotationError(
                f"{self.video}: {self.num_frames} frames written but len(actions) = {len(actions)}"
            )
        traj = trajectory_from_json(
            {"id": self.name, "video": self.video, "instructions": list(instructions),
             "actions": [int(a) for a in actions], **extra},
            shard_path(self.writer.root, self.writer.rank),
        )
        self.writer._append(traj)
        return traj

    def discard(self) -> None:
        """Delete this trajectory's frames."""
        shutil.rmtree(self.dir.parent, ignore_errors=True)


class TrajectoryWriter:
    """Writes trajectories into annotation directory ``root`` as rank ``rank`` (resumable).

    :meth:`finished` tells which trajectories a previous run already completed, so a restarted job
    skips them; an interrupted trajectory is rewritten from scratch.
    """

    def __init__(self, root: str | Path, rank: int = 0, jpeg_quality: int = 95):
        self.root = Path(root)
        self.rank = int(rank)
        self.jpeg_quality = int(jpeg_quality)
        (self.root / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
        repair_torn_tail(shard_path(self.root, self.rank))  # this rank is its only writer

    def finished(self) -> set[str]:
        """Names of the trajectories already finished in ``root`` (any rank, merged or not)."""
        return {Path(v).name for v in finished_videos(self.root)}

    def begin(self, name: str) -> TrajectoryRecorder:
        """Start writing trajectory ``name`` (its frame directory is emptied first)."""
        return TrajectoryRecorder(self, name)

    def _append(self, traj: Trajectory) -> None:
        path = shard_path(self.root, self.rank)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(traj.to_json()) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def merge(self) -> AnnotationSet:
        """Write ``annotations.json`` from everything finished so far (see :func:`merge_shards`)."""
        return merge_shards(self.root)
