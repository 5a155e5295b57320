"""The simulated camera node (seem_ros_sim_camera) as its own process, received over loopback DDS:
shared headers, sizes, depth and ground truth equal to what seem_ros.sim renders."""
import json
import os
import sys

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed")

from ros_helpers import RosProcess  # noqa: E402

# rosidl's parser (imported by rclpy's type checks) uses lark, which imports deprecated sre_* modules.
pytestmark = pytest.mark.filterwarnings("ignore:module 'sre_:DeprecationWarning")

SCRIPT = os.path.join(os.path.dirname(sys.executable), "seem_ros_sim_camera")
NS = "/simcam_test"
NODE = "sim_camera"


def start_camera(ros_env, **params) -> RosProcess:
    if not os.path.exists(SCRIPT):
        pytest.fail(f"{SCRIPT} missing: run `pip install -e . --no-deps --no-build-isolation`")
    args = [SCRIPT, "--ros-args", "-r", f"__ns:={NS}"]
    for k, v in params.items():
        args += ["-p", f"{k}:={str(v).lower() if isinstance(v, bool) else v}"]
    # One render thread per process: the test machines have 2 cores and other work.
    return RosProcess(args, dict(ros_env, OMP_NUM_THREADS="1"))


class Collector:
    """Subscribes to every topic of the camera; groups messages by header stamp."""

    TOPICS = ("image", "depth", "camera_info", "camera_pose", "instances", "semantic", "objects")

    def __init__(self, ros_node):
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from geometry_msgs.msg import PoseStamped
        from sensor_msgs.msg import CameraInfo, Image
        from std_msgs.msg import String

        self.by_stamp = {}
        gt = f"{NS}/{NODE}/ground_truth"
        reliable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        spec = {"image": (Image, f"{NS}/image", qos_profile_sensor_data),
                "depth": (Image, f"{NS}/depth", qos_profile_sensor_data),
                "camera_info": (CameraInfo, f"{NS}/camera_info", qos_profile_sensor_data),
                "camera_pose": (PoseStamped, f"{NS}/camera_pose", qos_profile_sensor_data),
                "instances": (Image, f"{gt}/instances", reliable),
                "semantic": (Image, f"{gt}/semantic", qos_profile_sensor_data),   # best effort matches too
                "objects": (String, f"{gt}/objects", reliable)}
        self.subs = [ros_node.create_subscription(t, name, self._cb(key), qos)
                     for key, (t, name, qos) in spec.items()]

    def _cb(self, key):
        def cb(msg):
            if key == "objects":
                s = json.loads(msg.data)["stamp"]
                stamp = (s["sec"], s["nanosec"])
            else:
                stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
            self.by_stamp.setdefault(stamp, {})[key] = msg
        return cb

    def complete(self):
        """Frames (dict topic -> message) for which every topic has arrived, oldest first."""
        return [self.by_stamp[s] for s in sorted(self.by_stamp) if len(self.by_stamp[s]) == len(self.TOPICS)]


def receive_frames(ros_node, camera: RosProcess, n: int, timeout: float = 20.0):
    col = Collector(ros_node)
    for sub in col.subs:
        ros_node.wait_for_matched(sub, 1, timeout=15.0)
    ros_node.spin_until(lambda: len(col.complete()) >= n or camera.proc.poll() is not None,
                        timeout=timeout, what=f"{n} complete frames")
    frames = col.complete()
    assert len(frames) >= n, camera.output
    return frames


def check_frame(f, width, height, frame_id, depth_encoding):
    """Headers, sizes and ground-truth consistency of one received frame; returns its arrays."""
    from seem_ros.ros.conversions import (camera_info_from_msg, image_to_depth, image_to_labels,
                                          image_to_rgb)

    img, depth, info = f["image"], f["depth"], f["camera_info"]
    assert img.header == depth.header == info.header == f["instances"].header == f["semantic"].header
    assert img.header.frame_id == frame_id
    assert (img.encoding, depth.encoding) == ("rgb8", depth_encoding)
    for m in (img, depth, info, f["instances"], f["semantic"]):
        assert (m.width, m.height) == (width, height)
    K, w, h = camera_info_from_msg(info)
    assert (w, h) == (width, height)

    gt = json.loads(f["objects"].data)
    assert gt["stamp"] == {"sec": img.header.stamp.sec, "nanosec": img.header.stamp.nanosec}
    assert gt["frame_id"] == frame_id and (gt["width"], gt["height"]) == (width, height)
    instances = image_to_labels(f["instances"])
    semantic = image_to_labels(f["semantic"])
    assert f["instances"].encoding == "16UC1" and f["semantic"].encoding == "mono8"
    # The instance image's ids are exactly the visible objects of the JSON, pixel counts and boxes too.
    objs = {o["id"]: o for o in gt["objects"]}
    ids, counts = np.unique(instances, return_counts=True)
    seen = {int(i): int(c) for i, c in zip(ids, counts) if i != 0}
    assert seen, "no object visible"
    assert seen == {i: o["visible_pixels"] for i, o in objs.items() if o["visible_pixels"] > 0}
    for i, o in objs.items():
        if i not in seen:
            assert o["bbox"] is None
            continue
        v, u = np.nonzero(instances == i)
        assert o["bbox"] == [u.min(), v.min(), u.max(), v.max()]
        assert np.all(semantic[instances == i] == o["class_id"])
        assert gt["class_names"][o["class_id"]] == o["class_name"]
        assert len(o["position"]) == 3 and len(o["quaternion"]) == 4
        assert abs(np.linalg.norm(o["quaternion"]) - 1) < 1e-6
    pose = f["camera_pose"]
    assert pose.header.stamp == img.header.stamp and pose.header.frame_id == "world"
    p, q = pose.pose.position, pose.pose.orientation
    T = np.eye(4)
    T[:3, 3] = (p.x, p.y, p.z)
    T[:3, :3] = _rotation(q.x, q.y, q.z, q.w)
    return {"rgb": image_to_rgb(img), "depth": image_to_depth(depth), "K": K, "instances": instances,
            "semantic": semantic, "gt": gt, "T_world_cam": T}


