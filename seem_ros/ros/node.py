"""The seem_ros node: camera and prompt topics in; labelled masks, objects and poses out.

    seem_ros_node --ros-args --params-file config/seem_node.yaml -r image:=/camera/color/image_raw

A managed (lifecycle) node: configure loads the model, activate subscribes and starts the worker,
deactivate stops them and frees GPU memory (the model moves to host memory), cleanup drops the
model. With `autostart` (default true) it configures and activates itself at start-up; a missing
or corrupt checkpoint then ends the process with a message and exit code 1.

Threads: subscription callbacks only store the newest message (colour) or a few recent ones
(depth, camera_info, for pairing by stamp) and queue prompts; one worker thread always takes the
NEWEST colour frame, so a slow model drops frames (counted in /diagnostics) instead of falling
behind. Everything between messages and messages is seem_ros.perception.

Topics, services and parameters: see the README (section "Node interface")."""
from __future__ import annotations

import importlib.util
import math
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections import deque
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, PointStamped, PoseArray, PoseStamped
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from seem_ros.msg import LabelMap, Prompt, SegmentedObjectArray
from seem_ros.srv import RemoveObject

from ..defaults import BUNDLED_CHECKPOINT, BUNDLED_VOCABULARY
from ..overlay import draw_overlay
from ..geometry.pose import POSE_RIM_PX
from ..perception import FIT, FrameInput, Perception, PromptRequest
from . import prompt_messages as pm
from .conversions import (ConversionError, camera_info_from_msg, compressed_to_rgb, image_from_cdr,
                          image_to_depth_image, image_to_rgb, labels_to_image, rgb_to_image)
from .result_messages import label_map_msg, markers_msg, objects_msg, poses_msg
from .process_tuning import tune_process

NODE_NAME = "seem_node"
# Prompts must not be lost: reliable, and deep enough for a burst of clicks.
PROMPT_QOS = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
# Outputs: reliable keep-last 1 (best-effort subscribers match too; a slow one only gets the newest).
OUTPUT_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Inputs: sensor-data QoS (best effort) with keep-last 1: never queue stale frames.
SENSOR_QOS = QoSProfile(depth=1, reliability=qos_profile_sensor_data.reliability,
                        durability=qos_profile_sensor_data.durability, history=HistoryPolicy.KEEP_LAST)

POSE_SILENT_S = 0.5      # camera_pose this far from every image: nobody publishes it (any more)

PARAMS = {   # name: (default, description, changeable while configured)
    "checkpoint": ("", "model weights; empty = the bundled small SEEM", False),
    "device": ("auto", "auto | cpu | cuda | cuda:N", False),
    "engine": ("auto", "image encoder engine: auto (onnxruntime on the CPU where installed, else torch) | torch | "
                       "onnxruntime (CPU, fp32; an ONNX graph per input size, exported in the background "
                       "while torch encodes, cached in ~/.cache/seem_ros)", False),
    "precision": ("fp32", "fp32 | fp16 | bf16 (fp16/bf16 on CUDA only)", False),
    "short_side": (0, "model input short side in pixels; 0 = the checkpoint's", False),
    "compressed": (False, "subscribe to image/compressed (jpeg/png) instead of image", False),
    "vocabulary": (list(BUNDLED_VOCABULARY), "class names for labels, semantic image and panoptic mode", True),
    "mode": ("prompted", "prompted: prompted objects only | panoptic: also every vocabulary segment", True),
    "score_threshold": (0.5, "objects with a lower mask score are reported lost", True),
    "panoptic_threshold": (-1.0, "class confidence for panoptic segments; negative = the checkpoint's "
                                 "(official SEEM 0.8, the bundled model 0.2)", True),
    "max_objects": (20, "most prompted objects tracked at once", True),
    "lost_timeout_s": (10.0, "a lost object is forgotten after this long unseen", True),
    "depth_wait_s": (0.05, "how long the pose preparation, which overlaps the model, waits for a colour frame's "
                           "depth; depth arriving later is still used if it comes before the model is done", True),
    "sync_slop_s": (0.02, "depth/camera_info are paired with colour within this stamp difference", True),
    "min_pose_points": (20, "valid depth pixels needed for a pose", True),
    "pose_rim_px": (POSE_RIM_PX, "a mask's rim this wide (pixels at 480 rows, scaled) is left out of its pose", True),
    "support_plane": (True, "poses in the frame of the largest plane facing image-up (table, floor): "
                            "up and the objects' unseen bottoms; false for scenes without one", True),
    "zoom_refine": (True, "answer corrective prompts (mode refine) on a crop around the object: "
                          "one more image encoding each", True),
    "honour_clicks": (True, "a click the model's mask disobeys is enforced with the model's answer to that "
                            "click alone (one more decoder pass when it happens)", True),
    "fixed_frame": ("", "a frame fixed in the world (odom, map): with tf, each frame's camera pose there lets a lost "
                        "object be looked for where it was left after the camera moved; empty = take the "
                        "pose from the camera_pose topic when something publishes it", True),
    "track_tokens": (512, "prompt points per tracking decoder pass, shared by the tracked objects; "
                          "256 decodes about a third faster (see the README's tracking section)", True),
    "autostart": (True, "configure and activate at start-up (false: wait for lifecycle transitions)", False),
}


class SeemNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        for name, (default, desc, dynamic) in PARAMS.items():
            self.declare_parameter(name, default, ParameterDescriptor(
                description=desc + ("" if dynamic else " (read at configure)")))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.perception: Optional[Perception] = None
        self.device_name = "none"
        self._lock = threading.Lock()            # newest-frame slot, buffers, prompt queue
        self._model_lock = threading.Lock()      # the perception pipeline (worker vs services)
        self._wake = threading.Condition(self._lock)
        self._latest = None                      # (msg, receive time) of the newest colour frame
        self._depths: deque = deque(maxlen=8)
        self._infos: deque = deque(maxlen=8)
        self._poses: deque = deque(maxlen=8)     # camera_pose, paired with colour by stamp
        self._prompts: deque = deque(maxlen=200)
        self._seen_image = False
        self._frame_meta = None                  # (K, frame_id, (h, w)) of the last processed frame
        self._worker: Optional[threading.Thread] = None
        self._depth_pool = ThreadPoolExecutor(1, thread_name_prefix="seem_depth")   # see _process
        self._running = False
        self._subs: list = []
        self._pubs: dict = {}
        self._stats = _Stats()
        self._last_error = ("", 0.0)
        self._pose_state = "off"                 # the camera pose: off | ok (from where) | why not (diagnostics)
        self._tf = None
        # /diagnostics and the label map exist in every state, so a user sees why nothing happens.
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics)
        # Outputs and services exist in every state, so clients can match before activate.
        self._pubs = {
            "instances": self.create_publisher(Image, "~/instances", OUTPUT_QOS),
            "semantic": self.create_publisher(Image, "~/semantic", OUTPUT_QOS),
            "confidence": self.create_publisher(Image, "~/confidence", OUTPUT_QOS),
            "objects": self.create_publisher(SegmentedObjectArray, "~/objects", OUTPUT_QOS),
            "poses": self.create_publisher(PoseArray, "~/poses", OUTPUT_QOS),
            "markers": self.create_publisher(MarkerArray, "~/markers", OUTPUT_QOS),
            "overlay": self.create_publisher(Image, "~/overlay", OUTPUT_QOS),
            "label_map": self.create_publisher(LabelMap, "~/label_map", LATCHED_QOS),
        }
        # Not `self._services`: that is rclpy's list of the node's services that the executor
        # waits on (lifecycle and parameter services too); replacing it left those unanswered.
        self._own_services = [self.create_service(Trigger, "~/clear", self._on_clear),
                              self.create_service(RemoveObject, "~/remove", self._on_remove)]

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            self.perception = self._load()
        except Exception as e:     # a user's checkpoint can fail in many ways; all end here
            self.error(f"cannot load the model: {e}")
            return TransitionCallbackReturn.FAILURE
        self._publish_label_map()
        self._init_tf()
        self.get_logger().info(f"configured: model on {self.device_name}, vocabulary of "
                               f"{len(self.perception.vocabulary)} classes, mode {self.perception.mode}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        p = self.perception
        if p is not None and self.device_name.startswith("cuda"):
            p.predictor.model.to(p.predictor.device)
        image_topic = ("image/compressed", CompressedImage) if self._param("compressed") else ("image", Image)
        # The executor serves ready subscriptions in creation order: prompts, depth and
        # camera_info that arrived with a frame are taken before it, so they apply to that frame.
        self._subs = [
            self.create_subscription(String, "prompt/text", self._on_text, PROMPT_QOS),
            self.create_subscription(Point, "prompt/point", self._on_pixel_point, PROMPT_QOS),
            self.create_subscription(PointStamped, "clicked_point", self._on_clicked_point, PROMPT_QOS),
            self.create_subscription(Prompt, "prompt", self._on_prompt, PROMPT_QOS),
            self.create_subscription(Image, "depth", self._on_depth, SENSOR_QOS, raw=True),
            self.create_subscription(CameraInfo, "camera_info", self._on_info, SENSOR_QOS),
            self.create_subscription(PoseStamped, "camera_pose", self._on_camera_pose, SENSOR_QOS),
            # Colour and depth as serialized bytes, read in place (conversions.image_from_cdr; colour
            # by the worker): rclpy's deserialization would copy the pixels in this thread.
            self.create_subscription(image_topic[1], image_topic[0], self._on_image, SENSOR_QOS,
                                     raw=image_topic[1] is Image),
        ]
        self._running = True
        self._worker = threading.Thread(target=self._work, name="seem_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(f"active: listening on {self.resolve_topic_name(image_topic[0])}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._stop_worker()
        for s in self._subs:
            self.destroy_subscription(s)
        self._subs = []
        with self._lock:
            self._latest = None       # else activate would answer a frame from before deactivate
        p = self.perception
        if p is not None and self.device_name.startswith("cuda"):
            import torch
            with self._model_lock:
                p.predictor.model.to("cpu")       # frees GPU memory; activate moves it back
                p.predictor.embedding = None
                p.history.clear()
            torch.cuda.empty_cache()
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        with self._model_lock:
            self._end_exports()
            self.perception = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._stop_worker()
        self._end_exports()
        return TransitionCallbackReturn.SUCCESS

    def _end_exports(self) -> None:
        if self.perception is not None and self.perception.predictor.onnx_encoder is not None:
            self.perception.predictor.onnx_encoder.close()

    def _stop_worker(self) -> None:
        with self._lock:
            self._running = False
            self._wake.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=30)
            self._worker = None

    def _load(self) -> Perception:
        import torch
        from ..inference import SeemPredictor
        from ..model.checkpoint import load_model

        path = self._param("checkpoint") or str(BUNDLED_CHECKPOINT)
        dev = self._param("device")
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        if dev.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device {dev!r} asked for, but torch sees no CUDA device")
        prec = self._param("precision")
        dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
        if prec not in dtypes:
            raise RuntimeError(f"precision must be one of {list(dtypes)}, not {prec!r}")
        if prec != "fp32" and dev == "cpu":
            self.get_logger().warning(f"precision {prec} is for CUDA; running fp32 on the CPU")
            prec = "fp32"
        engine = self._param("engine")
        if engine == "auto":          # onnxruntime: node throughput 1.3-1.4x on a 2-core CPU (README, Engines)
            engine = "onnxruntime" if dev == "cpu" and importlib.util.find_spec("onnxruntime") else "torch"
        model = load_model(path)
        pred = SeemPredictor(model, device=dev, short_side=self._param("short_side") or None,
                             vocabulary=list(self._param("vocabulary")), dtype=dtypes[prec],
                             engine=engine, background_export=True)
        if pred.onnx_encoder is not None:
            pred.onnx_encoder.notify = self.get_logger().info
            pred.onnx_encoder.warn = self.error
        self.device_name = dev if dev == "cpu" else f"{dev} ({torch.cuda.get_device_name(torch.device(dev))})"
        self.get_logger().info(f"loaded {path} ({model.cfg.name}, {prec}) on {self.device_name}, "
                               f"engine {pred.engine}")
        return Perception(pred, mode=self._param("mode"), max_objects=self._param("max_objects"),
                          min_score=self._param("score_threshold"),
                          panoptic_threshold=self._param("panoptic_threshold"),
                          lost_timeout_s=self._param("lost_timeout_s"),
                          min_pose_points=self._param("min_pose_points"), pose_rim_px=self._param("pose_rim_px"),
                          zoom_refine=self._param("zoom_refine"), support_plane=self._param("support_plane"),
                          track_tokens=self._param("track_tokens"), honour_clicks=self._param("honour_clicks"))

    def _init_tf(self) -> None:
        """tf2 brings RViz clicks from the fixed frame into the camera frame. Without it (e.g. the
        pip-only install), clicks must already be in the image's frame; others are refused with
        a message that says so."""
        try:
            from tf2_ros import Buffer, TransformListener
        except ImportError:
            self._tf = None
            self.get_logger().info("tf2_ros not installed: clicked_point is accepted only in the image's own frame")
            return
        buf = Buffer()
        self._tf = (buf, TransformListener(buf, self))

    # ------------------------------------------------------------------ parameters
    def _param(self, name):
        return self.get_parameter(name).value

    def _on_set_parameters(self, params) -> SetParametersResult:
        configured = self.perception is not None
        for p in params:
            if p.name not in PARAMS:
                continue
            if configured and not PARAMS[p.name][2]:
                return SetParametersResult(successful=False,
                                           reason=f"{p.name} is read at configure: deactivate, cleanup and configure again")
            try:
                if p.name == "mode" and p.value not in ("prompted", "panoptic"):
                    raise ValueError("mode must be 'prompted' or 'panoptic'")
                if p.name == "vocabulary" and not [v for v in p.value if v.strip()]:
                    raise ValueError("vocabulary needs at least one class name")
                if p.name == "score_threshold" and not 0 <= p.value <= 1:
                    raise ValueError("score_threshold must be in [0, 1]")
                if p.name == "panoptic_threshold" and not p.value <= 1:
                    raise ValueError("panoptic_threshold must be at most 1 (negative: the checkpoint's)")
                if p.name in ("max_objects", "min_pose_points") and p.value < 1:
                    raise ValueError(f"{p.name} must be at least 1")
                if p.name == "depth_wait_s" and not 0 <= p.value <= 1:
                    raise ValueError("depth_wait_s must be in [0, 1] seconds")
                if p.name == "pose_rim_px" and not 0 <= p.value <= 50:
                    raise ValueError("pose_rim_px must be in [0, 50]")
                if p.name == "track_tokens" and not 8 <= p.value <= 4096:
                    raise ValueError("track_tokens must be in [8, 4096]")
            except (ValueError, TypeError) as e:
                return SetParametersResult(successful=False, reason=str(e))
        if configured:
            with self._model_lock:
                for p in params:
                    self._apply_param(p.name, p.value)
        return SetParametersResult(successful=True)

    def _apply_param(self, name, value) -> None:
        per = self.perception
        if name == "vocabulary":
            per.set_vocabulary(list(value))
            self._publish_label_map()
        elif name == "mode":
            per.configure(mode=value)
        elif name == "score_threshold":
            per.configure(min_score=value)
        elif name in ("panoptic_threshold", "max_objects", "lost_timeout_s", "zoom_refine", "honour_clicks",
                      "track_tokens"):
            per.configure(**{name: value})
        elif name == "min_pose_points":
            per.min_pose_points = int(value)
        elif name == "pose_rim_px":
            per.pose_rim_px = float(value)
        elif name == "support_plane":
            per.support_plane, per.plane = bool(value), None

    # ------------------------------------------------------------------ callbacks (cheap)
    def _on_image(self, msg) -> None:
        with self._lock:
            if self._latest is not None:
                self._stats.dropped += 1        # replaced before the worker took it
            self._latest = (msg, time.time())
            self._seen_image = True
            self._stats.received.append(time.monotonic())
            self._wake.notify()

    def _on_depth(self, buf: bytes) -> None:
        try:                  # a view of the bytes (image_from_cdr), as colour: no copy here
            msg = image_from_cdr(buf)
        except ConversionError as e:
            self.error(f"depth: {e}")
            return
        with self._lock:
            self._depths.append(msg)
            self._wake.notify_all()

    def _on_info(self, msg: CameraInfo) -> None:
        # Read here, while the model runs, not on the worker's way to the model (0.15 ms a frame).
        try:
            K, w, h = camera_info_from_msg(msg)
            K.flags.writeable = False             # shared by every use of this message
            parsed = (K, w, h)
        except ConversionError as e:
            parsed = str(e)                       # reported when a frame needs it
        with self._lock:
            self._infos.append(_CameraInfo(msg.header, parsed))
            self._wake.notify_all()

    def _on_camera_pose(self, msg: PoseStamped) -> None:
        with self._lock:
            self._poses.append(msg)

    def _queue_prompt(self, kind: str, msg) -> None:
        """Checked here, against the last image the worker processed, so that a bad prompt is
        reported at once; applied by the worker to the next frame."""
        with self._lock:
            seen, meta = self._seen_image, self._frame_meta
        topic = self.resolve_topic_name("image/compressed" if self._param("compressed") else "image")
        if not seen:
            self.error(f"{kind}: no image received yet on {topic}; prompt dropped (send it once the camera runs)")
            return
        item = (kind, msg)
        if meta is not None:
            try:
                item = self._prompt_request(kind, msg, *meta)
            except ConversionError as e:
                self.error(f"{kind}: {e}")
                return
        with self._lock:
            self._prompts.append(item)
            self._wake.notify()

    def _on_text(self, msg: String) -> None:
        self._queue_prompt("prompt/text", msg)

    def _on_pixel_point(self, msg: Point) -> None:
        self._queue_prompt("prompt/point", msg)

    def _on_clicked_point(self, msg: PointStamped) -> None:
        self._queue_prompt("clicked_point", msg)

    def _on_prompt(self, msg: Prompt) -> None:
        self._queue_prompt("prompt", msg)

    def _on_clear(self, request, response):
        with self._model_lock:
            if self.perception is not None:
                self.perception.clear()
        response.success, response.message = True, "all objects cleared"
        return response

    def _on_remove(self, request, response):
        with self._model_lock:
            ok = self.perception is not None and self.perception.remove(int(request.id))
        response.success = bool(ok)
        response.message = "" if ok else f"no object with id {request.id}"
        return response

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        while True:
            with self._lock:
                while self._running and self._latest is None:
                    self._wake.wait(timeout=0.5)
                if not self._running:
                    return
                msg, received = self._latest
                self._latest = None
                prompts = list(self._prompts)
                self._prompts.clear()
                infos = list(self._infos)
            try:
                self._process(msg, received, prompts, infos)
            except Exception as e:       # never let one frame end the node
                self.error(f"frame received at {received:.3f}: {type(e).__name__}: {e}")

    def _has_depth(self, stamp: float, depths=None) -> bool:
        slop = self._param("sync_slop_s")
        return any(abs(_seconds(d.header.stamp) - stamp) <= slop
                   for d in (self._depths if depths is None else depths))

    def _depth_and_info(self, stamp: float, deadline: float):
        """The depth images and camera_infos held once this stamp's depth is in, or at the deadline.
        Depth is read only for poses, after the model: its transport overlaps the model's time
        whatever order the camera publishes colour and depth in."""
        with self._lock:
            while self._depths and not self._has_depth(stamp) and time.monotonic() < deadline:
                self._wake.wait(timeout=max(deadline - time.monotonic(), 0.0))
            return list(self._depths), list(self._infos)

    def _process(self, msg, received, prompts, infos) -> None:
        t0 = time.perf_counter()
        picked = time.time()
        depth_deadline = time.monotonic() + self._param("depth_wait_s")
        try:
            if isinstance(msg, bytes):
                msg = image_from_cdr(msg)
            rgb = compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else image_to_rgb(msg)
        except ConversionError as e:
            self.error(f"image: {e}")
            with self._lock:         # prompts waiting for a valid frame wait for the next one
                self._prompts.extendleft(reversed(prompts))
            return
        stamp = _seconds(msg.header.stamp)
        h, w = rgb.shape[:2]
        K = self._camera_matrix(infos, stamp, (h, w))      # for 3D clicks; poses take this stamp's
        with self._lock:
            self._frame_meta = (K, msg.header.frame_id, (h, w))
        requests = []
        for item in prompts:
            if isinstance(item, PromptRequest):
                requests.append(item)
                continue
            try:              # arrived before the first frame was processed: checked now
                requests.append(self._prompt_request(*item, K, msg.header.frame_id, (h, w)))
            except ConversionError as e:
                self.error(f"{item[0]}: {e}")
        per = self.perception
        if per is None:
            return
        # The frame's depth, K and support plane are made ready on the depth thread while the
        # model runs: off the path to ~/objects (the plane alone 0.4-1.2 ms a frame after the model
        # at 640x480 on a 2-core CPU).
        prep = self._depth_pool.submit(self._prepare_depth, per, stamp, (h, w), depth_deadline,
                                       per.needs_support(len(requests)))
        T, fixed = self._camera_pose(msg.header.frame_id, msg.header.stamp) or (None, "")
        with self._model_lock:
            # New masks are cut at depth steps; the depth is waited for only if one needs it.
            res = per.segment(FrameInput(rgb, stamp, depth=lambda: (prep.result() or (None,))[0], K=K,
                                         T_fixed_cam=T, fixed_frame=fixed), requests)
        try:
            ready = prep.result()
        except Exception as e:        # reported; the frame still gets its masks
            self.error(f"depth: {type(e).__name__}: {e}")
            ready = (None, None, None)
        if ready is None:             # its depth came after the deadline: look again now
            depths, infos = self._depth_and_info(stamp, depth_deadline)
            ready = (self._depth(depths, stamp, (h, w)), self._camera_matrix(infos, stamp, (h, w)), FIT)
        per.locate(res, *ready)
        for e in res.errors:
            self.error(e)
        t_objects = self._publish(res, msg.header, rgb)
        t2 = time.perf_counter()
        self._stats.done(t_objects - stamp if stamp > 0 else float("nan"), res.timings["model"],
                         1000 * (t2 - t0), 1000 * (picked - received),
                         1000 * (received - stamp) if stamp > 0 else float("nan"))

    def _prepare_depth(self, per, stamp, size, deadline, plane: bool):
        """(depth, K, support plane or FIT) of this frame, on the depth thread; None when its depth
        has not come by the deadline (the worker then looks again after the model, as depth
        from a slower driver may still arrive while the model runs)."""
        depths, infos = self._depth_and_info(stamp, deadline)
        if depths and not self._has_depth(stamp, depths):
            return None
        depth, K = self._depth(depths, stamp, size), self._camera_matrix(infos, stamp, size)
        return depth, K, per.fit_support(depth, K) if plane and depth is not None else FIT

    def _camera_matrix(self, infos, stamp, size) -> Optional[np.ndarray]:
        if not infos:
            return None
        info = _nearest(infos, stamp)
        if isinstance(info.parsed, str):
            self.error(f"camera_info: {info.parsed}")
            return None
        K, w, h = info.parsed
        if (h, w) != size:
            if abs(w / h - size[1] / size[0]) > 0.01:
                self.error(f"camera_info is {w}x{h} but the image is {size[1]}x{size[0]}: no poses")
                return None
            K = K.copy()
            K[0] *= size[1] / w          # the same camera at another resolution: scale K
            K[1] *= size[0] / h
        return K

    def _depth(self, depths, stamp, size) -> Optional[np.ndarray]:
        if not depths:
            return None
        d = _nearest(depths, stamp)
        ds = _seconds(d.header.stamp)
        if abs(ds - stamp) > self._param("sync_slop_s"):
            self.warn(f"depth: no depth image within {self._param('sync_slop_s')} s of the colour "
                      f"stamp (nearest {ds - stamp:+.3f} s): no poses for this frame")
            return None
        if (d.height, d.width) != size:
            self.error(f"depth: {d.width}x{d.height} but the colour image is {size[1]}x{size[0]}; "
                       "depth must be registered to colour: no poses")
            return None
        try:
            depth = image_to_depth_image(d)       # converted to metres per object box
        except ConversionError as e:
            self.error(f"depth: {e}")
            return None
        if not depth.any_valid():
            self.error("depth: no valid reading in the depth image (all zero, NaN or negative): no poses")
            return None
        return depth

    def _prompt_request(self, kind, msg, K, frame_id, size) -> PromptRequest:
        if kind == "prompt/text":
            return pm.from_text(msg.data)
        if kind == "prompt/point":
            return pm.check_pixels(pm.from_pixel_point(msg), size)
        if kind == "prompt":
            return pm.check_pixels(pm.from_prompt(msg), size)
        # clicked_point: RViz sends a 3D point in its fixed frame.
        if K is None:
            raise ConversionError("no camera_info received: cannot project a 3D click into the image")
        xyz = np.array([msg.point.x, msg.point.y, msg.point.z])
        src = msg.header.frame_id
        if src and src != frame_id:
            xyz = self._transform(xyz, src, frame_id, msg.header.stamp)
        r = PromptRequest(points=pm.project_point(xyz, K, size), point_labels=np.ones(1, np.int64),
                          stamp=pm.stamp_seconds(msg.header.stamp), source="clicked_point")
        return r

    def _transform(self, xyz, src: str, dst: str, stamp) -> np.ndarray:
        if self._tf is None:
            raise ConversionError(f"point is in frame {src!r}, the image in {dst!r}, and tf2_ros is not "
                                  "installed here: publish the point in the image's frame, or install tf2_ros")
        from rclpy.duration import Duration
        from rclpy.time import Time
        buf = self._tf[0]
        try:
            t = buf.lookup_transform(dst, src, Time.from_msg(stamp), timeout=Duration(seconds=0.1))
        except Exception as e:
            try:                       # RViz stamps clicks with wall time: fall back to latest
                t = buf.lookup_transform(dst, src, Time())
            except Exception:
                raise ConversionError(f"cannot transform the point from {src!r} to {dst!r}: {e}") from None
        T = _transform_matrix(t.transform.translation, t.transform.rotation)
        return T[:3, :3] @ xyz + T[:3, 3]

    def _camera_pose(self, frame_id: str, stamp) -> Optional[Tuple[np.ndarray, str]]:
        """The camera's pose in a fixed frame at the image's stamp (4x4, optical frame -> fixed,
        and that frame's name): from tf when `fixed_frame` is set, else from the camera_pose topic
        (a visual odometry's or a simulator's PoseStamped of the optical frame, which must come
        with or before its image: it is looked up as the frame is taken) when it publishes; None
        when neither has one for that moment. Not the latest pose instead: a moving camera's old
        pose would send lost objects' search to the wrong place. A failure is reported when its
        reason changes, not on every frame; the frame goes on without it."""
        fixed = self._param("fixed_frame")
        if not fixed:
            return self._topic_pose(_seconds(stamp))
        if self._tf is None:
            why = "tf2_ros is not installed: fixed_frame is ignored"
        elif not frame_id:
            why = "the image has no header.frame_id: no camera pose in fixed_frame"
        else:
            from rclpy.time import Time
            try:
                t = self._tf[0].lookup_transform(fixed, frame_id, Time.from_msg(stamp)).transform
                T = _transform_matrix(t.translation, t.rotation)
                self._pose_state = f"ok (tf, in {fixed!r})"
                return T, fixed
            except Exception as e:
                why = f"no transform from {frame_id!r} to fixed_frame {fixed!r} at the image's stamp: {e}"
        return self._pose_failed(why)

    def _topic_pose(self, stamp: float) -> Optional[Tuple[np.ndarray, str]]:
        with self._lock:
            poses = list(self._poses)
        if not poses:
            self._pose_state = "off"
            return None
        m = _nearest(poses, stamp)
        dt = abs(_seconds(m.header.stamp) - stamp)
        if dt > POSE_SILENT_S:               # nothing publishes it (any more): off, as without it
            self._pose_state = "off"
            return None
        if dt > self._param("sync_slop_s"):
            return self._pose_failed(f"camera_pose: none within sync_slop_s of the image (nearest {dt:.3f} s away)")
        if not m.header.frame_id:
            return self._pose_failed("camera_pose has no header.frame_id (the fixed frame it is in)")
        q = m.pose.orientation
        T = _transform_matrix(m.pose.position, q)
        if not np.isfinite(T).all() or abs(math.sqrt(q.x ** 2 + q.y ** 2 + q.z ** 2 + q.w ** 2) - 1) > 0.01:
            return self._pose_failed("camera_pose is not finite or its orientation not a unit quaternion")
        self._pose_state = f"ok (camera_pose in {m.header.frame_id!r})"
        return T, m.header.frame_id

    def _pose_failed(self, why: str) -> Optional[Tuple[np.ndarray, str]]:
        """Reports why there is no pose (once per reason); None, the frame goes on without it."""
        if why != self._pose_state:
            self.error(why)
        self._pose_state = why
        return None

    # ------------------------------------------------------------------ outputs
    def _publish(self, res, header: Header, rgb) -> float:
        """Each output is built only while someone subscribes (images cost milliseconds each).
        Returns when ~/objects went out, on the node's clock (sim time under a bag or simulator)."""
        p = self._pubs
        now = lambda: self.get_clock().now().nanoseconds * 1e-9
        if not p:
            return now()
        wanted = lambda k: p[k].get_subscription_count() > 0
        # ~/objects first: it is what grasping waits for; the images take milliseconds each.
        p["objects"].publish(objects_msg(res, header))
        t_objects = now()
        if wanted("instances"):
            p["instances"].publish(labels_to_image(res.instances, header, "16UC1"))
        if wanted("semantic"):
            p["semantic"].publish(labels_to_image(res.semantic, header, "mono8"))
        if wanted("confidence"):
            p["confidence"].publish(labels_to_image(res.confidence, header, "mono8"))
        if wanted("poses"):
            p["poses"].publish(poses_msg(res, header))
        if wanted("markers"):
            p["markers"].publish(markers_msg(res, header))
        if wanted("overlay"):
            p["overlay"].publish(rgb_to_image(draw_overlay(rgb, res.objects), header))
        return t_objects

    def _publish_label_map(self) -> None:
        if "label_map" in self._pubs and self.perception is not None:
            h = Header(stamp=self.get_clock().now().to_msg())
            self._pubs["label_map"].publish(label_map_msg(self.perception.vocabulary, h))

    # ------------------------------------------------------------------ errors and diagnostics
    def error(self, text: str) -> None:
        self.get_logger().error(text)
        self._last_error = (text, time.monotonic())
        self._publish_diagnostics(level=DiagnosticStatus.ERROR, message=text)

    def warn(self, text: str) -> None:
        self.get_logger().warning(text, throttle_duration_sec=5.0)

    def _publish_diagnostics(self, level=None, message=None) -> None:
        s = self._stats.summary()
        err, t_err = self._last_error
        recent = err and time.monotonic() - t_err < 5.0
        if level is None:
            level = DiagnosticStatus.WARN if recent else DiagnosticStatus.OK
            message = f"last error: {err}" if recent else (
                "running" if self._running else f"state: {self._state_label()}")
        st = DiagnosticStatus(level=level if isinstance(level, bytes) else bytes([level]),
                              name=f"{self.get_name()}: pipeline", message=message,
                              hardware_id=self.device_name)
        enc = self.perception.predictor.onnx_encoder if self.perception else None
        vals = {"state": self._state_label(), "device": self.device_name,
                "engine": enc.status() if enc is not None else "torch", "camera_pose": self._pose_state, **s,
                "objects": str(len(self.perception.tracker.tracks)) if self.perception else "0",
                "last_error": err}
        st.values = [KeyValue(key=k, value=str(v)) for k, v in vals.items()]
        self._diag_pub.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[st]))

    def _state_label(self) -> str:
        if self._running:
            return "active"
        return "inactive" if self.perception is not None else "unconfigured"


