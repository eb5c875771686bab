"""The sim_bridge node's parameters: one dataclass holds every name, default, range and meaning.

:class:`SimBridgeParams` mirrors :class:`sim_bridge.evaluate.EvalConfig` for what decides the
results (split, episode selection, camera, step limit, simulator settings) and adds the ROS side
(topics, frames, handshake timeouts). :meth:`SimBridgeParams.eval_config` turns it into the
EvalConfig the in-process runner would use, so both write the same run directory layout and
``run.json``. Invalid values raise :class:`SimBridgeConfigError` naming the parameter. ROS
parameters cannot be null or empty lists, so "none" is ``-1`` for integers and ``""`` for lists
(comma separated).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import yaml


class SimBridgeConfigError(ValueError):
    """A sim_bridge parameter is invalid; the text names it and says what is allowed."""


def _param(default, description, *, unit="", lo=None, hi=None, choices=None):
    meta = {"description": description, "unit": unit, "lo": lo, "hi": hi,
            "choices": tuple(choices) if choices else None}
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class SimBridgeParams:
    """Every sim_bridge parameter (ROS name = field name); see config/sim_bridge.yaml."""

    # --- the run (the EvalConfig fields; they decide the results and are kept in run.json)
    split: str = _param("", "Episode file (R2R_VLNCE / RxR_VLNCE .json or .json.gz); required")
    gt: str = _param("", "Its _gt file; empty: the sibling <split>_gt.json(.gz) when present")
    languages: str = _param("", "RxR language filter, comma separated (en, hi-IN); empty: all")
    output_dir: str = _param(
        "outputs/sim_eval", "Run directory: run.json, results/shard-*.jsonl, metrics.json/.md"
    )
    policy_label: str = _param(
        "ros:navigator",
        "What drives the episodes, recorded as the run's policy (sim_eval passes the model)",
    )
    backend: str = _param(
        "embedded", "Simulator backend", choices=("embedded", "habitat", "auto")
    )
    width: int = _param(640, "Camera image width", unit="px", lo=8, hi=8192)
    height: int = _param(480, "Camera image height", unit="px", lo=8, hi=8192)
    hfov_deg: float = _param(79.0, "Camera horizontal field of view", unit="deg", lo=1.0,
                             hi=179.0)
    forward_step: float = _param(0.25, "Length of MOVE_FORWARD", unit="m", lo=0.01, hi=5.0)
    turn_angle: float = _param(15.0, "Angle of TURN_LEFT / TURN_RIGHT", unit="deg", lo=0.1,
                               hi=180.0)
    success_distance: float = _param(3.0, "Success radius around the goal", unit="m", lo=0.01,
                                     hi=100.0)
    max_steps: int = _param(500, "Episode step limit (actions, STOP included)", lo=1,
                            hi=1_000_000)
    protocol: str = _param(
        "vlnce", "Evaluation protocol: vlnce (VLN-CE, no forced STOP) or release (the JanusVLN "
        "release: STOP forced at step 400)", choices=("vlnce", "release"),
    )
    force_stop_at: int = _param(
        -1, "release protocol: the 0-based step whose action becomes STOP; -1: the protocol's",
        lo=-1, hi=1_000_000,
    )
    seed: int = _param(0, "Run seed (simulator and per-episode seeds)", lo=0, hi=2**31 - 1)
    limit: int = _param(-1, "Only the first N episodes (sorted by scene, id); -1: all", lo=-1,
                        hi=10**9)
    episode_ids: str = _param("", "Only these episode ids, comma separated; empty: all")
    shard: int = _param(0, "This node's shard index", lo=0, hi=100_000)
    num_shards: int = _param(1, "Number of shards of the run", lo=1, hi=100_000)
    retry_errors: bool = _param(False, "Run again episodes recorded as errors or skipped")
    sim_settings: str = _param(
        "{}", "Other simulator settings as a YAML mapping, e.g. '{furniture: shapes}'"
    )
    # --- ROS interface
    image_topic: str = _param("camera/image_raw", "RGB image output (sensor_msgs/Image rgb8)")
    depth_topic: str = _param(
        "camera/depth/image_raw", "Depth image output (see depth_encoding); empty: off"
    )
    depth_encoding: str = _param(
        "32FC1", "Depth encoding: 32FC1 (metres) or 16UC1 (millimetres)",
        choices=("32FC1", "16UC1"),
    )
    camera_info_topic: str = _param("camera/camera_info", "CameraInfo output; empty: off")
    odom_topic: str = _param("odom", "nav_msgs/Odometry output (the agent pose); empty: off")
    instruction_topic: str = _param(
        "instruction", "Episode instruction output (std_msgs/String, transient local)"
    )
    action_topic: str = _param("navigator/action", "The navigator's discrete action (input)")
    status_topic: str = _param("navigator/status", "The navigator's status records (input)")
    motion_source: str = _param(
        "action",
        "action: execute the navigator's action topic; cmd_vel: execute what its velocity "
        "commands integrate to (each held cmd_vel_period), which must be one discrete step",
        choices=("action", "cmd_vel"),
    )
    cmd_vel_topic: str = _param("cmd_vel", "Velocity commands (input, motion_source cmd_vel)")
    cmd_vel_stamped: bool = _param(False, "cmd_vel is geometry_msgs/TwistStamped, not Twist")
    cmd_vel_period: float = _param(
        0.01, "How long each velocity command is held: 1 / the navigator's control_rate",
        unit="s", lo=0.0001, hi=10.0,
    )
    camera_frame: str = _param("camera_color_optical_frame", "frame_id of images + CameraInfo")
    odom_frame: str = _param("odom", "Odometry frame_id (the scene's world frame, REP 103 axes)")
    base_frame: str = _param("base_link", "Odometry child_frame_id")
    # --- behaviour
    autostart: bool = _param(True, "Start the split at start-up (else wait for ~/start)")
    exit_when_done: bool = _param(False, "Exit (code 0) once every episode has a result")
    ack_timeout: float = _param(
        10.0, "Publish the instruction again if the navigator has not started the episode",
        unit="s", lo=0.1, hi=3600.0,
    )
    step_timeout: float = _param(
        300.0, "Restart the episode when no action (or motion end) comes for this long",
        unit="s", lo=0.1, hi=86400.0,
    )
    max_attempts: int = _param(
        3, "Attempts per episode before it is recorded as an error", lo=1, hi=1000
    )

    def __post_init__(self):
        for field in dataclasses.fields(self):
            object.__setattr__(self, field.name, _check(field, getattr(self, field.name)))
        if not 0 <= self.shard < self.num_shards:
            raise SimBridgeConfigError(
                f"parameter shard: {self.shard} is not in [0, num_shards={self.num_shards})"
            )
        self.sim_mapping()

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> SimBridgeParams:
        """Build from ``{name: value}``; unknown names raise SimBridgeConfigError."""
        unknown = sorted(set(values) - set(PARAMETER_NAMES))
        if unknown:
            raise SimBridgeConfigError(
                f"unknown sim_bridge parameter(s) {unknown}; known: {sorted(PARAMETER_NAMES)}"
            )
        return cls(**values)

    def sim_mapping(self) -> dict[str, Any]:
        """``sim_settings`` parsed (a mapping of SimConfig fields)."""
        try:
            value = yaml.safe_load(self.sim_settings) if self.sim_settings.strip() else {}
        except yaml.YAMLError as err:
            raise SimBridgeConfigError(f"parameter sim_settings: not valid YAML ({err})") from None
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise SimBridgeConfigError(
                f"parameter sim_settings: expected a YAML mapping, got {self.sim_settings!r}"
            )
        return value

    def eval_config(self):
        """The :class:`sim_bridge.evaluate.EvalConfig` of this run (imports sim_bridge)."""
        from sim_bridge.evaluate import EvalConfig, EvalError

        def listed(text: str) -> list[str] | None:
            items = [item.strip() for item in text.split(",") if item.strip()]
            return items or None

        try:
            return EvalConfig(
                policy=self.policy_label, split=self.split, gt=self.gt or None,
                languages=listed(self.languages), backend=self.backend, width=self.width,
                height=self.height, hfov_deg=self.hfov_deg, forward_step=self.forward_step,
                turn_angle=self.turn_angle, success_distance=self.success_distance,
                max_steps=self.max_steps, protocol=self.protocol,
                force_stop_at=None if self.force_stop_at < 0 else self.force_stop_at,
                output_dir=self.output_dir, shard=self.shard, num_shards=self.num_shards,
                limit=None if self.limit < 0 else self.limit,
                episode_ids=listed(self.episode_ids), seed=self.seed,
                retry_errors=self.retry_errors, progress=False, sim=self.sim_mapping(),
            )
        except EvalError as err:
            raise SimBridgeConfigError(str(err)) from None


def _check(field: dataclasses.Field, value: Any) -> Any:
    """Type-check (ints accepted for floats), range-check and choice-check one value."""
    meta, name, kind = field.metadata, field.name, type(field.default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise SimBridgeConfigError(
            f"parameter {name}: expected {kind.__name__}, got {type(value).__name__} {value!r}"
        )
    if kind is float and not math.isfinite(value):
        raise SimBridgeConfigError(f"parameter {name}: must be finite, got {value!r}")
    if meta["lo"] is not None and not meta["lo"] <= value <= meta["hi"]:
        raise SimBridgeConfigError(
            f"parameter {name}: {value!r} is outside [{meta['lo']}, {meta['hi']}] "
            f"{meta['unit']}".rstrip()
        )
    if meta["choices"] and value not in meta["choices"]:
        raise SimBridgeConfigError(
            f"parameter {name}: {value!r} is not one of {list(meta['choices'])}"
        )
    return value


PARAMETER_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(SimBridgeParams))
DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(SimBridgeParams)}


def declare_parameters(node) -> None:
    """Declare every sim_bridge parameter on ``node`` with a descriptor.

    All are read-only: the settings of a run cannot change under a running split.
    """
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    for field in dataclasses.fields(SimBridgeParams):
        meta = field.metadata
        descriptor = ParameterDescriptor(
            name=field.name, read_only=True,
            description=meta["description"] + (f" [{meta['unit']}]" if meta["unit"] else ""),
        )
        if meta["choices"]:
            descriptor.additional_constraints = "one of: " + ", ".join(meta["choices"])
        if meta["lo"] is not None:
            descriptor.additional_constraints = f"range [{meta['lo']}, {meta['hi']}]"
            if isinstance(field.default, float):
                descriptor.floating_point_range = [FloatingPointRange(
                    from_value=float(meta["lo"]), to_value=float(meta["hi"]))]
            else:
                descriptor.integer_range = [IntegerRange(
                    from_value=int(meta["lo"]), to_value=int(meta["hi"]), step=1)]
        try:
            node.declare_parameter(field.name, field.default, descriptor)
        except (InvalidParameterTypeException, InvalidParameterValueException) as err:
            floating = isinstance(field.default, float)
            hint = " (write floats with a decimal point)" if floating else ""
            raise SimBridgeConfigError(f"parameter {field.name}: {err}{hint}") from None


def read_parameters(node) -> SimBridgeParams:
    """Read every sim_bridge parameter from ``node`` and validate them together."""
    return SimBridgeParams.from_mapping(
        {name: node.get_parameter(name).value for name in PARAMETER_NAMES}
    )
