"""seem_ros interfaces (msg/, srv/): generated with rosidl, importable, and carried intact between
two processes over DDS (localhost only, own domain, config/fastdds_localhost.xml)."""
import os
import time

import pytest

pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed")

from seem_ros.msg import (Box2D, LabelMap, Polyline, Prompt, SegmentedObject,  # noqa: E402
                          SegmentedObjectArray)
from seem_ros.srv import RemoveObject  # noqa: E402

from ros_helpers import FASTDDS_PROFILE, spawn_python  # noqa: E402

RELIABLE_DEPTH = 10

# rosidl's parser (imported by rclpy's type checks) uses lark, which imports deprecated sre_* modules.
pytestmark = pytest.mark.filterwarnings("ignore:module 'sre_:DeprecationWarning")


# ----------------------------------------------------------------------------------------------
# Messages shared by the parent and the child process (the child imports this module).

def make_prompt():
    from geometry_msgs.msg import Point
    from sensor_msgs.msg import Image

    p = Prompt()
    p.header.frame_id = "camera_color_optical_frame"
    p.header.stamp.sec, p.header.stamp.nanosec = 1700000000, 123456789
    p.mode = Prompt.MODE_REFINE
    p.target_id = 7
    p.text = "the red mug"
    p.points = [Point(x=320.5, y=240.25), Point(x=10.0, y=20.0)]
    p.point_labels = [Prompt.POINT_POSITIVE, Prompt.POINT_NEGATIVE]
    p.boxes = [Box2D(x_min=10.0, y_min=20.0, x_max=200.5, y_max=150.0)]
    p.scribbles = [Polyline(points=[Point(x=1.0, y=2.0), Point(x=30.0, y=40.0), Point(x=50.0, y=45.0)]),
                   Polyline(points=[Point(x=5.0, y=5.0), Point(x=9.0, y=5.0), Point(x=7.0, y=9.0)],
                            closed=True, negative=True)]
    # A 640x480 mask: 300 KB, more than one UDP datagram, as a real mask prompt would be.
    m = Image(height=480, width=640, encoding="mono8", step=640)
    m.header = p.header
    m.data = bytes((i * 7) % 256 for i in range(640 * 480))
    p.mask = m
    p.label = "my_mug"
    return p


def make_objects():
    from geometry_msgs.msg import Pose, Vector3

    arr = SegmentedObjectArray()
    arr.header.frame_id = "camera_color_optical_frame"
    arr.header.stamp.sec, arr.header.stamp.nanosec = 1700000000, 123456789
    a = SegmentedObject(id=1, state=SegmentedObject.STATE_TRACKED, label="mug", label_id=3,
                        score=0.875, label_score=0.8125, prompt="text: the red mug",
                        box=Box2D(x_min=10.0, y_min=20.0, x_max=110.0, y_max=90.0), area=5000,
                        instance_value=1, has_pose=True, valid_depth_points=4321)
    a.last_seen = arr.header.stamp
    a.pose = Pose()
    a.pose.position.x, a.pose.position.y, a.pose.position.z = 0.1, -0.2, 0.85
    a.pose.orientation.w = 1.0
    a.size = Vector3(x=0.08, y=0.1, z=0.08)  # float64: exact on the wire
    # float32 fields hold values exact in float32, so that == compares what was sent.
    b = SegmentedObject(id=2, state=SegmentedObject.STATE_LOST, label="others", label_id=-1,
                        prompt="click", has_pose=False)
    b.last_seen.sec = 1699999999
    arr.objects = [a, b]
    return arr


# ----------------------------------------------------------------------------------------------
# The interfaces themselves.

def test_messages_have_their_fields_and_types():
    assert Prompt.get_fields_and_field_types() == {
        "header": "std_msgs/Header", "mode": "uint8", "target_id": "uint32", "text": "string",
        "points": "sequence<geometry_msgs/Point>", "point_labels": "sequence<uint8>",
        "boxes": "sequence<seem_ros/Box2D>", "scribbles": "sequence<seem_ros/Polyline>",
        "mask": "sensor_msgs/Image", "negative_mask": "sensor_msgs/Image", "reference_image": "sensor_msgs/Image",
        "label": "string"}
    assert SegmentedObject.get_fields_and_field_types() == {
        "id": "uint32", "state": "uint8", "last_seen": "builtin_interfaces/Time", "label": "string",
        "label_id": "int32", "score": "float", "label_score": "float", "prompt": "string",
        "box": "seem_ros/Box2D", "area": "uint32", "instance_value": "uint16", "has_pose": "boolean",
        "pose": "geometry_msgs/Pose", "size": "geometry_msgs/Vector3", "valid_depth_points": "uint32"}
    assert SegmentedObjectArray.get_fields_and_field_types() == {
        "header": "std_msgs/Header", "objects": "sequence<seem_ros/SegmentedObject>"}
    assert LabelMap.get_fields_and_field_types() == {
        "header": "std_msgs/Header", "ids": "sequence<uint16>", "names": "sequence<string>",
        "unlabeled_id": "uint16"}
    assert Box2D.get_fields_and_field_types() == {
        "x_min": "float", "y_min": "float", "x_max": "float", "y_max": "float"}
    assert Polyline.get_fields_and_field_types() == {
        "points": "sequence<geometry_msgs/Point>", "closed": "boolean", "negative": "boolean"}
    assert RemoveObject.Request.get_fields_and_field_types() == {"id": "uint32"}
    assert RemoveObject.Response.get_fields_and_field_types() == {"success": "boolean", "message": "string"}