class _Stats:
    """Rates and latencies over the last few seconds, for /diagnostics."""

    def __init__(self):
        self.received: deque = deque(maxlen=300)
        self.processed: deque = deque(maxlen=300)
        self.latency: deque = deque(maxlen=50)
        self.model_ms: deque = deque(maxlen=50)
        self.node_ms: deque = deque(maxlen=50)
        self.wait_ms: deque = deque(maxlen=50)
        self.transport_ms: deque = deque(maxlen=50)
        self.overhead_ms: deque = deque(maxlen=50)
        self.dropped = 0

    def done(self, latency_s, model_ms, total_ms, wait_ms, transport_ms) -> None:
        """latency_s: image stamp -> ~/objects published; total_ms: frame taken -> all published."""
        self.processed.append(time.monotonic())
        self.latency.append(latency_s * 1000)
        self.model_ms.append(model_ms)
        self.node_ms.append(total_ms)
        self.wait_ms.append(wait_ms)
        self.transport_ms.append(transport_ms)
        # Per frame, so that the model's frame-to-frame spread does not enter it (a difference of
        # two medians would carry it).
        self.overhead_ms.append(latency_s * 1000 - model_ms)

    @staticmethod
    def _rate(ts) -> float:
        now = time.monotonic()
        recent = [t for t in ts if now - t < 5.0]
        return len(recent) / 5.0

    def summary(self) -> dict:
        med = lambda d: f"{np.median(d):.1f}" if len(d) else "nan"
        return {"input_rate_hz": f"{self._rate(self.received):.2f}",
                "output_rate_hz": f"{self._rate(self.processed):.2f}",
                "latency_ms": med(self.latency), "model_ms": med(self.model_ms),
                "processing_ms": med(self.node_ms), "dropped_frames": str(self.dropped),
                # stamp -> callback (transport, meaningful when stamps are this machine's clock)
                # and callback -> worker (waiting for the previous frame to finish)
                "transport_ms": med(self.transport_ms), "wait_ms": med(self.wait_ms),
                # stamp -> ~/objects published, minus the model: all that the transport in and the
                # node add
                "overhead_ms": med(self.overhead_ms),
                "frames": str(len(self.processed))}


@dataclass
class _CameraInfo:
    header: Header
    parsed: object          # (K, width, height), or why it cannot be used


def _nearest(msgs, stamp: float):
    return min(msgs, key=lambda m: abs(_seconds(m.header.stamp) - stamp))


def _seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def _transform_matrix(p, q) -> np.ndarray:
    """A translation (x, y, z) and a quaternion (x, y, z, w) message -> 4x4."""
    T = np.eye(4)
    T[:3, :3] = _quat_to_R(q.x, q.y, q.z, q.w)
    T[:3, 3] = (p.x, p.y, p.z)
    return T


def _quat_to_R(x, y, z, w) -> np.ndarray:
    n = math.sqrt(x * x + y * y + z * z + w * w) or 1.0
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def main(argv: Optional[List[str]] = None) -> int:
    tune_process()
    rclpy.init(args=argv)
    node = SeemNode()
    code = 0
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                print(f"[{NODE_NAME}] FATAL: could not configure (see the error above); exiting", file=sys.stderr)
                return 1
            node.trigger_activate()
        # One executor thread: callbacks only store messages (the worker thread does the work).
        ex = SingleThreadedExecutor()
        ex.add_node(node)
        ex.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._stop_worker()
        node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
