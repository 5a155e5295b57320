"""End-to-end benchmark of seem_node (not a test): latency from image stamp to ~/objects received,
throughput, and the node's own overhead (end-to-end minus the model's time in the same frames).

    python -m seem_ros.benchmarks.node_bench [--sizes 640x480 1280x720] [--frames 50]

The node runs as its own process (console script, bundled model, one text-prompted object being
tracked, depth + camera_info so poses are computed); this process publishes frames of the
synthetic world over loopback DDS. Latency: one frame in flight at a time (publish, wait for its
~/objects). Throughput: frames published at 30 Hz for a while; answered frames per second (the
node drops what it cannot take). Model time: the node's own per-frame measure of encode + decode
(its /diagnostics `model_ms`), over the same frames. Overhead: the node's per-frame median of image
stamp -> ~/objects published minus that frame's model time (`overhead_ms`; split into transport in,
hand-off to the worker and the node's own work), plus the way back to this process."""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..ros.local_env import apply, localhost_env

ROOT = Path(__file__).resolve().parents[2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["640x480", "1280x720"])
    ap.add_argument("--frames", type=int, default=50,
                    help="timed frames; the node's /diagnostics medians cover its last 50, so 50 or more "
                         "makes both sides' medians those of the same frames")
    ap.add_argument("--throughput-s", type=float, default=10.0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--depth-encoding", default="16UC1", choices=["16UC1", "32FC1"],
                    help="16UC1 millimetres is what RGB-D drivers (RealSense, Orbbec, Kinect) publish")
    ap.add_argument("--order", nargs="+", default=["image-first", "depth-first"],
                    choices=["image-first", "depth-first"],
                    help="publish orders of one frame's colour, depth and camera_info to measure (all "
                         "stamped just before the first publish); drivers publish the streams independently")
    ap.add_argument("--variants", nargs="+", default=["defaults"],
                    help="node parameter sets to compare in one run, each 'defaults' or "
                         "'name:=value[,name:=value]' (e.g. support_plane:=false)")
    ap.add_argument("--tuned-publisher", action="store_true",
                    help="give this (camera) process the node's allocator settings, as sim_camera has")
    a = ap.parse_args(argv)
    env = localhost_env()
    apply(env)
    if a.tuned_publisher:
        from ..ros.process_tuning import tune_process
        tune_process()
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header, String

    from seem_ros.msg import SegmentedObjectArray
    from ..ros.conversions import camera_info_to_msg, depth_to_image, rgb_to_image
    from ..sim import make_scene, render

    def start_node(variant):
        extra = [] if variant == "defaults" else [x for kv in variant.split(",") for x in ("-p", kv)]
        return subprocess.Popen([sys.executable, "-m", "seem_ros.ros.node", "--ros-args", "--params-file",
                                 str(ROOT / "config" / "seem_node.yaml"), "-r", "__ns:=/bench", "-p",
                                 f"device:={a.device}", *extra],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop_node(node):
        node.send_signal(2)
        try:
            node.wait(10)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()

    rclpy.init()
    n = rclpy.create_node("seem_bench")
    rel = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {"image": n.create_publisher(Image, "/bench/image", qos_profile_sensor_data),
            "depth": n.create_publisher(Image, "/bench/depth", qos_profile_sensor_data),
            "info": n.create_publisher(CameraInfo, "/bench/camera_info", qos_profile_sensor_data),
            "text": n.create_publisher(String, "/bench/prompt/text", rel)}
    got = {}
    diag = {}

    def on_objects(m):
        got[(m.header.stamp.sec, m.header.stamp.nanosec)] = time.time()

    def on_diag(m):
        for s in m.status:
            if s.name.startswith("seem_node"):
                diag.update({kv.key: kv.value for kv in s.values})

    n.create_subscription(SegmentedObjectArray, "/bench/seem_node/objects", on_objects, rel)
    n.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)

    # One executor for the whole run: rclpy.spin_once(node) adds and removes the node (rebuilding
    # the wait set) on every call, time that would be counted as the node's overhead.
    ex = SingleThreadedExecutor()
    ex.add_node(n)

    def spin_until(pred, timeout):
        end = time.time() + timeout
        while not pred():
            if time.time() > end:
                raise TimeoutError
            ex.spin_once(timeout_sec=0.01)

    rows = []
    node = None
    try:
        for variant, size in ((v, sz) for v in a.variants for sz in a.sizes):
            # A node per size: its diagnostics medians (last 50 frames) then hold this size only.
            if node is not None:
                stop_node(node)
                spin_until(lambda: not any(p.get_subscription_count() for p in pubs.values()), 60)
            diag.clear()
            node = start_node(variant)
            spin_until(lambda: all(p.get_subscription_count() for p in pubs.values()), 300)
            w, h = (int(v) for v in size.split("x"))
            frame = render(make_scene(5, w, h))
            rgb_msg, depth_msg = rgb_to_image(frame.rgb), depth_to_image(frame.depth, encoding=a.depth_encoding)
            info = camera_info_to_msg(frame.camera_info)
            orders = {"image-first": [(rgb_msg, "image"), (depth_msg, "depth"), (info, "info")],
                      "depth-first": [(depth_msg, "depth"), (info, "info"), (rgb_msg, "image")]}

            def send(order):
                now = time.time()
                hd = Header(frame_id="bench_optical")
                hd.stamp.sec, hd.stamp.nanosec = int(now), int((now % 1) * 1e9)
                for m, key in orders[order]:
                    m.header = hd
                    pubs[key].publish(m)
                return (hd.stamp.sec, hd.stamp.nanosec), now

            got.clear()
            k, t = send(a.order[0])          # first frame, then one tracked object
            spin_until(lambda: k in got, 120)
            # The onnxruntime engine exports a new size's graph in the background (torch encodes
            # meanwhile): time the engine the node settles on, not the interim.
            end = time.time() + 600
            while diag.get("engine", "torch while").startswith(("torch while", "onnxruntime (no frame")):
                if time.time() > end:
                    raise TimeoutError("the node's onnxruntime graph export did not end")
                k, t = send(a.order[0])
                spin_until(lambda: k in got, 120)
                t_end = time.time() + 0.5
                while time.time() < t_end:
                    ex.spin_once(timeout_sec=0.05)
            pubs["text"].publish(String(data="the " + max(frame.objects, key=lambda o: o.visible_pixels).phrase))
            for order in a.order:
                for _ in range(3):           # warm-up (and the prompt applied)
                    k, t = send(order)
                    spin_until(lambda: k in got, 120)
                lat = []
                for _ in range(a.frames):
                    k, t = send(order)
                    spin_until(lambda: k in got, 120)
                    lat.append(1000 * (got[k] - t))
                    ex.spin_once(timeout_sec=0.0)
                # The node's medians cover its last 50 frames: compare with the same ones here.
                lat = lat[-50:]
                t_end = time.time() + 1.5
                while time.time() < t_end:
                    ex.spin_once(timeout_sec=0.05)
                dg = {k: float(diag.get(k, "nan")) for k in
                      ("model_ms", "latency_ms", "overhead_ms", "transport_ms", "wait_ms")}
                print(f"{variant} {size} {order}: node diagnostics {diag}", flush=True)
                # Throughput: 30 Hz for a while.
                got.clear()
                t0 = time.time()
                next_t = t0
                while time.time() - t0 < a.throughput_s:
                    if time.time() >= next_t:
                        send(order)
                        next_t += 1 / 30
                    ex.spin_once(timeout_sec=0.002)
                t_end = time.time() + 3
                while time.time() < t_end:
                    ex.spin_once(timeout_sec=0.05)
                fps = len(got) / a.throughput_s
                med = float(np.median(lat))
                # The node's overhead is per frame (its stamp -> ~/objects published minus that
                # frame's model time); the way back is this side's latency minus the node's, both
                # medians of the same frames and nearly equal.
                back = med - dg["latency_ms"]
                work = dg["overhead_ms"] - dg["transport_ms"] - dg["wait_ms"]
                rows.append((variant, diag.get("engine", "?"), size, order, med, float(np.percentile(lat, 90)), dg["model_ms"],
                             dg["overhead_ms"] + back, dg["transport_ms"], dg["wait_ms"], work, back, fps))
    finally:
        if node is not None:
            stop_node(node)
        n.destroy_node()
        rclpy.shutdown()
    cpu = platform.processor() or platform.machine()
    print(f"\nseem_node end to end, bundled model, 1 tracked object + poses ({a.depth_encoding} depth); "
          f"{os.cpu_count()} cores ({cpu}), device {diag.get('device', '?')}, publisher "
          f"{'tuned' if a.tuned_publisher else 'untuned'}\n")
    many = len(a.variants) > 1
    print(("| node parameters " if many else "") + "| engine | input | publish order | latency median (ms) | latency p90 (ms) | "
          "model (ms) | overhead = latency - model (ms) | transport in (ms) | hand-off (ms) | node work (ms) | "
          "way back (ms) | throughput at 30 Hz in (fps) |")
    print("|---" * (12 + many) + "|")
    for variant, engine, size, order, med, p90, model_ms, over, tr, wait, work, back, fps in rows:
        print((f"| {variant} " if many else "") + f"| {engine} | {size} | {order} | {med:.0f} | {p90:.0f} | {model_ms:.0f} | "
              f"{over:.1f} | {tr:.1f} | {wait:.1f} | {work:.1f} | {back:.1f} | {fps:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
