"""ROS 2 side of seem_ros: message conversions and nodes (needs rclpy and the ROS message packages)."""
