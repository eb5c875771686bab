"""VLN-CE episodes: the records the simulators, the metrics and the evaluation runner share.

Field names follow the official R2R_VLNCE / RxR_VLNCE JSON formats. Positions are habitat world
coordinates (metres, y up); rotations are quaternions in habitat's [x, y, z, w] order.

Two file layouts are read and written, gzipped (``.json.gz``) or plain (``.json``):

- **R2R_VLNCE** ``{split}.json.gz``: ``{"episodes": [...], "instruction_vocab": {...}}``. Each
  episode has ``episode_id, trajectory_id, scene_id, start_position, start_rotation,
  info {geodesic_distance}, goals [{position, radius}], instruction {instruction_text,
  instruction_tokens}, reference_path``.
- **RxR_VLNCE** ``{split}_guide.json.gz``: the same episode fields, no ``instruction_vocab``, and
  an instruction ``{instruction_id, instruction_text, language, annotator_id, edit_distance, ...}``.

The dense ground truth lives beside the split in ``{split}_gt.json.gz`` (``{split}_guide_gt`` for
RxR): ``{episode_id: {locations, actions, forward_steps}}`` with the expert's positions and the
habitat action ids. :func:`load_split` joins it onto the episodes.

Everything that is wrong in a file is reported as :class:`EpisodeFormatError`, whose message names
the file, the episode id and the field.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import math
import re
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

R2R = "r2r"
RXR = "rxr"
FORMATS = (R2R, RXR)

PAD_TOKEN = "<PAD>"
UNK_TOKEN = "<UNK>"
MAX_INSTRUCTION_TOKENS = 200  # R2R_VLNCE pads instruction_tokens to this length

_RXR_INSTRUCTION_KEYS = ("instruction_id", "instruction_text", "language")


class EpisodeFormatError(ValueError):
    """An episode file or record is malformed; the message names the file, episode and field."""


@dataclasses.dataclass
class Goal:
    """A navigation goal: a point and the radius around it."""

    position: list[float]
    radius: float | None = 3.0


@dataclasses.dataclass
class Episode:
    """One VLN-CE episode, plus its dense ground truth when a ``_gt`` file provided one.

    ``gt_locations`` / ``gt_actions`` / ``gt_forward_steps`` come from ``{split}_gt.json.gz``
    (dense expert path and action ids); ``language`` and ``instruction_id`` are set for RxR
    episodes. ``instruction_tokens`` are R2R's vocabulary ids or RxR's token strings
    (optional). ``instruction_extra`` keeps any other instruction fields (RxR ``annotator_id``,
    ``edit_distance``, ...) and ``extra`` any unknown episode-level fields, so a file survives a
    load/save round trip.
    ``source`` is the file the episode was read from (set by :func:`read_split_file`, never
    written), so a simulator's error about the episode can name the file (:func:`episode_label`).
    """

    episode_id: str
    scene_id: str
    start_position: list[float]
    start_rotation: list[float]
    goals: list[Goal]
    instruction: str
    trajectory_id: int | str = 0
    reference_path: list[list[float]] = dataclasses.field(default_factory=list)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    language: str | None = None
    instruction_id: str | None = None
    gt_locations: list[list[float]] | None = None
    gt_actions: list[int] | None = None
    gt_forward_steps: int | None = None
    instruction_tokens: list[int] | list[str] | None = None
    instruction_extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def goal_position(self) -> list[float]:
        """The (first) goal's position."""
        return self.goals[0].position

    @property
    def key(self) -> tuple[str, str]:
        """``(scene_id, episode_id)`` as strings: what results files and sharding key on."""
        return (str(self.scene_id), str(self.episode_id))

    @property
    def geodesic_distance(self) -> float | None:
        """``info.geodesic_distance`` (start to goal, metres) when the file gave it."""
        value = self.info.get("geodesic_distance")
        return None if value is None else float(value)


