"""The navigator's status record: what the ``~/status`` topic carries, as JSON in std_msgs/String.

One record per step and per change of the stop reason, never two identical records in a row.
``action`` is the last step's action, cleared when a stop, reset or new instruction cuts its
motion short; ``probs`` its probabilities when the policy gives them. ``driving`` is true while
a motion runs (decelerating included); ``awaiting_frame`` is true when a camera frame received
from now on can be the next step's (at rest, or in continuous motion once the robot is executing
its last decided action). The same dataclass reads records back
from a bag (``janus-vln replay``), from tests and from the benchmark, so its fields are the
contract. ``latency_ms`` maps a stage name to milliseconds for the step:

* ``transport``: frame header stamp to the camera callback (needs a shared clock),
* ``receive_to_command``: camera callback to the first velocity command,
* ``convert``: message to numpy in the callback,
* ``wait``: frame converted to the start of the step (the worker picking the frame up),
* ``policy``: ``Policy.act``,
* ``command``: end of ``act`` to the first velocity command published,
* ``stamp_to_command``: frame header stamp to the first velocity command (end to end),
* ``overhead``: ``stamp_to_command`` minus ``policy`` (what the node adds around the policy),

plus the policy's own ``timings`` under ``policy.<stage>``.
"""

from __future__ import annotations

import dataclasses
import json


@dataclasses.dataclass
class NavigatorStatus:
    """One status record (see the module docstring for ``latency_ms``)."""

    state: str = "unconfigured"
    episode: int = 0
    step: int = 0
    action: str = ""
    probs: dict[str, float] = dataclasses.field(default_factory=dict)
    driving: bool = False
    awaiting_frame: bool = False
    stop_reason: str = "inactive"
    detail: str = ""
    instruction: str = ""
    frame_stamp: float = 0.0
    latency_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    frames_received: int = 0
    frames_invalid: int = 0
    steps_discarded: int = 0
    policy_failures: int = 0
    model: str = ""

    def to_json(self) -> str:
        """Serialise as one compact JSON object."""
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> NavigatorStatus:
        """Parse a record written by :meth:`to_json`; unknown keys are ignored."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"status record must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
