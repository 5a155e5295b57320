"""`make demo`: the simulated RGB-D camera and seem_node, driven by a scripted user.

Starts two processes on this machine (loopback DDS, a domain id of its own):
    seem_ros_sim_camera   a moving tabletop sequence (image, depth, camera_info, camera_pose, ground truth)
    seem_node             the bundled small SEEM, with tracking and poses
then, as a user would, sends on the node's prompt topics:
    frame  2  a text command    "pick up the <colour> <shape>"        (prompt/text)
    frame  6  a click           on another object                      (prompt, stamped)
    frame 10  a corrective click where that mask is most wrong         (prompt, mode refine)
    frame 14  a second object   by a box around it                      (prompt)
    frame 18+ a third object    by a box drawn on an earlier camera image (prompt, reference_image):
                                the first object not yet prompted that is in view now, marked on
                                the earliest image that shows it (the camera has moved since)
and records the node's overlay and outputs. Writes demo_out/overlay.gif and demo_out/summary.md:
per object, mask IoU against the ground truth over the frames, id changes, pose error, and the
node's latency.

    python -m seem_ros.demo                 # the scripted run, then exit
    python -m seem_ros.demo --keep-running  # then leave camera and node up for your own prompts"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .ros.local_env import apply, localhost_env

ROOT = Path(__file__).resolve().parents[1]
NS = "/demo"


def _spawn(args, env):
    import subprocess
    return subprocess.Popen([sys.executable, "-m", *args], env=env, cwd=str(ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)


def _pump(proc, sink: list, prefix: str, echo: bool):
    import threading

    def run():
        for line in proc.stdout:
            sink.append(line.rstrip())
            if echo:
                print(f"[{prefix}] {line.rstrip()}", flush=True)
    threading.Thread(target=run, daemon=True).start()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=7, help="scene of the sequence")
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--rate", type=float, default=2.0, help="camera rate (Hz)")
    ap.add_argument("--out", default="demo_out")
    ap.add_argument("--checkpoint", default="", help="model weights (default: the bundled small SEEM)")
    ap.add_argument("--keep-running", action="store_true", help="leave camera and node running after the script")
    ap.add_argument("--verbose", action="store_true", help="echo the processes' output")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    env = localhost_env()
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "2")
    apply(env)
    logs = {"camera": [], "node": []}
    node_args = ["seem_ros.ros.node", "--ros-args", "--params-file", str(ROOT / "config" / "seem_node.yaml"),
                 "-r", f"__ns:={NS}", "-r", f"image:={NS}/camera/image", "-r", f"depth:={NS}/camera/depth",
                 "-r", f"camera_info:={NS}/camera/camera_info", "-r", f"camera_pose:={NS}/camera/camera_pose"]
    if a.checkpoint:
        node_args += ["-p", f"checkpoint:={a.checkpoint}"]
    node = _spawn(node_args, env)
    _pump(node, logs["node"], "node", a.verbose)
    # The camera starts once the node listens, so that the sequence is seen from its first frame.
    end = time.time() + 300
    while not any("active: listening" in line for line in logs["node"]):
        if node.poll() is not None or time.time() > end:
            print("demo: the node did not start:\n" + "\n".join(logs["node"][-30:]), file=sys.stderr)
            node.kill()
            return 1
        time.sleep(0.1)
    procs = {"node": node}

    def start_camera():
        cam = _spawn(["seem_ros.ros.sim_camera_node", "--ros-args", "-r", f"__ns:={NS}/camera",
                      "-p", f"seed:={a.seed}", "-p", f"rate:={a.rate}", "-p", f"n_frames:={a.frames}",
                      "-p", f"loop:={'true' if a.keep_running else 'false'}", "-p", "width:=640", "-p", "height:=480"],
                     dict(env, OMP_NUM_THREADS="1"))
        _pump(cam, logs["camera"], "camera", a.verbose)
        procs["camera"] = cam
        return cam

    try:
        rec = _run_script(a, node, start_camera)
    finally:
        if not a.keep_running:
            for p in procs.values():
                p.send_signal(2)
            for p in procs.values():
                try:
                    p.wait(10)
                except Exception:
                    p.kill()
    if rec is None:
        print("demo: FAILED; node output:\n" + "\n".join(logs["node"][-30:]), file=sys.stderr)
        return 1
    summary = _summarise(rec, out)
    print(summary)
    if a.keep_running:
        _instructions(env)
        try:
            while node.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        for p in procs.values():
            p.send_signal(2)
    return 0


class _Recorder:
    def __init__(self):
        self.gt = {}            # stamp -> (index, objects json)
        self.gt_inst = {}       # stamp -> uint16 instances
        self.inst = {}          # stamp -> node instances
        self.objs = {}          # stamp -> SegmentedObjectArray
        self.overlay = {}       # stamp -> rgb
        self.recv = {}          # stamp -> receive wall time of ~/objects
        self.events = []        # (index, what, gt id)
        self.images = {}        # stamp -> camera Image, until the reference prompt is sent
        self.camera_pose = "not reported"   # the node's /diagnostics camera_pose, last seen


def _run_script(a, node_proc, start_camera):
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import Point
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from seem_ros.msg import Box2D, Prompt, SegmentedObjectArray
    from .ros.conversions import image_to_labels, image_to_rgb
    from .training.clicks import next_click
    from .training.data import interior_point

    rclpy.init()
    n = rclpy.create_node("seem_demo_user")
    rec = _Recorder()
    done = set()
    rel = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    st = lambda m: (m.header.stamp.sec, m.header.stamp.nanosec)

    def on_gt(msg):
        d = json.loads(msg.data)
        rec.gt[(d["stamp"]["sec"], d["stamp"]["nanosec"])] = d

    def on_objs(msg):
        rec.objs[st(msg)] = msg
        rec.recv[st(msg)] = time.time()

    def on_diag(msg):
        for status in msg.status:
            for kv in status.values:
                if kv.key == "camera_pose" and status.name.startswith("seem_node"):
                    rec.camera_pose = kv.value

    subs = [n.create_subscription(String, f"{NS}/camera/sim_camera/ground_truth/objects", on_gt, rel),
            n.create_subscription(Image, f"{NS}/camera/sim_camera/ground_truth/instances",
                                  lambda m: rec.gt_inst.__setitem__(st(m), image_to_labels(m)), rel),
            n.create_subscription(Image, f"{NS}/seem_node/instances",
                                  lambda m: rec.inst.__setitem__(st(m), image_to_labels(m)), rel),
            n.create_subscription(SegmentedObjectArray, f"{NS}/seem_node/objects", on_objs, rel),
            n.create_subscription(Image, f"{NS}/seem_node/overlay",
                                  lambda m: rec.overlay.__setitem__(st(m), image_to_rgb(m).copy()), rel),
            # The camera's own images, for the reference-image prompt (an earlier view).
            n.create_subscription(Image, f"{NS}/camera/image",
                                  lambda m: "reference" not in done and rec.images.__setitem__(st(m), m),
                                  qos_profile_sensor_data),
            n.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)]
    text_pub = n.create_publisher(String, f"{NS}/prompt/text", rel)
    prompt_pub = n.create_publisher(Prompt, f"{NS}/prompt", rel)

    def spin_until(pred, timeout):
        end = time.time() + timeout
        while not pred():
            if time.time() > end or node_proc.poll() is not None:
                return False
            rclpy.spin_once(n, timeout_sec=0.05)
        return True

    ok = spin_until(lambda: text_pub.get_subscription_count() and prompt_pub.get_subscription_count()
                    and subs[3].get_publisher_count(), 180)
    if not ok:
        return None
    cam_proc = start_camera()
    if not spin_until(lambda: subs[0].get_publisher_count() and subs[1].get_publisher_count(), 60):
        return None
    chosen = {}
    last_index = -1
    t_end = time.time() + a.frames / a.rate * 3 + 120
    while time.time() < t_end and node_proc.poll() is None:
        rclpy.spin_once(n, timeout_sec=0.05)
        ready = [s for s in rec.gt if s in rec.gt_inst]
        if not ready or not rec.objs:
            continue                      # the node drops prompts sent before it has an image
        s = max(ready)
        d = rec.gt[s]
        # The camera's own frame index: the prompts go to the same frames (hence the same objects)
        # even when discovery made the node miss the camera's first frames.
        idx = d["index"]
        if idx != last_index:
            last_index = idx
            gi = rec.gt_inst[s]
            vis = sorted((o for o in d["objects"] if o["visible_pixels"] > 800), key=lambda o: -o["visible_pixels"])
            phrases = [o["phrase"] for o in vis]
            if idx >= 2 and "text" not in done and vis:
                o = next((o for o in vis if phrases.count(o["phrase"]) == 1), vis[0])
                text_pub.publish(String(data=f"pick up the {o['phrase']}"))
                chosen["text"] = o["id"]
                rec.events.append((idx, f'text "pick up the {o["phrase"]}"', o["id"]))
                done.add("text")
            elif idx >= 6 and "click" not in done:
                o = next((o for o in vis if o["id"] not in chosen.values()), None)
                if o is not None:
                    x, y = interior_point(gi == o["id"], None, True)
                    p = Prompt(mode=Prompt.MODE_ADD)
                    p.header.stamp.sec, p.header.stamp.nanosec = s
                    p.points = [Point(x=float(x), y=float(y))]
                    prompt_pub.publish(p)
                    chosen["click"] = o["id"]
                    rec.events.append((idx, f"click ({x:.0f}, {y:.0f}) on {o['phrase']}", o["id"]))
                    done.add("click")
            elif idx >= 10 and "click" in done and "refine" not in done:
                # Correct the click's mask on the newest frame the node has answered.
                oid = _node_id(rec, "point")
                answered = [t for t in rec.inst if t in rec.gt_inst]
                if oid is not None and answered:
                    t = max(answered)
                    c = next_click(rec.inst[t] == oid, rec.gt_inst[t] == chosen["click"])
                    if c is not None:
                        (x, y), positive = c
                        p = Prompt(mode=Prompt.MODE_REFINE, target_id=oid)
                        p.header.stamp.sec, p.header.stamp.nanosec = t
                        p.points = [Point(x=float(x), y=float(y))]
                        p.point_labels = [int(bool(positive))]
                        prompt_pub.publish(p)
                        rec.events.append((idx, f"corrective {'positive' if positive else 'negative'} click "
                                                f"({x:.0f}, {y:.0f}) on object {oid}", chosen["click"]))
                    done.add("refine")
            elif idx >= 14 and "refine" in done and "box" not in done:
                o = next((o for o in vis if o["id"] not in chosen.values()), None)
                if o is not None:
                    x0, y0, x1, y1 = o["bbox"]
                    p = Prompt(mode=Prompt.MODE_ADD, boxes=[Box2D(x_min=float(x0), y_min=float(y0),
                                                                 x_max=float(x1 + 1), y_max=float(y1 + 1))])
                    p.header.stamp.sec, p.header.stamp.nanosec = s
                    prompt_pub.publish(p)
                    chosen["box"] = o["id"]
                    rec.events.append((idx, f"box around {o['phrase']}", o["id"]))
                    done.add("box")
            elif idx >= 18 and "box" in done and "reference" not in done:
                # A box drawn on an earlier camera image (another view: the camera has moved),
                # sent as a reference image: the node finds that object in the current frames.
                now = {o["id"] for o in vis}
                old = sorted(t for t in rec.images if t in rec.gt)
                for t in old:
                    cand = [o for o in rec.gt[t]["objects"] if o["visible_pixels"] > 800
                            and o["id"] in now and o["id"] not in chosen.values()]
                    if cand:
                        o = max(cand, key=lambda o: o["visible_pixels"])
                        x0, y0, x1, y1 = o["bbox"]
                        p = Prompt(mode=Prompt.MODE_ADD, reference_image=rec.images[t],
                                   boxes=[Box2D(x_min=float(x0), y_min=float(y0), x_max=float(x1 + 1),
                                                y_max=float(y1 + 1))])
                        prompt_pub.publish(p)
                        chosen["reference"] = o["id"]
                        rec.events.append((idx, f"box around {o['phrase']} on the image of frame "
                                                f"{rec.gt[t]['index']}, sent as a reference image", o["id"]))
                        done.add("reference")
                        rec.images.clear()
                        break
            if d["index"] >= a.frames - 1:
                break
        if cam_proc.poll() is not None:
            break
    spin_until(lambda: False, 3.0)        # the last frames' outputs
    rec.chosen = chosen
    n.destroy_node()
    rclpy.shutdown()
    return rec


def _node_id(rec, prompt_kind):
    for s in sorted(rec.objs, reverse=True):
        for o in rec.objs[s].objects:
            if o.prompt.startswith(prompt_kind):
                return o.id
    return None


def _summarise(rec, out: Path) -> str:
    kinds = {"text": "text", "click": "point", "box": "box", "reference": "reference"}
    rows = []
    stamps = sorted(s for s in rec.objs if s in rec.gt_inst and s in rec.inst)
    for key, gid in rec.chosen.items():
        ious, ids, pose_err = [], set(), []
        for s in stamps:
            mine = [o for o in rec.objs[s].objects if o.prompt.startswith(kinds[key])]
            if not mine:
                continue
            o = mine[0]
            ids.add(o.id)
            gt = rec.gt_inst[s] == gid
            if gt.sum() < 50:
                continue
            m = rec.inst[s] == o.instance_value if o.state == 0 else np.zeros_like(gt)
            ious.append((m & gt).sum() / max((m | gt).sum(), 1))
            g = next(x for x in rec.gt[s]["objects"] if x["id"] == gid)
            if o.has_pose and o.state == 0:
                pose_err.append(np.linalg.norm(np.array([o.pose.position.x, o.pose.position.y, o.pose.position.z])
                                               - np.array(g["position"])))
        rows.append(f"| {key} | {len(ious)} | {np.mean(ious) if ious else float('nan'):.2f} | "
                    f"{len(ids)} | {100 * np.median(pose_err) if pose_err else float('nan'):.1f} |")
    lat = [1000 * (rec.recv[s] - (s[0] + s[1] * 1e-9)) for s in rec.recv]
    frames = sorted(rec.overlay)
    if frames:
        from PIL import Image
        pics = [Image.fromarray(rec.overlay[s]).resize((320, 240)) for s in frames]
        pics[0].save(out / "overlay.gif", save_all=True, append_images=pics[1:], duration=400, loop=0)
    lines = ["# seem_ros demo", "", "Prompts sent:", ""]
    lines += [f"- frame {i}: {w} (ground-truth object {g})" for i, w, g in rec.events]
    lines += ["", "| object | frames | mean IoU vs ground truth | ids used | median pose error (cm) |",
              "|---|---|---|---|---|", *rows, "",
              f"Frames answered: {len(rec.objs)}; latency image stamp -> ~/objects received: "
              f"median {np.median(lat) if lat else float('nan'):.0f} ms. Camera pose for tracking: "
              f"{rec.camera_pose} (the node's /diagnostics).",
              f"Overlay: {out / 'overlay.gif'} ({len(frames)} frames)."]
    text = "\n".join(lines)
    (out / "summary.md").write_text(text + "\n")
    return text


def _instructions(env):
    print(f"""
The camera and the node keep running (Ctrl-C to stop). In another shell:
    export ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']} ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST \\
           FASTDDS_DEFAULT_PROFILES_FILE={env['FASTDDS_DEFAULT_PROFILES_FILE']}
    .venv/bin/python -c "import rclpy,time; from std_msgs.msg import String; rclpy.init(); n=rclpy.create_node('u'); \\
p=n.create_publisher(String,'{NS}/prompt/text',10); time.sleep(1); p.publish(String(data='the red cube')); time.sleep(1)"
Topics: {NS}/seem_node/{{instances,semantic,confidence,objects,poses,markers,overlay}}; prompts on
{NS}/prompt/text, {NS}/prompt/point (pixels), {NS}/clicked_point, {NS}/prompt (seem_ros/Prompt).""", flush=True)


if __name__ == "__main__":
    sys.exit(main())
