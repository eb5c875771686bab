"""VLN-CE evaluation through ROS: the simulator bridge and the navigator for one split.

``ros2 launch janus_vln_ros sim_eval.launch.py model:=<policy> split:=<episode file>``

Starts the ``sim_bridge`` node (the simulator behind the robot's topics; it runs the split and
writes the resumable results file) and the ``navigator`` node (the policy, exactly as on a
robot). When the bridge has a result for every episode it exits, and the launch shuts down.

Needs a full ROS 2 install (launch, launch_ros are not on PyPI). Without one, ``janus-vln
sim-eval --model ... --split ...`` starts the same executables with the same node names,
parameter files and overrides (test/janus_vln_ros/test_sim_eval_launch.py checks both agree).

Parameter files, in order: the node's own (config/navigator.yaml, config/sim_bridge.yaml), then
the evaluation profile config/sim_eval.yaml, then the launch arguments below.
``model:=expert:ros`` drives the episodes with the simulator's shortest-path expert asked over
the bridge's ``~/expert_action`` service (an upper bound and an end-to-end check).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable, Shutdown
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    share = FindPackageShare("janus_vln_ros")
    arguments = [
        DeclareLaunchArgument(
            "model",
            description="Navigator policy: checkpoint directory | tiny | full | random | forward "
            "| expert:ros (required)",
        ),
        DeclareLaunchArgument(
            "split", description="Episode file: R2R_VLNCE / RxR_VLNCE .json(.gz) (required)"
        ),
        DeclareLaunchArgument(
            "output_dir", default_value="outputs/sim_eval",
            description="Run directory (resumable results file, metrics.json/.md)",
        ),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of both nodes"),
        DeclareLaunchArgument(
            "backend", default_value="embedded", description="embedded | habitat | auto"
        ),
        DeclareLaunchArgument(
            "protocol", default_value="vlnce",
            description="vlnce (VLN-CE, no forced STOP) | release (JanusVLN release: STOP at 400)",
        ),
        DeclareLaunchArgument("width", default_value="640", description="Camera width (px)"),
        DeclareLaunchArgument("height", default_value="480", description="Camera height (px)"),
        DeclareLaunchArgument(
            "forward_step", default_value="0.25", description="MOVE_FORWARD length (m)"
        ),
        DeclareLaunchArgument("turn_angle", default_value="15.0", description="Turn angle (deg)"),
        DeclareLaunchArgument(
            "max_steps", default_value="500", description="Episode step limit (both nodes)"
        ),
        DeclareLaunchArgument(
            "limit", default_value="-1",
            description="Only the first N episodes (sorted by scene, id); -1: all"
        ),
        DeclareLaunchArgument(
            "episode_ids", default_value="", description="Only these ids, comma separated"
        ),
        DeclareLaunchArgument(
            "sim_settings", default_value="{}",
            description="Other simulator settings as YAML, e.g. '{furniture: shapes}'",
        ),
        DeclareLaunchArgument(
            "navigator_params",
            default_value=PathJoinSubstitution([share, "config", "navigator.yaml"]),
            description="Navigator parameters (YAML)",
        ),
        DeclareLaunchArgument(
            "sim_bridge_params",
            default_value=PathJoinSubstitution([share, "config", "sim_bridge.yaml"]),
            description="sim_bridge parameters (YAML)",
        ),
        DeclareLaunchArgument(
            "eval_params",
            default_value=PathJoinSubstitution([share, "config", "sim_eval.yaml"]),
            description="Evaluation profile for both nodes (YAML), applied after their own",
        ),
        DeclareLaunchArgument(
            "fastdds_profile",
            default_value=EnvironmentVariable(
                "FASTDDS_DEFAULT_PROFILES_FILE",
                default_value=PathJoinSubstitution([share, "config", "fastdds_shm.xml"]),
            ),
            description="Fast DDS XML profile (16 MiB SHM segments for large images)",
        ),
        DeclareLaunchArgument("log_level", default_value="info", description="Node log level"),
    ]
    sim_bridge = Node(
        package="janus_vln_ros",
        executable="sim_bridge",
        name="sim_bridge",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[
            LaunchConfiguration("sim_bridge_params"),
            LaunchConfiguration("eval_params"),
            {
                "split": ParameterValue(LaunchConfiguration("split"), value_type=str),
                "output_dir": ParameterValue(LaunchConfiguration("output_dir"), value_type=str),
                "policy_label": ParameterValue(LaunchConfiguration("model"), value_type=str),
                "backend": ParameterValue(LaunchConfiguration("backend"), value_type=str),
                "protocol": ParameterValue(LaunchConfiguration("protocol"), value_type=str),
                "width": ParameterValue(LaunchConfiguration("width"), value_type=int),
                "height": ParameterValue(LaunchConfiguration("height"), value_type=int),
                "forward_step": ParameterValue(
                    LaunchConfiguration("forward_step"), value_type=float
                ),
                "turn_angle": ParameterValue(LaunchConfiguration("turn_angle"), value_type=float),
                "max_steps": ParameterValue(LaunchConfiguration("max_steps"), value_type=int),
                "limit": ParameterValue(LaunchConfiguration("limit"), value_type=int),
                "episode_ids": ParameterValue(LaunchConfiguration("episode_ids"), value_type=str),
                "sim_settings": ParameterValue(
                    LaunchConfiguration("sim_settings"), value_type=str
                ),
                "exit_when_done": True,
            },
        ],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
        on_exit=Shutdown(reason="sim_bridge exited (split finished or failed)"),
    )
    navigator = Node(
        package="janus_vln_ros",
        executable="navigator",
        name="navigator",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[
            LaunchConfiguration("navigator_params"),
            LaunchConfiguration("eval_params"),
            {
                "model": ParameterValue(LaunchConfiguration("model"), value_type=str),
                "autostart": True,
                "forward_distance": ParameterValue(
                    LaunchConfiguration("forward_step"), value_type=float
                ),
                "turn_angle": ParameterValue(LaunchConfiguration("turn_angle"), value_type=float),
                "max_steps": ParameterValue(LaunchConfiguration("max_steps"), value_type=int),
            },
        ],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
    )
    return LaunchDescription([
        *arguments,
        SetEnvironmentVariable(
            "FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("fastdds_profile")
        ),
        sim_bridge,
        navigator,
    ])
