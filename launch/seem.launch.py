"""seem_node (and, with sim:=true, the simulated RGB-D camera feeding it).

    ros2 launch seem_ros seem.launch.py camera_ns:=/camera
    ros2 launch seem_ros seem.launch.py sim:=true

The node's inputs are remapped to <camera_ns>/{image,depth,camera_info,camera_pose} (camera_pose:
the sim camera's pose; a real camera's comes from tf with the node's fixed_frame parameter)."""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node


def generate_launch_description():
    share = get_package_share_directory("seem_ros")
    ns = LaunchConfiguration("camera_ns")
    return LaunchDescription([
        DeclareLaunchArgument("camera_ns", default_value="/camera"),
        DeclareLaunchArgument("params", default_value=os.path.join(share, "config", "seem_node.yaml")),
        DeclareLaunchArgument("sim", default_value="false", description="also start the simulated camera"),
        Node(package="seem_ros", executable="sim_camera", name="sim_camera", namespace=ns,
             parameters=[{"rate": 5.0}], condition=IfCondition(LaunchConfiguration("sim"))),
        LifecycleNode(package="seem_ros", executable="seem_node", name="seem_node", namespace="",
                      parameters=[LaunchConfiguration("params")], output="screen",
                      remappings=[("image", [ns, "/image"]), ("image/compressed", [ns, "/image/compressed"]),
                                  ("depth", [ns, "/depth"]), ("camera_info", [ns, "/camera_info"]),
                                  ("camera_pose", [ns, "/camera_pose"])]),
    ])
