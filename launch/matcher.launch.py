"""Start the SuperGlue matcher node: `ros2 launch superglue_ros matcher.launch.py image:=/camera/image_raw`.

Parameters come from config/matcher.yaml (or `params_file:=...`); an argument
given on the command line overrides the file, one not given never does. The
node is a lifecycle node that configures and activates itself (`autostart`,
default true). Outputs appear under the `namespace` argument (default
/superglue): /superglue/matches, /superglue/homography, /superglue/debug_image.
If the node exits with an error (it could not configure), the launch shuts
down with that reason. The argument logic lives in
superglue_ros.ros.launch_arguments (tested without `launch`).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, LogInfo, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from superglue_ros.ros.launch_arguments import (NAMESPACE, NODE_NAME, declared_arguments, exit_reason,
                                                node_parameters, parameter_overrides, remapping_warnings,
                                                remappings)


def launch_setup(context, *args, **kwargs):
    given = {name: LaunchConfiguration(name).perform(context) for name in declared_arguments()}
    params_file = given["params_file"] or \
        FindPackageShare("superglue_ros").perform(context) + "/config/matcher.yaml"
    node = Node(package="superglue_ros", executable="matcher_node", name=NODE_NAME,
                namespace=given["namespace"] or NAMESPACE, output="screen",
                parameters=node_parameters(params_file, given), remappings=remappings(given))
    cameras = parameter_overrides(given).get("cameras", [])
    warnings = [LogInfo(msg=f"warning: {text}") for text in remapping_warnings(given, cameras)]
    return [*warnings, node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=shutdown_on_error))]


def shutdown_on_error(event, context):
    reason = exit_reason(event.returncode)
    return [EmitEvent(event=Shutdown(reason=reason))] if reason else []


def generate_launch_description() -> LaunchDescription:
    declared = [DeclareLaunchArgument(name, default_value="", description=text)
                for name, text in declared_arguments().items()]
    return LaunchDescription([*declared, OpaqueFunction(function=launch_setup)])
