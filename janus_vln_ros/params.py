"""The navigator's parameters: one dataclass is the single source of names, defaults and ranges.

:class:`NavigatorParams` lists every parameter with its default, unit, allowed range or values
and whether it needs a restart (``read_only``). :func:`declare_parameters` declares them on a
node with full descriptors; :func:`read_parameters` reads them back and validates them. Every
invalid value raises :class:`NavigatorConfigError` whose text names the parameter, the value and
what is allowed, so ``on_configure`` can fail with a clear reason.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from janus_vln_ros.motion import MotionError, MotionLimits


class NavigatorConfigError(ValueError):
    """A navigator parameter is invalid; the text names it and says what is allowed."""


def _param(default, description, *, unit="", lo=None, hi=None, choices=None, read_only=False):
    meta = {
        "description": description, "unit": unit, "lo": lo, "hi": hi,
        "choices": tuple(choices) if choices else None, "read_only": read_only,
    }
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class NavigatorParams:
    """Every navigator parameter (ROS name = field name); see config/navigator.yaml."""

    model: str = _param(
        "",
        "Policy to load on configure: a checkpoint directory | a janus_core preset (tiny, "
        "full) | random | forward | constant:<ACTION>[:<delay_s>]. Empty (the default) makes "
        "configure fail: nothing drives without an explicit choice",
        read_only=True,
    )
    autostart: bool = _param(
        False, "Configure and activate at start-up instead of waiting for lifecycle calls",
        read_only=True,
    )
    image_transport: str = _param(
        "raw",
        "raw: sensor_msgs/Image on image_topic; compressed: sensor_msgs/CompressedImage on "
        "<image_topic>/compressed (the image_transport convention)",
        choices=("raw", "compressed"), read_only=True,
    )
    image_topic: str = _param("camera/image_raw", "Colour camera topic", read_only=True)
    camera_info_topic: str = _param(
        "camera/camera_info", "CameraInfo topic (checked against the image size); empty: off",
        read_only=True,
    )
    depth_topic: str = _param(
        "", "Optional depth image (16UC1 mm or 32FC1 m) passed to the policy; empty: off",
        read_only=True,
    )
    instruction_topic: str = _param(
        "instruction",
        "std_msgs/String, reliable + transient-local; each message starts a new episode",
        read_only=True,
    )
    odom_topic: str = _param(
        "odom", "nav_msgs/Odometry for closed-loop motion and the pose; empty: off",
        read_only=True,
    )
    estop_topic: str = _param(
        "estop", "std_msgs/Bool; true stops the robot until false arrives", read_only=True
    )
    cmd_vel_topic: str = _param("cmd_vel", "Velocity command output topic", read_only=True)
    enable_stamped_cmd_vel: bool = _param(
        False, "Publish geometry_msgs/TwistStamped instead of Twist (Nav2 convention)",
        read_only=True,
    )
    cmd_vel_frame_id: str = _param(
        "base_link", "header.frame_id of TwistStamped commands", read_only=True
    )
    image_qos: str = _param(
        "sensor_data",
        "Camera subscription QoS: sensor_data (best effort) or reliable; depth 1 either way",
        choices=("sensor_data", "reliable"), read_only=True,
    )
    image_timeout: float = _param(
        0.5, "Stop the robot when no valid camera frame arrived for this long",
        unit="s", lo=0.01, hi=60.0,
    )
    min_image_side: int = _param(
        16, "Camera frames with a side shorter than this are refused (a broken camera)",
        unit="px", lo=1, hi=100_000,
    )
    max_image_pixels: int = _param(
        4_194_304, "Camera frames with more pixels than this are refused (every frame is shrunk "
        "to the model's input, 644x490 for JanusVLN: run the camera at a smaller mode)",
        unit="px", lo=1, hi=1_000_000_000,
    )
    require_resume: bool = _param(
        True, "After an e-stop release or a stale/invalid camera stop, drive again only on "
        "~/resume or a new instruction (false: as soon as the inputs are fine)",
    )
    watchdog_period: float = _param(
        0.05, "How often input freshness is checked", unit="s", lo=0.005, hi=1.0,
        read_only=True,
    )
    forward_distance: float = _param(
        0.25, "Distance of one MOVE_FORWARD", unit="m", lo=0.001, hi=5.0
    )
    turn_angle: float = _param(
        15.0, "Angle of one TURN_LEFT / TURN_RIGHT", unit="deg", lo=0.1, hi=180.0
    )
    max_linear_speed: float = _param(
        0.25, "Linear speed limit", unit="m/s", lo=0.001, hi=5.0
    )
    max_angular_speed: float = _param(
        0.5, "Angular speed limit", unit="rad/s", lo=0.001, hi=10.0
    )
    linear_acceleration: float = _param(
        0.5, "Linear acceleration of the profile; 0: step to full speed", unit="m/s^2",
        lo=0.0, hi=20.0,
    )
    angular_acceleration: float = _param(
        1.5, "Angular acceleration of the profile; 0: step to full speed", unit="rad/s^2",
        lo=0.0, hi=50.0,
    )
    min_linear_speed: float = _param(
        0.02, "Closed-loop speed floor so odometry control does not stall", unit="m/s",
        lo=0.0, hi=5.0,
    )
    min_angular_speed: float = _param(
        0.05, "Closed-loop angular speed floor", unit="rad/s", lo=0.0, hi=10.0
    )
    control_rate: float = _param(
        20.0, "Velocity command rate during a motion", unit="Hz", lo=1.0, hi=200.0
    )
    motion_mode: str = _param(
        "auto",
        "auto: closed loop when odometry is fresh, else timed; timed: always open loop; "
        "odometry: always closed loop (no step without fresh odometry)",
        choices=("auto", "timed", "odometry"),
    )
    odom_timeout: float = _param(
        0.5, "Odometry older than this is not used", unit="s", lo=0.01, hi=60.0
    )
    position_tolerance: float = _param(
        0.01, "Closed-loop stop tolerance for MOVE_FORWARD", unit="m", lo=0.0, hi=1.0
    )
    angle_tolerance: float = _param(
        1.0, "Closed-loop stop tolerance for turns", unit="deg", lo=0.0, hi=45.0
    )
    motion_timeout_factor: float = _param(
        3.0, "A closed-loop motion gives up after this many planned durations (+1 s)",
        lo=1.0, hi=100.0,
    )
    settle_time: float = _param(
        0.0, "After a motion, the next step waits for a frame received this much later "
        "(continuous_motion false only)",
        unit="s", lo=0.0, hi=10.0,
    )
    continuous_motion: bool = _param(
        True,
        "Compute the next step while the current motion runs (from the newest frame) and "
        "blend consecutive same-direction actions without stopping; false: stop after each "
        "action and step on a frame taken at rest",
    )
    max_steps: int = _param(
        500, "Episode step limit (STOP is forced after it); 0: no limit", lo=0, hi=1_000_000
    )
    policy_error_retry: float = _param(
        1.0, "After a policy exception, wait this long before the next attempt; the wait "
        "doubles with each failure in a row, up to policy_error_retry_max",
        unit="s", lo=0.0, hi=3600.0,
    )
    policy_error_retry_max: float = _param(
        30.0, "Longest wait between attempts while the policy keeps failing",
        unit="s", lo=0.0, hi=3600.0,
    )
    debug_image: bool = _param(
        False, "Publish ~/debug_image (sensor_msgs/Image rgb8): each step's frame with the "
        "instruction, step, action and probabilities drawn on it", read_only=True,
    )
    diagnostics_period: float = _param(
        1.0, "Period of /diagnostics messages", unit="s", lo=0.1, hi=60.0, read_only=True
    )

    def __post_init__(self):
        for field in dataclasses.fields(self):
            object.__setattr__(self, field.name, _check(field, getattr(self, field.name)))
        try:
            self.motion_limits()
        except MotionError as err:
            raise NavigatorConfigError(f"motion parameters: {err}") from None
        if self.policy_error_retry_max < self.policy_error_retry:
            raise NavigatorConfigError(
                f"policy_error_retry_max ({self.policy_error_retry_max}) is below "
                f"policy_error_retry ({self.policy_error_retry})"
            )

    def safety_settings(self) -> dict[str, Any]:
        """The :meth:`janus_vln_ros.safety.SafetyMonitor.configure` settings these give."""
        return {
            "image_timeout": self.image_timeout,
            "policy_error_retry": self.policy_error_retry,
            "policy_error_retry_max": self.policy_error_retry_max,
            "odom_timeout": self.odom_timeout,
            "require_odometry": self.motion_mode == "odometry",
            "require_resume": self.require_resume,
        }

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> NavigatorParams:
        """Build from ``{name: value}``; unknown names raise NavigatorConfigError."""
        unknown = sorted(set(values) - set(PARAMETER_NAMES))
        if unknown:
            raise NavigatorConfigError(
                f"unknown navigator parameter(s) {unknown}; known: {sorted(PARAMETER_NAMES)}"
            )
        return cls(**values)

    def replace(self, **changes: Any) -> NavigatorParams:
        """A validated copy with ``changes`` applied."""
        return NavigatorParams.from_mapping({**dataclasses.asdict(self), **changes})

    def motion_limits(self) -> MotionLimits:
        """The motion limits these parameters describe (angles converted to radians)."""
        return MotionLimits(
            forward_distance=self.forward_distance,
            turn_angle=math.radians(self.turn_angle),
            max_linear_speed=self.max_linear_speed,
            max_angular_speed=self.max_angular_speed,
            linear_acceleration=self.linear_acceleration,
            angular_acceleration=self.angular_acceleration,
            position_tolerance=self.position_tolerance,
            angle_tolerance=math.radians(self.angle_tolerance),
            min_linear_speed=self.min_linear_speed,
            min_angular_speed=self.min_angular_speed,
            timeout_factor=self.motion_timeout_factor,
        )


def _check(field: dataclasses.Field, value: Any) -> Any:
    """Type-check (ints accepted for floats), range-check and choice-check one value."""
    meta, name, kind = field.metadata, field.name, type(field.default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise NavigatorConfigError(
            f"parameter {name}: expected {kind.__name__}, got {type(value).__name__} {value!r}"
        )
    if kind is float and not math.isfinite(value):
        raise NavigatorConfigError(f"parameter {name}: must be finite, got {value!r}")
    lo, hi, unit = meta["lo"], meta["hi"], meta["unit"]
    if lo is not None and not lo <= value <= hi:
        raise NavigatorConfigError(
            f"parameter {name}: {value!r} is outside the allowed range [{lo}, {hi}] {unit}".rstrip()
        )
    if meta["choices"] and value not in meta["choices"]:
        raise NavigatorConfigError(
            f"parameter {name}: {value!r} is not one of {list(meta['choices'])}"
        )
    return value


def validate_values(values: dict[str, Any]) -> None:
    """Check each of ``values`` on its own (type, range, choices); raise NavigatorConfigError."""
    fields = {f.name: f for f in dataclasses.fields(NavigatorParams)}
    for name, value in values.items():
        if name not in fields:
            raise NavigatorConfigError(f"unknown navigator parameter {name!r}")
        _check(fields[name], value)


PARAMETER_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(NavigatorParams))
READ_ONLY: frozenset[str] = frozenset(
    f.name for f in dataclasses.fields(NavigatorParams) if f.metadata["read_only"]
)
DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(NavigatorParams)}


def descriptor_for(name: str):
    """The rcl_interfaces ParameterDescriptor for parameter ``name`` (imports ROS messages)."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    field = next(f for f in dataclasses.fields(NavigatorParams) if f.name == name)
    meta = field.metadata
    descriptor = ParameterDescriptor(
        name=name, read_only=meta["read_only"],
        description=meta["description"] + (f" [{meta['unit']}]" if meta["unit"] else ""),
    )
    if meta["choices"]:
        descriptor.additional_constraints = "one of: " + ", ".join(meta["choices"])
    if meta["lo"] is not None:
        descriptor.additional_constraints = f"range [{meta['lo']}, {meta['hi']}]"
        if isinstance(field.default, float):
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=float(meta["lo"]), to_value=float(meta["hi"]))
            ]
        else:
            descriptor.integer_range = [
                IntegerRange(from_value=int(meta["lo"]), to_value=int(meta["hi"]), step=1)
            ]
    return descriptor


