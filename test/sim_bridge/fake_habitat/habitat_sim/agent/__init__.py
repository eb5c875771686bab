"""MOCK habitat_sim.agent: configuration records (attrs, slots) and the Agent."""

import math

import numpy as np
import quaternion as qt

from habitat_sim.utils.common import quat_from_coeffs, quat_rotate_vector

__all__ = ["ActionSpec", "ActuationSpec", "Agent", "AgentConfiguration", "AgentState",
           "SixDOFPose"]

_EPS = 1e-5  # habitat_sim.agent.controls.object_controls.EPS


class ActuationSpec:
    def __init__(self, amount, constraint=None):
        self.amount = amount
        self.constraint = constraint


class ActionSpec:
    def __init__(self, name, actuation=None):
        self.name = name
        self.actuation = actuation


def _default_action_space():
    return dict(
        move_forward=ActionSpec("move_forward", ActuationSpec(amount=0.25)),
        turn_left=ActionSpec("turn_left", ActuationSpec(amount=10.0)),
        turn_right=ActionSpec("turn_right", ActuationSpec(amount=10.0)),
    )


class SixDOFPose:
    __slots__ = ("position", "rotation")

    def __init__(self, position=None, rotation=None):
        self.position = np.zeros(3) if position is None else position
        self.rotation = qt.quaternion(1, 0, 0, 0) if rotation is None else rotation


class AgentState:
    """attrs(slots=True) in habitat-sim: only these three attributes exist."""

    __slots__ = ("position", "rotation", "sensor_states")

    def __init__(self, position=None, rotation=None, sensor_states=None):
        self.position = np.zeros(3) if position is None else position
        self.rotation = qt.quaternion(1, 0, 0, 0) if rotation is None else rotation
        self.sensor_states = {} if sensor_states is None else sensor_states


class AgentConfiguration:
    __slots__ = ("height", "radius", "sensor_specifications", "action_space", "body_type")

    def __init__(self, height=1.5, radius=0.1, sensor_specifications=None, action_space=None,
                 body_type="cylinder"):
        self.height = height
        self.radius = radius
        self.sensor_specifications = [] if sensor_specifications is None else sensor_specifications
        self.action_space = _default_action_space() if action_space is None else action_space
        self.body_type = body_type

    def __eq__(self, other):
        return isinstance(other, AgentConfiguration) and all(
            getattr(self, k) == getattr(other, k) for k in self.__slots__)


def _validate(state):
    """habitat-sim's attr validators: finite position, unit-length rotation."""
    if not np.all(np.isfinite(np.asarray(state.position, dtype=float))):
        raise ValueError(f"{state.position} contains non-finite values")
    rot = state.rotation
    norm = rot.norm() ** 0.5 if isinstance(rot, qt.quaternion) else np.linalg.norm(
        np.asarray(rot, dtype=float))
    if not np.isclose(norm, 1.0, rtol=1e-4, atol=0):
        raise ValueError(f"{rot} is not a unit length vector")


class Agent:
    """The agent body: a pose, moved by the registered controls through the move filter."""

    def __init__(self, agent_config=None):
        self.agent_config = agent_config if agent_config else AgentConfiguration()
        self._position = np.zeros(3, np.float32)
        self._rotation = qt.quaternion(1, 0, 0, 0)
        self._move_filter = lambda start, end: end
        self.initial_state = None

    def act(self, action_id):
        assert action_id in self.agent_config.action_space, f"No action {action_id} in action space"
        action = self.agent_config.action_space[action_id]
        amount = float(action.actuation.amount)
        if action.name in ("turn_left", "turn_right"):
            sign = 1.0 if action.name == "turn_left" else -1.0
            turn = qt.from_rotation_vector(np.array([0.0, sign * math.radians(amount), 0.0]))
            self._rotation = (self._rotation * turn).normalized()
            return False
        if action.name not in ("move_forward", "move_backward"):
            raise AssertionError(f"No move_fn for action '{action.name}'")
        sign = -1.0 if action.name == "move_forward" else 1.0
        start = self._position.copy()
        end = start + quat_rotate_vector(self._rotation, np.array([0.0, 0.0, sign * amount]))
        filtered = np.asarray(self._move_filter(start, end), dtype=np.float32)
        self._position = filtered
        before = float(np.dot(end - start, end - start))
        after = float(np.dot(filtered - start, filtered - start))
        return (after + _EPS) < before

    def get_state(self):
        return AgentState(np.array(self._position, dtype=np.float32), qt.quaternion(
            self._rotation.w, self._rotation.x, self._rotation.y, self._rotation.z))

    def set_state(self, state, reset_sensors=True, infer_sensor_states=True, is_initial=False):
        _validate(state)
        if not isinstance(state.rotation, qt.quaternion):
            state.rotation = quat_from_coeffs(state.rotation)
        self._position = np.array(state.position, dtype=np.float32).reshape(3)
        self._rotation = state.rotation
        if is_initial:
            self.initial_state = state

    @property
    def state(self):
        return self.get_state()

    @state.setter
    def state(self, new_state):
        self.set_state(new_state, reset_sensors=True, infer_sensor_states=True, is_initial=False)

    def close(self):
        pass