def episode_label(episode: Any) -> str:
    """The prefix of every error about one episode: ``"<file>: episode <id>"``.

    ``"episode <id>"`` when the file is not known; the same form as :class:`EpisodeFormatError`.
    """
    eid = getattr(episode, "episode_id", "?")
    source = getattr(episode, "source", None)
    return f"{source}: episode {eid}" if source else f"episode {eid}"


@dataclasses.dataclass
class SplitFile:
    """The contents of one split file: its episodes, its format and (R2R) its vocabulary."""

    episodes: list[Episode]
    format: str
    instruction_vocab: dict[str, Any] | None = None
    path: Path | None = None


# ---- sorting / keys ------------------------------------------------------------------------------


def episode_sort_key(episode: Episode) -> tuple:
    """Sort key (scene, episode id) with numeric ids ordered as numbers, so shards are stable."""
    eid = str(episode.episode_id)
    return (str(episode.scene_id), (0, int(eid), "") if eid.isdigit() else (1, 0, eid))


# ---- tokenisation / vocabulary -------------------------------------------------------------------

_TOKEN_RE = re.compile(r"[\w'-]+|[.!;:]")


def tokenize(text: str) -> list[str]:
    """Lower-case words (with ``'`` and ``-`` kept inside words) and sentence punctuation."""
    return _TOKEN_RE.findall(text.lower().replace(",", " ").replace("?", " "))


def build_vocab(texts: Iterable[str]) -> dict[str, Any]:
    """An R2R_VLNCE-style ``instruction_vocab`` (PAD 0, UNK 1, then the words sorted)."""
    words = sorted({tok for text in texts for tok in tokenize(text)} - {PAD_TOKEN, UNK_TOKEN})
    word_list = [PAD_TOKEN, UNK_TOKEN, *words]
    stoi = {w: i for i, w in enumerate(word_list)}
    return {
        "word_list": word_list,
        "word2idx_dict": stoi,
        "itos": word_list,
        "stoi": stoi,
        "num_vocab": len(word_list),
        "UNK_INDEX": 1,
        "PAD_INDEX": 0,
    }


def encode_instruction(
    text: str, vocab: dict[str, Any], length: int | None = MAX_INSTRUCTION_TOKENS
) -> list[int]:
    """Token ids of ``text`` under ``vocab``, padded (and cut) to ``length`` when given."""
    stoi = vocab.get("stoi") or vocab.get("word2idx_dict") or {
        w: i for i, w in enumerate(vocab["word_list"])
    }
    unk = int(vocab.get("UNK_INDEX", 1))
    pad = int(vocab.get("PAD_INDEX", 0))
    ids = [int(stoi.get(tok, unk)) for tok in tokenize(text)]
    if length is not None:
        ids = ids[:length] + [pad] * max(0, length - len(ids))
    return ids


