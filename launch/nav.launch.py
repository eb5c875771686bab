"""Run the JanusVLN navigator on a robot: ``ros2 launch janus_vln_ros nav.launch.py model:=...``.

Needs a full ROS 2 install (launch, launch_ros are not on PyPI). Without one, start the same
executable with the same parameters, as test/janus_vln_ros/test_nav_launch.py does:
``navigator --ros-args -r __node:=navigator -r __ns:=/<ns> --params-file
<share>/config/navigator.yaml -p model:=<model> -p autostart:=true`` with
FASTDDS_DEFAULT_PROFILES_FILE=<share>/config/fastdds_shm.xml.

The node configures and activates itself (``autostart``); the Fast DDS SHM profile is set so
that camera images over 512 KiB are not dropped (ros2-env.md section 2.3).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    share = FindPackageShare("janus_vln_ros")
    arguments = [
        DeclareLaunchArgument(
            "model",
            description="Policy: checkpoint directory | tiny | full | random | forward | "
            "constant:<ACTION> (required: nothing drives without an explicit choice)",
        ),
        DeclareLaunchArgument("namespace", default_value="", description="Robot namespace"),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([share, "config", "navigator.yaml"]),
            description="Navigator parameters (YAML)",
        ),
        DeclareLaunchArgument(
            "enable_stamped_cmd_vel", default_value="false",
            description="Publish TwistStamped instead of Twist on cmd_vel",
        ),
        DeclareLaunchArgument(
            "image_topic", default_value="camera/image_raw", description="Camera topic"
        ),
        DeclareLaunchArgument(
            "image_transport", default_value="raw",
            description="raw (sensor_msgs/Image) or compressed (<image_topic>/compressed)",
        ),
        DeclareLaunchArgument(
            "instruction_topic", default_value="instruction",
            description="Instruction topic (std_msgs/String, transient local)",
        ),
        DeclareLaunchArgument(
            "autostart", default_value="true", description="Configure and activate at start-up"
        ),
        DeclareLaunchArgument(
            "debug_image", default_value="false",
            description="Publish ~/debug_image: each step's frame with instruction, action, "
            "probabilities (RViz / Foxglove)",
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
    navigator = Node(
        package="janus_vln_ros",
        executable="navigator",
        name="navigator",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "model": ParameterValue(LaunchConfiguration("model"), value_type=str),
                "enable_stamped_cmd_vel": ParameterValue(
                    LaunchConfiguration("enable_stamped_cmd_vel"), value_type=bool
                ),
                "image_topic": ParameterValue(LaunchConfiguration("image_topic"), value_type=str),
                "image_transport": ParameterValue(
                    LaunchConfiguration("image_transport"), value_type=str
                ),
                "instruction_topic": ParameterValue(
                    LaunchConfiguration("instruction_topic"), value_type=str
                ),
                "autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool),
                "debug_image": ParameterValue(
                    LaunchConfiguration("debug_image"), value_type=bool
                ),
            },
        ],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
    )
    return LaunchDescription([
        *arguments,
        SetEnvironmentVariable(
            "FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("fastdds_profile")
        ),
        navigator,
    ])
