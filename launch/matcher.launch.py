"""Start the SuperGlue matcher node: `ros2 launch superglue_ros matcher.launch.py image:=/camera/image_raw`.

Parameters come from config/matcher.yaml (or `params_file:=...`); the common
ones can be overridden as launch arguments. Outputs appear under the
`namespace` argument (default /superglue): /superglue/matches,
/superglue/homography, /superglue/debug_image.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = {
    "mode": ("sequential", "stereo, sequential or keyframe"),
    "weights": ("auto", "auto, indoor, outdoor, sift_open or sift_open_large"),
    "weights_dir": ("", "folder with the weight files"),
    "device": ("cpu", "cpu, cuda or cuda:N"),
    "backend": ("torch", "torch or onnxruntime"),
    "max_keypoints": ("1024", "SuperPoint keypoint budget per image"),
    "input_type": ("raw", "raw (sensor_msgs/Image) or compressed"),
}
TOPICS = {
    "image": ("/camera/image_raw", "camera topic (sequential and keyframe modes)"),
    "left_image": ("/stereo/left/image_rect", "left camera topic (stereo mode)"),
    "right_image": ("/stereo/right/image_rect", "right camera topic (stereo mode)"),
}


def generate_launch_description() -> LaunchDescription:
    default_params = PathJoinSubstitution([FindPackageShare("superglue_ros"), "config", "matcher.yaml"])
    declared = [DeclareLaunchArgument("params_file", default_value=default_params,
                                      description="parameter YAML file"),
                DeclareLaunchArgument("namespace", default_value="superglue",
                                      description="namespace of the node and its output topics")]
    declared += [DeclareLaunchArgument(name, default_value=default, description=text)
                 for name, (default, text) in {**ARGUMENTS, **TOPICS}.items()]
    overrides = {name: LaunchConfiguration(name) for name in ARGUMENTS if name != "max_keypoints"}
    overrides["max_keypoints"] = ParameterValue(LaunchConfiguration("max_keypoints"), value_type=int)
    compressed_suffix = "/compressed"
    remappings = []
    for name, topic in (("image", "image"), ("left_image", "left/image"), ("right_image", "right/image")):
        remappings.append((topic, LaunchConfiguration(name)))
        remappings.append((topic + compressed_suffix, [LaunchConfiguration(name), compressed_suffix]))
    node = Node(package="superglue_ros", executable="matcher_node", name="superglue_matcher",
                namespace=LaunchConfiguration("namespace"), output="screen",
                parameters=[LaunchConfiguration("params_file"), overrides], remappings=remappings)
    return LaunchDescription([*declared, node])
