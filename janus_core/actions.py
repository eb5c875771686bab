"""The discrete VLN-CE action vocabulary shared by the policy, the simulators and the ROS nodes.

The ids match habitat's VLN action ids and the JanusVLN release (``STOP`` 0, ``MOVE_FORWARD`` 1,
``TURN_LEFT`` 2, ``TURN_RIGHT`` 3). The model answers with the action *name*; anything that is not
an exact name (after stripping whitespace) is read as STOP, as the release does.
"""

from __future__ import annotations

import enum
import logging

log = logging.getLogger(__name__)


class Action(enum.IntEnum):
    """One discrete navigation action; the integer value is the habitat action id."""

    STOP = 0
    MOVE_FORWARD = 1
    TURN_LEFT = 2
    TURN_RIGHT = 3

    @classmethod
    def from_name(cls, name: str) -> "Action":
        """Return the action called ``name`` (exact, case-sensitive); raise ValueError otherwise."""
        try:
            return cls[name]
        except KeyError:
            raise ValueError(
                f"unknown action name {name!r}; expected one of {[a.name for a in cls]}"
            ) from None

    @classmethod
    def from_id(cls, action_id: int) -> "Action":
        """Return the action with habitat id ``action_id``; raise ValueError otherwise."""
        try:
            return cls(int(action_id))
        except ValueError:
            raise ValueError(
                f"unknown action id {action_id!r}; expected one of {[int(a) for a in cls]}"
            ) from None


ACTION_NAMES: tuple[str, ...] = tuple(a.name for a in Action)


def parse_action(text: str) -> tuple[Action, bool]:
    """Map a model reply to an action as the release does: exact match, otherwise STOP.

    Returns ``(action, parsed)`` where ``parsed`` is False when the reply was not an action name
    and STOP was substituted. Surrounding whitespace is stripped (the release does not strip; a
    port should, and logging the failure is ours too).
    """
    cleaned = text.strip()
    if cleaned in Action.__members__:
        return Action[cleaned], True
    log.debug("reply %r is not an action name; reading it as STOP", text)
    return Action.STOP, False
