"""Pure-numpy geometry (no ROS, no torch): depth conversion, pinhole camera, support plane, object poses."""
from .camera import PinholeCamera, backproject, pixel_in_image, project
from .depth import DEFAULT_MAX_RANGE, depth_to_metres
from .plane import SupportPlane, fit_support_plane
from .pose import UP_OPTICAL, ObjectPose, estimate_pose, quat_from_R

__all__ = ["PinholeCamera", "backproject", "pixel_in_image", "project", "DEFAULT_MAX_RANGE",
           "depth_to_metres", "UP_OPTICAL", "ObjectPose", "estimate_pose", "quat_from_R", "SupportPlane",
           "fit_support_plane"]
