"""FrameResult -> the node's output messages, each with the source image's header."""
from __future__ import annotations

from typing import Sequence

from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Pose, PoseArray
from visualization_msgs.msg import Marker, MarkerArray

from seem_ros.msg import LabelMap, SegmentedObject, SegmentedObjectArray

from ..overlay import colour_of
from ..perception import FrameResult, ObjectResult


def to_time(seconds: float) -> Time:
    sec = int(seconds // 1)
    return Time(sec=sec, nanosec=int(round((seconds - sec) * 1e9)) % 1_000_000_000)


def _pose(o: ObjectResult) -> Pose:
    p = Pose()
    (p.position.x, p.position.y, p.position.z) = (float(v) for v in o.pose.position)
    (p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w) = (float(v) for v in o.pose.quaternion)
    return p


def objects_msg(result: FrameResult, header) -> SegmentedObjectArray:
    msg = SegmentedObjectArray(header=header)
    for o in result.objects:
        m = SegmentedObject()
        m.id = int(o.id)
        m.state = SegmentedObject.STATE_TRACKED if o.tracked else SegmentedObject.STATE_LOST
        m.last_seen = header.stamp if o.tracked else to_time(o.last_seen)
        m.label, m.label_id = o.label, int(o.label_id)
        m.score, m.label_score = float(o.score), float(o.label_score)
        m.prompt = o.prompt
        if o.tracked:
            (m.box.x_min, m.box.y_min, m.box.x_max, m.box.y_max) = (float(v) for v in o.box)
            m.area = int(o.area)
            m.instance_value = int(o.instance_value)
        if o.pose is not None:
            m.has_pose = True
            m.pose = _pose(o)
            (m.size.x, m.size.y, m.size.z) = (float(v) for v in o.pose.size)
            m.valid_depth_points = int(o.pose.valid_points)
        msg.objects.append(m)
    return msg


def poses_msg(result: FrameResult, header) -> PoseArray:
    return PoseArray(header=header, poses=[_pose(o) for o in result.objects if o.pose is not None])


def markers_msg(result: FrameResult, header, ns: str = "seem_ros", lifetime_s: float = 1.0) -> MarkerArray:
    """A box and a label per object with a pose; DELETEALL first so vanished objects go away."""
    out = MarkerArray(markers=[Marker(header=header, ns=ns, action=Marker.DELETEALL)])
    life = Duration(sec=int(lifetime_s), nanosec=int((lifetime_s % 1) * 1e9))
    for o in result.objects:
        if o.pose is None:
            continue
        c = colour_of(o.id) / 255.0
        box = Marker(header=header, ns=ns, id=2 * int(o.id), type=Marker.CUBE, action=Marker.ADD,
                     pose=_pose(o), lifetime=life)
        (box.scale.x, box.scale.y, box.scale.z) = (max(float(v), 1e-3) for v in o.pose.size)
        box.color.r, box.color.g, box.color.b, box.color.a = float(c[0]), float(c[1]), float(c[2]), 0.5
        text = Marker(header=header, ns=ns, id=2 * int(o.id) + 1, type=Marker.TEXT_VIEW_FACING,
                      action=Marker.ADD, pose=_pose(o), lifetime=life, text=f"{o.id}: {o.label}")
        text.pose.position.y -= float(o.pose.size[2]) / 2 + 0.03      # above it (optical y is down)
        text.scale.z = 0.03
        text.color.r = text.color.g = text.color.b = text.color.a = 1.0
        out.markers += [box, text]
    return out


def label_map_msg(vocabulary: Sequence[str], header) -> LabelMap:
    """Class index of the semantic image -> name; 0 is unlabeled, vocabulary[i] is i + 1."""
    return LabelMap(header=header, ids=[], names=["unlabeled"] + list(vocabulary), unlabeled_id=0)
