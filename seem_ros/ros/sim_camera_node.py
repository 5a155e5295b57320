"""Simulated RGB-D camera: publishes the synthetic tabletop world (seem_ros.sim) as a robot camera
driver would, plus the ground truth that tests need.

    seem_ros_sim_camera --ros-args -p seed:=3 -p rate:=5.0 -p width:=640 -p height:=480
    python -m seem_ros.ros.sim_camera_node --ros-args -p static:=true -r __ns:=/camera

Topics (relative, so a namespace or remap places them; all with the SAME header per frame):
    image        sensor_msgs/Image rgb8
    depth        sensor_msgs/Image, registered to the colour image (the same pinhole camera):
                 32FC1 metres, NaN = no reading, or 16UC1 millimetres, 0 = no reading
    camera_info  sensor_msgs/CameraInfo (plumb_bob, no distortion)
    camera_pose  geometry_msgs/PoseStamped: the optical frame's pose in `world_frame` (what a
                 robot's tf or a visual odometry gives; seem_node's ~camera_pose input)
  sensor-data QoS (best effort, keep last 1), as camera drivers publish.
Ground truth, under the node's private namespace (~/ground_truth/...), reliable keep-last-1 (a
best-effort or reliable subscriber both match); built only while someone subscribes:
    instances    sensor_msgs/Image 16UC1: object id per pixel, 0 = background and table
    semantic     sensor_msgs/Image mono8: index into seem_ros.sim.CLASS_NAMES
    objects      std_msgs/String, JSON:
        {"stamp": {"sec", "nanosec"}, "frame_id", "index" (frame of the sequence), "width", "height",
         "class_names": [...],
         "objects": [{"id", "class_id", "class_name", "shape", "colour", "phrase", "visible_pixels",
                      "bbox": [x_min, y_min, x_max, y_max] (inclusive pixels; null when not visible),
                      "position": [x, y, z] (m), "quaternion": [x, y, z, w], "size": [sx, sy, sz] (m),
                      "support" (0: on the table, else the id of the object below)}]}
        every object of the scene, visible or not; poses in the optical frame (frame_id) of the
        object's own bounding-box centre (see seem_ros/sim/README.md).

Parameters (read-only once started): seed (0), width (640), height (480), rate (5.0 Hz, wall
clock), n_frames (60: length of the sequence), loop (true: restart the sequence at its end; false:
stop publishing there), static (false; true: one still scene, rendered once and re-published with
fresh stamps), frame_id ("sim_camera_color_optical_frame"), world_frame ("world": camera_pose's
frame), depth_encoding ("32FC1" | "16UC1").
Stamps come from the node clock: wall time, or /clock with use_sim_time:=true.

Frames of a sequence are published in order (index 0, 1, 2, ...) whatever the machine's speed:
when rendering (~50-65 ms at 640x480 on one core) is slower than the rate, timer ticks are skipped
rather than queued, so the published rate drops and nothing lags behind.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Optional

import numpy as np
import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header, String

from seem_ros import sim
from seem_ros.ros.conversions import (camera_info_to_msg, depth_to_image, labels_to_image,
                                      rgb_to_image)
from seem_ros.ros.process_tuning import tune_process

DEFAULT_FRAME_ID = "sim_camera_color_optical_frame"
WORLD_FRAME_ID = "world"
DEPTH_ENCODINGS = ("32FC1", "16UC1")
MAX_SIZE = 8192


class ParameterError(ValueError):
    """A parameter value the node cannot run with."""


def pose_msg(T: np.ndarray) -> PoseStamped:
    """A 4x4 pose as PoseStamped (header set by the caller)."""
    m = PoseStamped()
    m.pose.position.x, m.pose.position.y, m.pose.position.z = (float(v) for v in T[:3, 3])
    q = sim.quat_from_R(T[:3, :3])
    m.pose.orientation.x, m.pose.orientation.y, m.pose.orientation.z, m.pose.orientation.w = (float(v) for v in q)
    return m


def objects_json(frame: "sim.Frame", header: Header) -> str:
    """The ground-truth JSON of one frame (format in the module docstring)."""
    objs = []
    for o in frame.objects:
        objs.append({
            "id": int(o.id), "class_id": int(o.class_id), "class_name": o.class_name,
            "shape": o.shape_name, "colour": o.colour, "phrase": o.phrase,
            "visible_pixels": int(o.visible_pixels),
            "bbox": [int(v) for v in o.bbox] if o.bbox is not None and o.visible_pixels > 0 else None,
            "position": [float(v) for v in o.position], "quaternion": [float(v) for v in o.quaternion],
            "size": [float(v) for v in o.size], "support": int(o.support)})
    return json.dumps({"stamp": {"sec": int(header.stamp.sec), "nanosec": int(header.stamp.nanosec)},
                       "frame_id": header.frame_id, "index": int(frame.index), "width": int(frame.width),
                       "height": int(frame.height), "class_names": list(sim.CLASS_NAMES), "objects": objs})


class SimCameraNode(Node):
    def __init__(self, name: str = "sim_camera", **kwargs):
        super().__init__(name, **kwargs)
        self._read_parameters()
        p = self.p

        # Scene generation can fail on odd sizes; report it as a parameter problem, not a traceback.
        try:
            if p["static"]:
                self._scene = sim.make_scene(p["seed"], p["width"], p["height"])
                self._sequence = None
            else:
                self._scene = None
                self._sequence = sim.make_sequence(p["seed"], p["n_frames"], p["width"], p["height"], p["rate"])
        except Exception as e:  # noqa: BLE001 - any failure here is the parameters' fault
            raise ParameterError(f"cannot build the simulated world from seed={p['seed']} "
                                 f"{p['width']}x{p['height']}: {e}") from e

        self.pub_image = self.create_publisher(Image, "image", qos_profile_sensor_data)
        self.pub_depth = self.create_publisher(Image, "depth", qos_profile_sensor_data)
        self.pub_info = self.create_publisher(CameraInfo, "camera_info", qos_profile_sensor_data)
        self.pub_pose = self.create_publisher(PoseStamped, "camera_pose", qos_profile_sensor_data)
        gt_qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_instances = self.create_publisher(Image, "~/ground_truth/instances", gt_qos)
        self.pub_semantic = self.create_publisher(Image, "~/ground_truth/semantic", gt_qos)
        self.pub_objects = self.create_publisher(String, "~/ground_truth/objects", gt_qos)

        self._index = 0                       # next frame of the sequence
        self._cache = None                    # static mode: (frame, messages) rendered once
        self._published = 0
        self._skipped = 0
        self._period = 1.0 / p["rate"]
        self._t0: Optional[float] = None
        self._last_tick: Optional[int] = None
        self._failed = False
        # A steady clock: the rate is a wall-clock rate (rendering costs wall-clock time), and a
        # timer on ROS time would never fire under use_sim_time without a /clock publisher.
        self._timer = self.create_timer(self._period, self._tick, clock=Clock(clock_type=ClockType.STEADY_TIME))
        what = (f"static scene seed {p['seed']}" if p["static"] else
                f"sequence seed {p['seed']}, {p['n_frames']} frames{', looping' if p['loop'] else ''}")
        self.get_logger().info(f"publishing {p['width']}x{p['height']} at {p['rate']:g} Hz ({what}), "
                               f"depth {p['depth_encoding']}, frame_id {p['frame_id']!r}")

    # ------------------------------------------------------------------------------------------
    def _read_parameters(self) -> None:
        ro = dict(read_only=True)
        spec = {  # name: (default, description)
            "seed": (0, "seed of the scene / sequence"),
            "width": (640, "image width (pixels)"),
            "height": (480, "image height (pixels)"),
            "n_frames": (60, "frames in the sequence (one period of its motions)"),
            "loop": (True, "restart the sequence at its end (false: stop publishing)"),
            "static": (False, "one still scene, rendered once and re-published"),
            "frame_id": (DEFAULT_FRAME_ID, "header.frame_id of every message (camera_pose: world_frame)"),
            "world_frame": (WORLD_FRAME_ID, "frame of camera_pose (the world the scene is built in)"),
            "depth_encoding": ("32FC1", "32FC1 (metres) or 16UC1 (millimetres)"),
        }
        p = {}
        try:
            for name, (default, desc) in spec.items():
                p[name] = self.declare_parameter(name, default, ParameterDescriptor(description=desc, **ro)).value
            # Dynamic typing: `-p rate:=5` (an integer) is as good as 5.0.
            rate = self.declare_parameter("rate", 5.0, ParameterDescriptor(
                description="publishing rate (Hz, wall clock)", dynamic_typing=True, **ro))
        except Exception as e:  # noqa: BLE001 - rclpy raises several types for bad overrides
            raise ParameterError(str(e)) from e
        if rate.type_ not in (rate.Type.DOUBLE, rate.Type.INTEGER):
            raise ParameterError(f"rate must be a number (Hz), got {rate.value!r}")
        p["rate"] = float(rate.value)
        if not (np.isfinite(p["rate"]) and p["rate"] > 0):
            raise ParameterError(f"rate must be > 0 Hz, got {p['rate']}")
        for name in ("width", "height"):
            if not 8 <= p[name] <= MAX_SIZE:
                raise ParameterError(f"{name} must be in [8, {MAX_SIZE}], got {p[name]}")
        if p["n_frames"] < 1:
            raise ParameterError(f"n_frames must be >= 1, got {p['n_frames']}")
        if p["seed"] < 0:
            raise ParameterError(f"seed must be >= 0, got {p['seed']}")
        if p["depth_encoding"] not in DEPTH_ENCODINGS:
            raise ParameterError(f"depth_encoding must be one of {', '.join(DEPTH_ENCODINGS)}, "
                                 f"got {p['depth_encoding']!r}")
        if not p["frame_id"]:
            raise ParameterError("frame_id must not be empty")
        self.p = p

    # ------------------------------------------------------------------------------------------
    def _count_skipped(self) -> None:
        """rcl's timer already drops missed periods; count them to say so in the log."""
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        tick = int((now - self._t0) / self._period + 0.5)
        if self._last_tick is not None and tick > self._last_tick + 1:
            self._skipped += tick - self._last_tick - 1
            self.get_logger().warning(
                f"rendering is slower than {self.p['rate']:g} Hz: {self._skipped} ticks skipped so far",
                throttle_duration_sec=10.0)
        self._last_tick = tick

    def _render(self):
        if self._sequence is not None:
            return self._sequence.render(self._index)
        return sim.render(self._scene)

    def _build(self, frame) -> dict:
        """Messages of one frame; _tick sets their (shared) header."""
        return {"image": rgb_to_image(frame.rgb),
                "depth": depth_to_image(frame.depth, None, self.p["depth_encoding"]),
                "camera_info": camera_info_to_msg(frame.camera_info),
                "camera_pose": pose_msg(frame.T_world_cam)}

    def _tick(self) -> None:
        if self._failed:
            return
        self._count_skipped()
        # Stamped at the tick (the "shutter"), before rendering: like a driver stamping at capture,
        # so render time shows up as latency rather than shifting the image in time.
        stamp = self.get_clock().now().to_msg()
        try:
            if self._sequence is not None and self._index >= self.p["n_frames"]:
                if not self.p["loop"]:
                    self.get_logger().info(f"sequence finished after {self.p['n_frames']} frames")
                    self._timer.cancel()
                    return
                self._index = 0
            if self._cache is None:
                frame = self._render()
                msgs = self._build(frame)
                if self._sequence is None:
                    self._cache = (frame, msgs)
            else:
                frame, msgs = self._cache
            header = Header(frame_id=self.p["frame_id"], stamp=stamp)
            for m in msgs.values():
                m.header = header
            msgs["camera_pose"].header = Header(frame_id=self.p["world_frame"], stamp=stamp)
            self.pub_pose.publish(msgs["camera_pose"])     # first: the node pairs it with the image
            self.pub_image.publish(msgs["image"])
            self.pub_depth.publish(msgs["depth"])
            self.pub_info.publish(msgs["camera_info"])
            self._publish_ground_truth(frame, header)
        except Exception as e:  # noqa: BLE001 - deterministic: it would fail on every tick
            self._failed = True
            self._timer.cancel()
            self.get_logger().error(f"rendering/publishing frame {self._index} failed, stopping: "
                                    f"{type(e).__name__}: {e}")
            return
        self._index += 1
        self._published += 1

    def _publish_ground_truth(self, frame, header: Header) -> None:
        # Ground truth costs conversions (and JSON) on every frame: only when someone listens.
        if self.pub_instances.get_subscription_count():
            self.pub_instances.publish(labels_to_image(frame.instance, header, "16UC1"))
        if self.pub_semantic.get_subscription_count():
            self.pub_semantic.publish(labels_to_image(frame.semantic, header, "mono8"))
        if self.pub_objects.get_subscription_count():
            self.pub_objects.publish(String(data=objects_json(frame, header)))


def main(args=None) -> int:
    tune_process()           # our frames are 0.3-3 MB each: see process_tuning
    rclpy.init(args=args)
    node = None
    rc = 0
    try:
        node = SimCameraNode()
        rclpy.spin(node)
    except ParameterError as e:
        rclpy.logging.get_logger("sim_camera").error(f"bad parameters: {e}")
        rc = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return rc


if __name__ == "__main__":
    sys.exit(main())
