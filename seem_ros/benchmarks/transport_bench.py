"""The floor under the node's overhead (not a test): one-way latency of a sensor_msgs/Image between
two Python processes over loopback DDS (our Fast DDS profile), with and without the allocator
settings of `seem_ros.ros.process_tuning` in the sender and the receiver.

    python -m seem_ros.benchmarks.transport_bench [--sizes 640x480 1280x720] [--frames 60]

This process publishes rgb8 images stamped just before `publish()`, one in flight; a child process
(a bare rclpy node with one sensor-data subscription) takes each, notes stamp -> callback and
answers with the header; the round trip is stamp -> that answer here."""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

from ..ros.local_env import apply, localhost_env


def _echo(a) -> int:
    if a.tune:
        from ..ros.process_tuning import tune_process
        tune_process()
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    rclpy.init()
    n = rclpy.create_node("transport_bench_echo")
    back = n.create_publisher(Header, "/transport_bench/back", 10)
    one_way = []

    def on_image(m):
        t = time.time()
        one_way.append(1000 * (t - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)))
        last[0] = t
        np.frombuffer(m.data, np.uint8)          # what a node does first: a zero-copy view
        back.publish(m.header)

    n.create_subscription(Image, "/transport_bench/image", on_image, qos_profile_sensor_data)
    ex = SingleThreadedExecutor()
    ex.add_node(n)
    end = time.time() + 120
    last = [time.time()]
    n.create_subscription(Header, "/transport_bench/back", lambda m: last.__setitem__(0, time.time()), 10)
    # Done after all frames, or 3 s after the last one seen (a best-effort frame can be lost).
    while len(one_way) < a.frames and time.time() < end and not (one_way and time.time() - last[0] > 3):
        ex.spin_once(timeout_sec=0.1)
    print(json.dumps(one_way), flush=True)
    n.destroy_node()
    rclpy.shutdown()
    return 0


def _measure(env, size, tune_sender: bool, tune_receiver: bool, frames: int, warmup: int = 5):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    w, h = size
    child = subprocess.Popen([sys.executable, "-m", "seem_ros.benchmarks.transport_bench", "--role", "echo",
                              "--frames", str(frames + warmup)] + (["--tune"] if tune_receiver else []),
                             env=env, stdout=subprocess.PIPE, text=True)
    n = rclpy.create_node("transport_bench")
    pub = n.create_publisher(Image, "/transport_bench/image", qos_profile_sensor_data)
    got = []
    n.create_subscription(Header, "/transport_bench/back", lambda m: got.append(time.time()), 10)
    ex = SingleThreadedExecutor()
    ex.add_node(n)
    try:
        end = time.time() + 60
        while not (pub.get_subscription_count() and n.count_publishers("/transport_bench/back")):
            if time.time() > end or child.poll() is not None:
                raise RuntimeError("the echo process did not come up")
            ex.spin_once(timeout_sec=0.05)
        m = Image(height=h, width=w, encoding="rgb8", step=3 * w)
        m.data = np.random.default_rng(0).integers(0, 256, (h, w, 3), np.uint8).tobytes()
        rtt = []
        for i in range(frames + warmup):
            k = len(got)
            t = time.time()
            m.header.stamp.sec, m.header.stamp.nanosec = int(t), int((t % 1) * 1e9)
            pub.publish(m)
            end = time.time() + 2
            while len(got) == k and time.time() < end:
                ex.spin_once(timeout_sec=0.01)
            if len(got) > k and i >= warmup:
                rtt.append(1000 * (got[-1] - t))
            time.sleep(0.02)                      # the receiver idle again, as between camera frames
        one_way = json.loads(child.communicate(timeout=60)[0].strip().splitlines()[-1])[warmup:]
    finally:
        if child.poll() is None:
            child.kill()
        n.destroy_node()
    return one_way, rtt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["640x480", "1280x720"])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--role", default="main", choices=["main", "echo"], help=argparse.SUPPRESS)
    ap.add_argument("--tune", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.role == "echo":
        return _echo(a)
    env = localhost_env()
    apply(env)
    import rclpy
    rclpy.init()
    rows = []
    try:
        for size in a.sizes:
            w, h = (int(v) for v in size.split("x"))
            base = None
            # The sender's setting is process-wide and cannot be undone here: untuned first.
            for tune_sender, tune_receiver in ((False, False), (False, True)):
                one, rtt = _measure(env, (w, h), tune_sender, tune_receiver, a.frames)
                med = float(np.median(one))
                base = med if base is None else base
                rows.append((size, tune_sender, tune_receiver, med, float(np.percentile(one, 90)),
                             float(np.median(rtt)), len(one), med / base))
        from ..ros.process_tuning import tune_process
        tune_process()
        for size in a.sizes:
            w, h = (int(v) for v in size.split("x"))
            one, rtt = _measure(env, (w, h), True, True, a.frames)
            base = next(r[3] for r in rows if r[0] == size and not r[1] and not r[2])
            med = float(np.median(one))
            rows.append((size, True, True, med, float(np.percentile(one, 90)), float(np.median(rtt)), len(one),
                         med / base))
    finally:
        rclpy.shutdown()
    rows.sort(key=lambda r: (a.sizes.index(r[0]), r[1], r[2]))
    yn = lambda b: "tuned" if b else "default"
    print(f"\nImage one way between two Python processes, Fast DDS shared memory ({os.cpu_count()} cores, "
          f"{platform.processor() or platform.machine()})\n")
    print("| image | sender allocator | receiver allocator | one way median (ms) | one way p90 (ms) | "
          "round trip median (ms) | frames | one way / default |")
    print("|---|---|---|---|---|---|---|---|")
    for size, ts, tr, med, p90, rtt, n, ratio in rows:
        print(f"| {size} | {yn(ts)} | {yn(tr)} | {med:.2f} | {p90:.2f} | {rtt:.2f} | {n} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