# ---- file I/O ------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    """Read JSON, gunzipping when the file starts with the gzip magic bytes."""
    if not path.exists():
        raise EpisodeFormatError(f"{path}: file does not exist")
    if path.is_dir():
        inside = sorted(str(p) for p in path.glob("**/*.json*") if p.name.endswith(
            (".json", ".json.gz")) and not p.name.endswith(("_gt.json", "_gt.json.gz"))
            and p.name != "generation.json")[:3]
        hint = f" (e.g. {', '.join(inside)})" if inside else ""
        raise EpisodeFormatError(f"{path} is a directory; give an episode file{hint}")
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return json.loads(raw.decode("utf-8"))
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise EpisodeFormatError(f"{path}: truncated or corrupt gzip data ({err})") from err
    except UnicodeDecodeError as err:
        raise EpisodeFormatError(f"{path}: not UTF-8 text ({err})") from err
    except json.JSONDecodeError as err:
        raise EpisodeFormatError(
            f"{path}: invalid or truncated JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from err


def _write_json(path: Path, data: Any) -> None:
    """Write JSON, gzipped (reproducibly: mtime 0) when the name ends in ``.gz``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = json.dumps(data, separators=(",", ":")).encode("utf-8")
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".gz":
        tmp.write_bytes(gzip.compress(raw, mtime=0))
    else:
        tmp.write_bytes(raw)
    tmp.replace(path)


# ---- validation helpers --------------------------------------------------------------------------


class _Ctx:
    """Where we are in a file, for error messages."""

    def __init__(self, path: Path | str | None, episode_id: Any = None):
        self.path = path
        self.episode_id = episode_id

    def error(self, field: str, what: str) -> EpisodeFormatError:
        where = f"{self.path}" if self.path is not None else "<data>"
        if self.episode_id is not None:
            where += f": episode {self.episode_id}"
        return EpisodeFormatError(f"{where}: field {field!r}: {what}")


def _number(value: Any, ctx: _Ctx, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ctx.error(field, f"expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ctx.error(field, f"expected a finite number, got {value!r}")
    return float(value)


def _vector(value: Any, n: int, ctx: _Ctx, field: str) -> list[float]:
    if not isinstance(value, (list, tuple)) or len(value) != n:
        shown = value if not isinstance(value, (list, tuple)) else f"{len(value)} values"
        raise ctx.error(field, f"expected a list of {n} numbers, got {shown!r}")
    return [_number(v, ctx, f"{field}[{i}]") for i, v in enumerate(value)]


def _points(value: Any, ctx: _Ctx, field: str) -> list[list[float]]:
    if not isinstance(value, list):
        raise ctx.error(field, f"expected a list of [x, y, z] points, got {type(value).__name__}")
    return [_vector(p, 3, ctx, f"{field}[{i}]") for i, p in enumerate(value)]


def _require(data: dict, key: str, ctx: _Ctx, prefix: str = "") -> Any:
    if key not in data:
        raise ctx.error(prefix + key, "missing")
    return data[key]


def _id(value: Any, ctx: _Ctx, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or str(value) == "":
        raise ctx.error(field, f"expected a non-empty string or integer id, got {value!r}")
    return str(value)


# ---- episode <-> JSON ----------------------------------------------------------------------------

_EPISODE_KEYS = {
    "episode_id",
    "trajectory_id",
    "scene_id",
    "start_position",
    "start_rotation",
    "info",
    "goals",
    "instruction",
    "reference_path",
}


def episode_from_json(data: Any, path: Path | str | None = None, index: int = 0) -> Episode:
    """Validate one episode dict from an R2R/RxR file and build an :class:`Episode`."""
    ctx = _Ctx(path, f"#{index}")
    if not isinstance(data, dict):
        raise ctx.error(f"episodes[{index}]", f"expected an object, got {type(data).__name__}")
    episode_id = _id(_require(data, "episode_id", ctx), ctx, "episode_id")
    ctx.episode_id = episode_id
    scene_id = _require(data, "scene_id", ctx)
    if not isinstance(scene_id, str) or not scene_id:
        raise ctx.error("scene_id", f"expected a non-empty string, got {scene_id!r}")
    start_position = _vector(_require(data, "start_position", ctx), 3, ctx, "start_position")
    start_rotation = _vector(_require(data, "start_rotation", ctx), 4, ctx, "start_rotation")

    goals_raw = _require(data, "goals", ctx)
    if not isinstance(goals_raw, list) or not goals_raw:
        raise ctx.error("goals", f"expected a non-empty list of goals, got {goals_raw!r}")
    goals = []
    for i, g in enumerate(goals_raw):
        if not isinstance(g, dict):
            raise ctx.error(f"goals[{i}]", f"expected an object, got {g!r}")
        pos = _vector(_require(g, "position", ctx, f"goals[{i}]."), 3, ctx, f"goals[{i}].position")
        radius = g.get("radius", 3.0)
        if radius is not None:
            radius = _number(radius, ctx, f"goals[{i}].radius")
        goals.append(Goal(position=pos, radius=radius))

    instr = _require(data, "instruction", ctx)
    if isinstance(instr, str):  # tolerate a bare string (some converted datasets)
        instr = {"instruction_text": instr}
    if not isinstance(instr, dict):
        raise ctx.error("instruction", f"expected an object, got {type(instr).__name__}")
    text = _require(instr, "instruction_text", ctx, "instruction.")
    if not isinstance(text, str) or not text.strip():
        raise ctx.error("instruction.instruction_text", f"expected non-empty text, got {text!r}")
    tokens = instr.get("instruction_tokens")
    if tokens is not None:  # R2R: vocabulary ids; RxR: strings (VLN-CE's List[str])
        ints = all(isinstance(t, int) and not isinstance(t, bool) for t in tokens) \
            if isinstance(tokens, list) else False
        strs = isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)
        if not (ints or strs):
            raise ctx.error("instruction.instruction_tokens",
                            "expected a list of integers (R2R) or of strings (RxR)")
    language = instr.get("language")
    if language is not None and not isinstance(language, str):
        raise ctx.error("instruction.language", f"expected a string, got {language!r}")
    instruction_id = instr.get("instruction_id")
    if instruction_id is not None:
        instruction_id = _id(instruction_id, ctx, "instruction.instruction_id")
    instruction_extra = {
        k: v
        for k, v in instr.items()
        if k not in ("instruction_text", "instruction_tokens", "language", "instruction_id")
    }

    info = data.get("info") or {}
    if not isinstance(info, dict):
        raise ctx.error("info", f"expected an object, got {info!r}")
    if info.get("geodesic_distance") is not None:
        _number(info["geodesic_distance"], ctx, "info.geodesic_distance")
    reference_path = _points(data.get("reference_path", []) or [], ctx, "reference_path")
    trajectory_id = data.get("trajectory_id", 0)
    if isinstance(trajectory_id, bool) or not isinstance(trajectory_id, (int, str)):
        raise ctx.error("trajectory_id", f"expected an integer or string, got {trajectory_id!r}")

    return Episode(
        episode_id=episode_id,
        scene_id=scene_id,
        start_position=start_position,
        start_rotation=start_rotation,
        goals=goals,
        instruction=text,
        trajectory_id=trajectory_id,
        reference_path=reference_path,
        info=dict(info),
        language=language,
        instruction_id=instruction_id,
        instruction_tokens=list(tokens) if tokens is not None else None,
        instruction_extra=instruction_extra,
        extra={k: v for k, v in data.items() if k not in _EPISODE_KEYS},
        source=str(path) if path is not None else None,
    )


def _json_id(episode_id: str) -> int | str:
    """Write numeric ids as integers, as the official files do."""
    return int(episode_id) if str(episode_id).isdigit() else str(episode_id)


def episode_to_json(episode: Episode, fmt: str = R2R) -> dict[str, Any]:
    """The official-format dict for ``episode`` (``fmt`` is ``"r2r"`` or ``"rxr"``)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    instruction: dict[str, Any] = {"instruction_text": episode.instruction}
    if fmt == RXR:
        instruction = {
            "instruction_id": episode.instruction_id
            if episode.instruction_id is not None
            else str(episode.episode_id),
            "instruction_text": episode.instruction,
            "language": episode.language or "en-US",
        }
    instruction.update(episode.instruction_extra)
    if episode.instruction_tokens is not None:
        instruction["instruction_tokens"] = list(episode.instruction_tokens)
    if fmt == R2R and episode.language is not None:
        instruction["language"] = episode.language
    out = {
        "episode_id": _json_id(episode.episode_id),
        "trajectory_id": episode.trajectory_id,
        "scene_id": episode.scene_id,
        "start_position": [float(v) for v in episode.start_position],
        "start_rotation": [float(v) for v in episode.start_rotation],
        "info": dict(episode.info),
        "goals": [
            {"position": [float(v) for v in g.position], "radius": g.radius} for g in episode.goals
        ],
        "instruction": instruction,
        "reference_path": [[float(v) for v in p] for p in episode.reference_path],
    }
    out.update(episode.extra)
    return out


# ---- ground truth --------------------------------------------------------------------------------


def gt_path_for(split_path: str | Path) -> Path:
    """The conventional ``_gt`` file beside a split file (``val.json.gz`` -> ``val_gt.json.gz``)."""
    split_path = Path(split_path)
    name = split_path.name
    for suffix in (".json.gz", ".json"):
        if name.endswith(suffix):
            return split_path.with_name(name[: -len(suffix)] + "_gt" + suffix)
    raise ValueError(f"{split_path}: episode files end in .json or .json.gz")


def find_gt_path(split_path: str | Path) -> Path | None:
    """The ``_gt`` file beside ``split_path`` if it exists, else None."""
    try:
        candidate = gt_path_for(split_path)
    except ValueError:
        return None
    return candidate if candidate.exists() else None


def _parse_gt_entry(eid: str, entry: Any, path: Path) -> tuple[list, list[int], int | None]:
    ctx = _Ctx(path, eid)
    if not isinstance(entry, dict):
        raise ctx.error("<gt entry>", f"expected an object, got {type(entry).__name__}")
    locations = _points(_require(entry, "locations", ctx), ctx, "locations")
    actions = entry.get("actions", [])
    if not isinstance(actions, list):
        raise ctx.error("actions", "expected a list of action ids")
    for i, a in enumerate(actions):
        if isinstance(a, bool) or not isinstance(a, int) or not -1 <= a <= 3:
            raise ctx.error(f"actions[{i}]", f"expected an action id in 0..3, got {a!r}")
    forward_steps = entry.get("forward_steps")
    if forward_steps is not None and (
        isinstance(forward_steps, bool) or not isinstance(forward_steps, int) or forward_steps < 0
    ):
        raise ctx.error("forward_steps", f"expected a non-negative integer, got {forward_steps!r}")
    return locations, list(actions), forward_steps


def load_gt(path: str | Path) -> dict[str, tuple[list, list[int], int | None]]:
    """Read a ``_gt`` file: ``{episode_id: (locations, actions, forward_steps)}``."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise EpisodeFormatError(
            f"{path}: expected an object keyed by episode id, got {type(data).__name__}"
        )
    return {str(eid): _parse_gt_entry(str(eid), entry, path) for eid, entry in data.items()}


def gt_to_json(episodes: Sequence[Episode]) -> dict[str, Any]:
    """The ``_gt`` file content for the episodes that carry dense ground truth."""
    out = {}
    for ep in episodes:
        if ep.gt_locations is None:
            continue
        actions = list(ep.gt_actions or [])
        forward = ep.gt_forward_steps
        if forward is None:
            forward = sum(1 for a in actions if a == 1)
        out[str(ep.episode_id)] = {
            "locations": [[float(v) for v in p] for p in ep.gt_locations],
            "actions": [int(a) for a in actions],
            "forward_steps": int(forward),
        }
    return out


# ---- splits --------------------------------------------------------------------------------------


def _language_matches(language: str | None, wanted: Sequence[str]) -> bool:
    if language is None:
        return True  # R2R episodes carry no language; a language filter does not apply
    lang = language.lower()
    return any(lang == w.lower() or lang.startswith(w.lower() + "-") for w in wanted)


def read_split_file(path: str | Path) -> SplitFile:
    """Read and validate one split file (format detected from its content)."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise EpisodeFormatError(
            f"{path}: expected an object with an 'episodes' list, got {type(data).__name__}"
        )
    if "episodes" not in data:
        raise EpisodeFormatError(f"{path}: field 'episodes': missing")
    raw = data["episodes"]
    if not isinstance(raw, list):
        raise EpisodeFormatError(f"{path}: field 'episodes': expected a list")
    episodes = [episode_from_json(item, path, i) for i, item in enumerate(raw)]
    seen: dict[str, int] = {}
    for i, ep in enumerate(episodes):
        if ep.episode_id in seen:
            raise EpisodeFormatError(
                f"{path}: episode {ep.episode_id}: field 'episode_id': duplicate (episodes "
                f"#{seen[ep.episode_id]} and #{i})"
            )
        seen[ep.episode_id] = i
    vocab = data.get("instruction_vocab")
    if vocab is not None and (not isinstance(vocab, dict) or "word_list" not in vocab):
        raise EpisodeFormatError(f"{path}: field 'instruction_vocab': expected an object with "
                                 "a 'word_list'")
    is_rxr = vocab is None and any(
        ep.language is not None or ep.instruction_id is not None for ep in episodes
    )
    return SplitFile(episodes=episodes, format=RXR if is_rxr else R2R,
                     instruction_vocab=vocab, path=path)