def declare_parameters(node) -> None:
    """Declare every navigator parameter on ``node``.

    A value from the command line or a params file that has the wrong type or is out of range
    raises NavigatorConfigError naming the parameter (floats must be written with a decimal
    point in YAML: ``1.0``, not ``1``).
    """
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    for name in PARAMETER_NAMES:
        try:
            node.declare_parameter(name, DEFAULTS[name], descriptor_for(name))
        except (InvalidParameterTypeException, InvalidParameterValueException) as err:
            hint = ""
            if isinstance(DEFAULTS[name], float):
                hint = " (write floats with a decimal point, e.g. 1.0)"
            raise NavigatorConfigError(f"parameter {name}: {err}{hint}") from None


def read_parameters(node) -> NavigatorParams:
    """Read every navigator parameter from ``node`` and validate them together."""
    return NavigatorParams.from_mapping(
        {name: node.get_parameter(name).value for name in PARAMETER_NAMES}
    )


def load_params_file(path: str | Path, node_name: str = "navigator") -> dict[str, Any]:
    """The ``ros__parameters`` block for ``node_name`` in a ROS params YAML file.

    Accepts the node name with or without a leading slash, ``/**/<name>`` (any namespace,
    the form config/navigator.yaml uses) and the ``/**`` wildcard.
    """
    import yaml

    path = Path(path)
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise NavigatorConfigError(f"{path}: expected a mapping of node names, got {data!r}")
    for key in ("/**/" + node_name, node_name, "/" + node_name, "/**"):
        block = data.get(key)
        if isinstance(block, dict) and isinstance(block.get("ros__parameters"), dict):
            return dict(block["ros__parameters"])
    raise NavigatorConfigError(
        f"{path}: no '{node_name}: ros__parameters:' block (top-level keys: {sorted(data)})"
    )
