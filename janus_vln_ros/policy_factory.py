"""Build a policy from the navigator's ``model`` string (no rclpy; shared by the node and replay).

Accepted specs:

* ``random``: :class:`janus_core.baselines.RandomPolicy` (seed 0).
* ``forward``: :class:`janus_core.baselines.ForwardOnlyPolicy`.
* ``constant:<ACTION>[:<delay_s>][:fail=<n>,<m>...][:down=<n>]``:
  :class:`janus_core.baselines.ConstantPolicy`, for tests and benchmarks (e.g.
  ``constant:MOVE_FORWARD:0.05`` or ``constant:TURN_LEFT:0:fail=2,3``); ``down=<n>`` makes the
  first ``n`` calls of ``act`` raise the same error (:class:`ScriptedOutage`, an unreachable
  policy server, say).
* ``expert:ros[:<service>]``: :class:`janus_vln_ros.sim_expert.RosExpertPolicy`, the
  simulator's shortest-path expert asked over the sim_bridge node's ``~/expert_action`` service
  (simulation only; imports rclpy).
* anything else: ``janus_core.factory.build_policy(spec)`` (a preset name such as ``tiny`` or a
  checkpoint directory), imported only then so that baselines need no torch.
"""

from __future__ import annotations

from pathlib import Path

from janus_core.actions import Action
from janus_core.baselines import ConstantPolicy, ForwardOnlyPolicy, RandomPolicy
from janus_core.interface import Observation, Policy, StepResult


class PolicySpecError(ValueError):
    """The ``model`` string cannot be parsed; the text shows the accepted forms."""


_CONSTANT_FORM = "constant:<ACTION>[:<delay_s>][:fail=<n>,<m>...][:down=<n>]"


class ScriptedOutage(Policy):
    """``policy``, except that its first ``calls`` calls of ``act`` raise the same RuntimeError.

    For tests and benchmarks of a driver's fault handling: one error, repeated, like a policy
    server that is down.
    """

    MESSAGE = "policy unavailable (scripted outage)"

    def __init__(self, policy: Policy, calls: int):
        self.policy, self.calls_left = policy, int(calls)

    def reset(self, instruction: str) -> None:
        """Reset the wrapped policy (the outage goes on)."""
        self.policy.reset(instruction)

    def act(self, observation: Observation) -> StepResult:
        """Raise while the outage lasts, then act."""
        if self.calls_left > 0:
            self.calls_left -= 1
            raise RuntimeError(self.MESSAGE)
        return self.policy.act(observation)


def parse_constant_spec(spec: str) -> Policy:
    """Parse ``constant:...`` (see the module docstring) into a ConstantPolicy."""
    parts = spec.split(":")
    if len(parts) < 2 or not parts[1]:
        raise PolicySpecError(f"model {spec!r}: expected {_CONSTANT_FORM}")
    try:
        action = Action.from_name(parts[1])
    except ValueError as err:
        raise PolicySpecError(f"model {spec!r}: {err}") from None
    delay, fail_steps, down = 0.0, (), 0
    for extra in parts[2:]:
        if extra.startswith("down="):
            try:
                down = int(extra[5:])
            except ValueError:
                raise PolicySpecError(
                    f"model {spec!r}: down= needs a number of calls, got {extra!r}"
                ) from None
            continue
        if extra.startswith("fail="):
            try:
                fail_steps = tuple(int(s) for s in extra[5:].split(",") if s)
            except ValueError:
                raise PolicySpecError(
                    f"model {spec!r}: fail= needs comma-separated step numbers, got {extra!r}"
                ) from None
            continue
        try:
            delay = float(extra)
        except ValueError:
            raise PolicySpecError(
                f"model {spec!r}: {extra!r} is neither a delay in seconds nor fail=...; "
                f"expected {_CONSTANT_FORM}"
            ) from None
        if not delay >= 0.0:
            raise PolicySpecError(f"model {spec!r}: delay must be >= 0 seconds, got {delay}")
    policy = ConstantPolicy(action, delay_s=delay, fail_steps=fail_steps)
    return ScriptedOutage(policy, down) if down > 0 else policy


def check_spec(spec: str) -> None:
    """PolicySpecError (one line) for a spec that cannot work, checked without building it.

    ``expert`` (it needs a simulator: ``expert:ros`` does, in simulation), a path that does not
    exist and a folder that is not a checkpoint (no ``config.json``).
    """
    spec = spec.strip()
    if not spec:
        raise PolicySpecError(
            "model is empty; use random, forward, constant:<ACTION>, a preset or a checkpoint dir"
        )
    if spec == "expert":
        raise PolicySpecError(
            "model 'expert' needs a simulator to ask (in simulation: expert:ros); use a checkpoint "
            "folder, a preset, random, forward or constant:<ACTION>")
    if ":" in spec or spec in ("random", "forward"):
        return
    path = Path(spec).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        raise PolicySpecError(f"model {spec!r}: not a checkpoint folder (no config.json)")
    if not path.exists() and (len(path.parts) > 1 or path.suffix):
        raise PolicySpecError(f"model {spec!r}: no such checkpoint folder")
    if path.exists() and not path.is_dir() and path.suffix not in (".yaml", ".yml"):
        raise PolicySpecError(f"model {spec!r} is a file; give a checkpoint folder or a preset")


def make_policy(spec: str) -> Policy:
    """Build the policy named by ``spec``; raises PolicySpecError or the builder's own error."""
    spec = spec.strip()
    check_spec(spec)
    if spec == "random":
        return RandomPolicy()
    if spec == "forward":
        return ForwardOnlyPolicy()
    if spec.startswith("constant:") or spec == "constant":
        return parse_constant_spec(spec)
    if spec == "expert:ros" or spec.startswith("expert:ros:"):
        from janus_vln_ros.sim_expert import RosExpertPolicy  # rclpy: only when asked for

        return RosExpertPolicy.from_spec(spec)
    from janus_core.factory import build_policy  # torch + transformers: only when needed

    return build_policy(spec)
