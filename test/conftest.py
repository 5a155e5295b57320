import os
import sys

# Tests run on CPU with a fixed thread count so timings and numerics are stable.
os.environ.setdefault("OMP_NUM_THREADS", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# ROS 2 test fixtures (ros_env, ros_node) for every test module; see test/ros_helpers.py.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ros_helpers import ros_env, ros_node  # noqa: E402,F401