def load_split(
    path: str | Path,
    gt_path: str | Path | None = None,
    languages: Sequence[str] | None = None,
) -> list[Episode]:
    """Load the episodes of an R2R_VLNCE or RxR_VLNCE split file (``.json`` or ``.json.gz``).

    ``gt_path`` joins a ``_gt`` file's dense locations/actions onto the episodes (see
    :func:`find_gt_path` for the conventional sibling). ``languages`` keeps RxR episodes whose
    language equals or starts with one of the given codes (``["en"]`` keeps en-US and en-IN);
    episodes without a language (R2R) are kept.
    """
    split = read_split_file(path)
    episodes = split.episodes
    if languages:
        before = len(episodes)
        episodes = [ep for ep in episodes if _language_matches(ep.language, languages)]
        log.info("%s: language filter %s kept %d of %d episodes", path, list(languages),
                 len(episodes), before)
    if gt_path is not None:
        gt = load_gt(gt_path)
        missing = 0
        for ep in episodes:
            entry = gt.get(str(ep.episode_id))
            if entry is None:
                missing += 1
                continue
            ep.gt_locations, ep.gt_actions, ep.gt_forward_steps = entry
        if missing:
            log.warning("%s: %d of %d episodes have no ground truth in %s", path, missing,
                        len(episodes), gt_path)
    return episodes