def test_constants_and_defaults():
    assert (Prompt.MODE_ADD, Prompt.MODE_REFINE, Prompt.MODE_REPLACE, Prompt.MODE_REMOVE) == (0, 1, 2, 3)
    assert (Prompt.POINT_NEGATIVE, Prompt.POINT_POSITIVE) == (0, 1)
    assert (SegmentedObject.STATE_TRACKED, SegmentedObject.STATE_LOST) == (0, 1)
    p = Prompt()
    assert p.mode == Prompt.MODE_ADD and p.target_id == 0        # default: a new object
    assert p.mask.width == 0 and p.negative_mask.width == 0      # default: no mask
    assert p.reference_image.width == 0                          # default: drawn on the camera image
    assert SegmentedObject().state == SegmentedObject.STATE_TRACKED
    with pytest.raises(AssertionError):
        Prompt(mode=256, check_fields=True)                       # uint8 is range checked


def test_interfaces_come_from_the_generated_package():
    """The generated modules and our own code share the one seem_ros package."""
    import seem_ros
    import seem_ros.msg
    import seem_ros.srv

    here = os.path.dirname(os.path.abspath(seem_ros.__file__))
    assert seem_ros.__path__[0] == here                           # our sources come first
    assert os.path.dirname(os.path.dirname(seem_ros.msg.__file__)) in seem_ros.__path__
    assert os.path.dirname(os.path.dirname(seem_ros.srv.__file__)) in seem_ros.__path__
    from rclpy.type_support import check_for_type_support
    for t in (Prompt, SegmentedObject, SegmentedObjectArray, LabelMap, Box2D, Polyline, RemoveObject):
        check_for_type_support(t)


def test_profile_is_the_documented_one():
    import xml.etree.ElementTree as ET

    ns = {"d": "http://www.eprosima.com"}
    root = ET.parse(FASTDDS_PROFILE).getroot()
    shm = [t for t in root.iterfind(".//d:transport_descriptor", ns) if t.findtext("d:type", None, ns) == "SHM"]
    udp = [t for t in root.iterfind(".//d:transport_descriptor", ns) if t.findtext("d:type", None, ns) == "UDPv4"]
    assert len(shm) == 1 and int(shm[0].findtext("d:segment_size", None, ns)) == 32 * 1024 * 1024
    assert len(udp) == 1
    assert [i.get("name") for i in udp[0].iterfind(".//d:allowlist/d:interface", ns)] == ["127.0.0.1"]
    part = root.find(".//d:participant", ns)
    assert part.get("is_default_profile") == "true"
    assert part.findtext(".//d:useBuiltinTransports", None, ns) == "false"


# ----------------------------------------------------------------------------------------------
# Between two processes.

CHILD_PUBLISHER = r"""
import sys
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_helpers import wait_for_matched
from test_interfaces import make_objects, make_prompt
from seem_ros.msg import Prompt, SegmentedObjectArray

rclpy.init()
node = rclpy.create_node("seem_ros_test_publisher")
qos = QoSProfile(depth=%(depth)d, reliability=ReliabilityPolicy.RELIABLE)
pubs = [(node.create_publisher(Prompt, "seem_test/prompt", qos), make_prompt()),
        (node.create_publisher(SegmentedObjectArray, "seem_test/objects", qos), make_objects())]
spin = lambda: rclpy.spin_once(node, timeout_sec=0.05)
try:
    for pub, _ in pubs:
        wait_for_matched(pub, 1, timeout=15.0, spin=spin)
    for pub, msg in pubs:
        pub.publish(msg)
    print("PUBLISHED", flush=True)
    rclpy.spin(node)
except (KeyboardInterrupt, ExternalShutdownException):
    pass
finally:
    node.destroy_node()
    rclpy.try_shutdown()
"""


