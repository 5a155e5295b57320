"""Synthetic RGB-D tabletop world with exact ground truth (pure numpy, no ROS). See README.md.

    from seem_ros.sim import make_scene, render, make_sequence
    frame = render(make_scene(seed=3))            # rgb, depth, instance, semantic, K, poses
    for frame in make_sequence(seed=3, n_frames=60): ...
"""
from .camera import Camera, backproject, camera_info, intrinsics, look_at, quat_from_R
from .render import Frame, ObjectState, render
from .scene import (CLASS_NAMES, COLOUR_NAMES, COLOURS, TABLE_CLASS, Scene, SceneObject, class_id,
                    make_scene, phrase)
from .sequence import Sequence, make_sequence
from .shapes import SHAPES, make_shape, random_shape

__all__ = ["Camera", "backproject", "camera_info", "intrinsics", "look_at", "quat_from_R", "Frame",
           "ObjectState", "render", "CLASS_NAMES", "COLOUR_NAMES", "COLOURS", "TABLE_CLASS", "Scene",
           "SceneObject", "class_id", "make_scene", "phrase", "Sequence", "make_sequence", "SHAPES",
           "make_shape", "random_shape"]