def _rotation(x, y, z, w):
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def test_static_scene_matches_the_renderer(ros_env, ros_node):
    from seem_ros.sim import make_scene, render

    seed, width, height = 3, 160, 120
    with start_camera(ros_env, static=True, seed=seed, width=width, height=height, rate=20.0) as cam:
        frames = receive_frames(ros_node, cam, 2)
        assert cam.stop() == 0, cam.output                             # clean exit on SIGINT
    assert "Traceback" not in cam.output, cam.output

    expected = render(make_scene(seed, width, height))
    a, b = frames[0], frames[-1]
    assert (a["image"].header.stamp.sec, a["image"].header.stamp.nanosec) < \
           (b["image"].header.stamp.sec, b["image"].header.stamp.nanosec)   # fresh stamps each time
    for f in (a, b):
        got = check_frame(f, width, height, "sim_camera_color_optical_frame", "32FC1")
        np.testing.assert_array_equal(got["depth"], expected.depth)       # metres, bit for bit
        np.testing.assert_array_equal(got["rgb"], expected.rgb)
        np.testing.assert_array_equal(got["instances"], expected.instance)
        np.testing.assert_array_equal(got["semantic"], expected.semantic)
        np.testing.assert_array_equal(got["K"], expected.K)
        np.testing.assert_allclose(got["T_world_cam"], expected.T_world_cam, atol=1e-9)
        for o in expected.objects:
            j = next(x for x in got["gt"]["objects"] if x["id"] == o.id)
            np.testing.assert_allclose(j["position"], o.position, atol=1e-12)
            np.testing.assert_allclose(j["quaternion"], o.quaternion, atol=1e-12)
            assert j["phrase"] == o.phrase and j["colour"] == o.colour


def test_sequence_frames_with_16bit_depth(ros_env, ros_node):
    """A moving sequence: each received frame is the sequence frame its JSON index names; 16UC1
    depth is that frame's depth to the millimetre; `rate` given as an integer is accepted."""
    from seem_ros.sim import make_sequence

    seed, width, height, n = 5, 96, 72, 6
    with start_camera(ros_env, seed=seed, width=width, height=height, n_frames=n, loop=True, rate=20,
                      depth_encoding="16UC1", frame_id="my_cam") as cam:
        frames = receive_frames(ros_node, cam, 3)
        assert cam.stop() == 0, cam.output
    seq = make_sequence(seed, n, width, height)
    indices = []
    for f in frames[:3]:
        got = check_frame(f, width, height, "my_cam", "16UC1")
        idx = got["gt"]["index"]
        indices.append(idx)
        expected = seq.render(idx)
        np.testing.assert_allclose(got["depth"], expected.depth, atol=0.0005 + 1e-6)
        np.testing.assert_array_equal(got["instances"], expected.instance)
        np.testing.assert_array_equal(got["rgb"], expected.rgb)
        np.testing.assert_allclose(got["T_world_cam"], expected.T_world_cam, atol=1e-9)   # the camera moves
    assert all(0 <= i < n for i in indices) and len(set(indices)) == len(indices)


@pytest.mark.parametrize("param,value,words", [("depth_encoding", "16UC2", "depth_encoding must be one of"),
                                                ("width", "abc", "width"),
                                                ("rate", "0.0", "rate must be > 0")])
def test_bad_parameters_log_an_error_and_exit(ros_env, param, value, words):
    with start_camera(ros_env, **{param: value}) as cam:
        line = cam.wait_for_line("bad parameters", timeout=20.0)
        assert cam.proc.wait(10) == 2
    assert words in line
    assert "Traceback" not in cam.output, cam.output