def test_prompt_and_objects_round_trip_between_processes(ros_env, ros_node):
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    got = {}
    qos = QoSProfile(depth=RELIABLE_DEPTH, reliability=ReliabilityPolicy.RELIABLE)
    subs = [ros_node.create_subscription(Prompt, "seem_test/prompt", lambda m: got.setdefault("prompt", m), qos),
            ros_node.create_subscription(SegmentedObjectArray, "seem_test/objects",
                                         lambda m: got.setdefault("objects", m), qos)]
    with spawn_python(CHILD_PUBLISHER % {"depth": RELIABLE_DEPTH}, env=ros_env) as child:
        for sub in subs:
            ros_node.wait_for_matched(sub, 1, timeout=15.0)
        ros_node.spin_until(lambda: len(got) == 2, timeout=15.0, what="both messages received")
        # The messages can arrive before the child prints: an interrupt sent then lands on its print.
        child.wait_for_line("PUBLISHED", timeout=15.0)
        assert child.stop() == 0, child.output                       # clean exit on SIGINT
    assert "XMLPARSER" not in child.output, child.output            # the profile parsed cleanly

    prompt, objects = got["prompt"], got["objects"]
    expected_prompt, expected_objects = make_prompt(), make_objects()
    assert prompt == expected_prompt
    assert objects == expected_objects
    # Spelled out for the fields a consumer relies on most.
    assert prompt.header.frame_id == "camera_color_optical_frame"
    assert (prompt.header.stamp.sec, prompt.header.stamp.nanosec) == (1700000000, 123456789)
    assert prompt.mode == Prompt.MODE_REFINE and prompt.target_id == 7 and prompt.text == "the red mug"
    assert [(pt.x, pt.y) for pt in prompt.points] == [(320.5, 240.25), (10.0, 20.0)]
    assert list(prompt.point_labels) == [1, 0]
    assert prompt.scribbles[1].closed and prompt.scribbles[1].negative
    assert bytes(prompt.mask.data) == bytes(expected_prompt.mask.data)
    assert [o.id for o in objects.objects] == [1, 2]
    assert objects.objects[0].pose.position.z == pytest.approx(0.85)
    assert objects.objects[1].state == SegmentedObject.STATE_LOST


CHILD_IMAGE_STREAM = r"""
import time
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import qos_profile_sensor_data
from ros_helpers import wait_for_matched
from sensor_msgs.msg import Image

rclpy.init()
node = rclpy.create_node("seem_ros_test_camera")
pub = node.create_publisher(Image, "seem_test/image", qos_profile_sensor_data)
img = Image(height=720, width=1280, encoding="rgb8", step=1280 * 3)
img.header.frame_id = "camera_color_optical_frame"
img.data = bytes(1280 * 720 * 3)
try:
    wait_for_matched(pub, 1, timeout=15.0, spin=lambda: rclpy.spin_once(node, timeout_sec=0.05))
    for i in range(%(frames)d):
        img.header.stamp.sec = i
        pub.publish(img)
        time.sleep(1.0 / %(rate)f)
    print("SENT", flush=True)
    rclpy.spin(node)
except (KeyboardInterrupt, ExternalShutdownException):
    pass
finally:
    node.destroy_node()
    rclpy.try_shutdown()
"""


def test_large_best_effort_images_are_not_dropped(ros_env, ros_node):
    """1280x720 rgb8 (2.7 MB) at 15 Hz, best effort: with Fast DDS defaults almost every frame is
    lost between two processes; with config/fastdds_localhost.xml (shared memory) none should be."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    frames, stamps = 20, set()
    sub = ros_node.create_subscription(Image, "seem_test/image",
                                       lambda m: stamps.add(m.header.stamp.sec) if len(m.data) == 1280 * 720 * 3 else None,
                                       qos_profile_sensor_data)
    with spawn_python(CHILD_IMAGE_STREAM % {"frames": frames, "rate": 15.0}, env=ros_env) as child:
        ros_node.wait_for_matched(sub, 1, timeout=15.0)
        child_done = lambda: any("SENT" in line for line in child.lines)  # noqa: E731
        ros_node.spin_until(lambda: child_done() or child.proc.poll() is not None, timeout=20.0, what="frames sent")
        deadline = time.monotonic() + 1.0                            # the last frames in flight
        while len(stamps) < frames and time.monotonic() < deadline:
            ros_node.spin_once()
    assert child.proc.returncode == 0, child.output
    # Without the profile nearly all are lost (4 of 150 arrived); with it a loaded 2-core machine
    # still loses a few (16 of 20 arrived once, in a fresh-clone CI run on a busy host): three
    # quarters tell the two apart.
    assert len(stamps) >= 3 * frames // 4, f"received {len(stamps)} of {frames} frames"


def test_remove_object_service(ros_node):
    calls = []

    def handle(req, resp):
        calls.append(req.id)
        resp.success = req.id == 7
        resp.message = "" if resp.success else f"no object {req.id}"
        return resp

    ros_node.create_service(RemoveObject, "seem_test/remove_object", handle)
    client = ros_node.create_client(RemoveObject, "seem_test/remove_object")
    ros_node.spin_until(lambda: client.service_is_ready(), timeout=10.0, what="service ready")
    results = []
    for i in (7, 8):
        fut = client.call_async(RemoveObject.Request(id=i))
        ros_node.spin_until(fut.done, timeout=10.0, what="service response")
        results.append((fut.result().success, fut.result().message))
    assert calls == [7, 8]
    assert results == [(True, ""), (False, "no object 8")]
