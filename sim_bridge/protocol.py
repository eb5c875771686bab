"""The evaluation protocols, by name, and the sentence that travels with every number.

Two protocols differ in one rule, and it decides what SR means:

- ``vlnce`` (the default): VLN-CE / habitat-lab. An episode ends when the agent calls STOP or
  after ``max_steps`` (500) actions; reaching the limit without STOP is a failure. This is what
  published R2R-CE / RxR-CE tables (VLN-CE, ETPNav, NaVid, StreamVLN...) are computed with, so
  it is the one to compare with.
- ``release``: the JanusVLN release's ``src/evaluation.py``, which in addition replaces the
  action at step ``force_stop_at`` (400) by STOP. An agent that never stops is then scored as if
  it had stopped where it stood: an agent that walks to the goal and never calls STOP scores
  SR 100 % here and 0 % under VLN-CE. Use it to reproduce the paper's numbers, and say so.

Degenerate episodes, where habitat-lab's formulas are undefined (NaN, or a division by zero), are
counted as :data:`DEGENERATE_RULE` says (:mod:`sim_bridge.metrics` implements it).
"""

from __future__ import annotations

import dataclasses

DEFAULT_PROTOCOL = "vlnce"


@dataclasses.dataclass(frozen=True)
class Protocol:
    """One named set of episode-ending rules."""

    name: str
    title: str
    force_stop_at: int | None  # the 0-based step whose action becomes STOP; None: never


PROTOCOLS = {
    "vlnce": Protocol("vlnce", "VLN-CE", None),
    "release": Protocol("release", "JanusVLN release", 400),
}

DEGENERATE_RULE = (
    "where habitat-lab's formulas are undefined (NaN): an episode that starts at the goal and "
    "does not move gets SPL = its SR; an unreachable goal (infinite geodesic distance) gets SR, "
    "OS and SPL 0 and is left out of the NE mean"
)


def check_protocol(name: str, force_stop_at: int | None) -> int | None:
    """The forced-STOP step of protocol ``name`` (``force_stop_at`` overrides only ``release``).

    Raises ValueError with one line when the name is unknown or the forced STOP contradicts it.
    """
    if name not in PROTOCOLS:
        raise ValueError(f"protocol {name!r} is not one of {sorted(PROTOCOLS)} (vlnce: VLN-CE, no "
                         "forced STOP; release: the JanusVLN release, STOP forced at step 400)")
    protocol = PROTOCOLS[name]
    if force_stop_at is None:
        return protocol.force_stop_at
    if protocol.force_stop_at is None:
        raise ValueError(f"force_stop_at {force_stop_at} contradicts protocol {name} (VLN-CE has "
                         "no forced STOP); use protocol release to force STOP")
    return int(force_stop_at)


def describe(name: str, force_stop_at: int | None, max_steps: int,
             success_distance: float = 3.0) -> str:
    """One sentence naming the protocol and its rules, e.g. for a table's caption."""
    protocol = PROTOCOLS.get(name)
    title = protocol.title if protocol else str(name)
    if force_stop_at is None:
        ending = f"episodes end at STOP or after {max_steps} actions, no forced STOP"
    else:
        ending = f"STOP forced at step {force_stop_at}, at most {max_steps} actions"
    return f"{name} ({title}: {ending}; success = STOP within {success_distance:g} m)"