def save_split(
    path: str | Path,
    episodes: Sequence[Episode],
    gt_path: str | Path | None = None,
    fmt: str = "auto",
    instruction_vocab: dict[str, Any] | None = None,
) -> None:
    """Write ``episodes`` as an official split file, and their ground truth to ``gt_path``.

    ``fmt`` ``"auto"`` picks RxR when any episode has a language, else R2R. For R2R the
    ``instruction_vocab`` is built from the instructions when not given, and episodes without
    ``instruction_tokens`` get them from that vocabulary.
    """
    if fmt == "auto":
        fmt = RXR if any(ep.language is not None for ep in episodes) else R2R
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS} or 'auto', got {fmt!r}")
    ids = [str(ep.episode_id) for ep in episodes]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"{path}: duplicate episode ids {dup[:5]}")
    data: dict[str, Any] = {}
    if fmt == R2R:
        vocab = instruction_vocab or build_vocab(ep.instruction for ep in episodes)
        items = []
        for ep in episodes:
            if ep.instruction_tokens is None:
                ep = dataclasses.replace(
                    ep, instruction_tokens=encode_instruction(ep.instruction, vocab)
                )
            items.append(episode_to_json(ep, R2R))
        data = {"episodes": items, "instruction_vocab": vocab}
    else:
        data = {"episodes": [episode_to_json(ep, RXR) for ep in episodes]}
    _write_json(Path(path), data)
    if gt_path is not None:
        _write_json(Path(gt_path), gt_to_json(episodes))


# ---- geometry helpers shared by the generator and the simulators ---------------------------------


def yaw_to_quaternion(yaw: float) -> list[float]:
    """Habitat [x, y, z, w] quaternion of a rotation by ``yaw`` radians about +y."""
    return [0.0, math.sin(yaw / 2.0), 0.0, math.cos(yaw / 2.0)]


def quaternion_to_yaw(q: Sequence[float]) -> float:
    """Yaw (radians, about +y, 0 = looking along -z) of a habitat [x, y, z, w] quaternion."""
    x, y, z, w = (float(v) for v in q)
    # heading of the rotated -z axis, which is exact for pure yaw and the VLN-CE reading otherwise
    fx = -2.0 * (x * z + w * y)
    fz = -(1.0 - 2.0 * (x * x + y * y))
    return math.atan2(-fx, -fz)
