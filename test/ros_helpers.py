"""Helpers for tests that run ROS 2 (rclpy) in this process and in child processes.

Everything here keeps DDS traffic on this machine and away from other test runs:
  - ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (Kilted ignores ROS_LOCALHOST_ONLY);
  - a ROS_DOMAIN_ID of our own, reserved with a lock file in a range kept for tests, so two test
    sessions on one machine (several engineers, CI) never see each other;
  - Fast DDS with config/fastdds_localhost.xml (shared memory + UDPv4 on 127.0.0.1 only), so large
    images are not dropped.
Discovery takes 0.05-2 s: wait for matched endpoints (``wait_for_matched``), never sleep.

Fixtures (registered in conftest.py): ``ros_env`` (session: the environment above, applied to this
process, returned as a dict for children) and ``ros_node`` (an rclpy node in a fresh context with an
executor; spin with ``ros_node.spin_until(...)``).

rclpy is imported lazily, so tests that do not use ROS do not pay for it.
"""
from __future__ import annotations

import fcntl
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_DIR = os.path.join(REPO_ROOT, "test")
FASTDDS_PROFILE = os.path.join(REPO_ROOT, "config", "fastdds_localhost.xml")

# Domain ids tried for tests (valid ids are 0..232; 0 is what a real robot uses by default).
TEST_DOMAIN_RANGE = range(150, 230)

# Environment variables that would send traffic elsewhere or override our profile.
_DROP_VARS = ("ROS_STATIC_PEERS", "ROS_LOCALHOST_ONLY", "FASTRTPS_DEFAULT_PROFILES_FILE",
              "ROS_DISCOVERY_SERVER", "ROS_SUPER_CLIENT", "CYCLONEDDS_URI", "ZENOH_ROUTER_CONFIG_URI")


class DomainReservation:
    """A ROS_DOMAIN_ID held through a lock file until ``release()`` (or process exit)."""

    def __init__(self, domain_id: int, handle):
        self.domain_id = domain_id
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def reserve_domain_id(preferred: Optional[int] = None) -> DomainReservation:
    """Reserve a domain id no other test session on this machine is using.

    ``SEEM_ROS_TEST_DOMAIN_ID`` in the environment forces one. Otherwise ids of TEST_DOMAIN_RANGE are
    tried from a pid-dependent start until a lock can be taken.
    """
    forced = os.environ.get("SEEM_ROS_TEST_DOMAIN_ID")
    if forced:
        return DomainReservation(int(forced), None)
    ids = list(TEST_DOMAIN_RANGE)
    start = (preferred - ids[0]) if preferred in TEST_DOMAIN_RANGE else os.getpid() % len(ids)
    lock_dir = os.path.join(tempfile.gettempdir(), "seem_ros_test_domains")
    os.makedirs(lock_dir, exist_ok=True)
    for k in range(len(ids)):
        domain_id = ids[(start + k) % len(ids)]
        handle = open(os.path.join(lock_dir, f"{domain_id}.lock"), "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        return DomainReservation(domain_id, handle)
    raise RuntimeError(f"no free ROS domain id in {TEST_DOMAIN_RANGE}")


def ros_test_env(domain_id: int, base: Optional[Mapping[str, str]] = None,
                 profile: str = FASTDDS_PROFILE) -> Dict[str, str]:
    """The environment for a ROS test process (this one or a child), as a new dict."""
    env = dict(os.environ if base is None else base)
    for var in _DROP_VARS:
        env.pop(var, None)
    env.update({
        "ROS_DOMAIN_ID": str(domain_id),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
        "FASTDDS_DEFAULT_PROFILES_FILE": profile,
        "PYTHONUNBUFFERED": "1",
        "RCUTILS_COLORIZED_OUTPUT": "0",
    })
    # Trap of the PyPI ROS wheels: their .pth bootstrapper re-executes Python once with
    # LD_LIBRARY_PATH set, and marks that with _ROS_WHEELS_BOOTSTRAP_COMPLETE. A child that inherits
    # the mark but not the library path cannot import rclpy: drop the mark so it bootstraps again.
    prefix_lib = os.path.join(sys.prefix, "lib")
    if prefix_lib not in env.get("LD_LIBRARY_PATH", "").split(os.pathsep):
        env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    # Children import this source tree and test/ helpers, whatever their working directory.
    pp = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([REPO_ROOT, TEST_DIR] + [p for p in pp if p not in (REPO_ROOT, TEST_DIR)])
    return env


def apply_env(env: Mapping[str, str]) -> Dict[str, Optional[str]]:
    """Set the ROS variables of ``env`` in this process; returns what to pass to ``restore_env``.

    Must happen before the first rclpy context/participant of the process is created: Fast DDS
    reads its profile file once."""
    keys = set(_DROP_VARS) | {"ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "RMW_IMPLEMENTATION",
                              "FASTDDS_DEFAULT_PROFILES_FILE"}
    saved = {k: os.environ.get(k) for k in keys}
    for k in keys:
        if k in env:
            os.environ[k] = env[k]
        else:
            os.environ.pop(k, None)
    return saved


def restore_env(saved: Mapping[str, Optional[str]]) -> None:
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


class RosProcess:
    """A child process (usually ``python -c CODE`` or ``python -m seem_ros...``) whose output is
    collected by a thread, so that a test can wait for a line without blocking on the pipe.

    Stop it with ``stop()`` (SIGINT, like Ctrl-C, then SIGKILL): returns the exit code.
    """

    def __init__(self, args: Sequence[str], env: Mapping[str, str], cwd: Optional[str] = None):
        self.args = list(args)
        self.proc = subprocess.Popen(self.args, env=dict(env), cwd=cwd or REPO_ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1,
                                     start_new_session=True)
        self.lines: List[str] = []
        self._queue: "queue.Queue[Optional[str]]" = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, predicate: Callable[[str], bool] | str, timeout: float = 10.0) -> str:
        """Return the first new output line for which ``predicate`` holds (a str: contained in it)."""
        test = (lambda s: predicate in s) if isinstance(predicate, str) else predicate
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching line within {timeout} s; output so far:\n{self.output}")
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"process exited ({self.proc.wait()}) before the line; output:\n{self.output}")
            if test(line):
                return line

    def send(self, text: str) -> None:
        """Write a line to the child's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._reader.join(5)
        return self.proc.returncode

    def __enter__(self) -> "RosProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def spawn_python(code: Optional[str] = None, module: Optional[str] = None, args: Sequence[str] = (),
                 env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None) -> RosProcess:
    """Start ``python -c code`` or ``python -m module`` with this interpreter (the venv's)."""
    if (code is None) == (module is None):
        raise ValueError("give code or module")
    argv = [sys.executable, "-c", code] if code is not None else [sys.executable, "-m", module]
    return RosProcess(argv + list(args), env if env is not None else os.environ, cwd)


def wait_for_matched(endpoint, count: int = 1, timeout: float = 10.0, spin: Optional[Callable[[], None]] = None) -> None:
    """Wait until a subscription has ``count`` matched publishers, or a publisher ``count`` matched
    subscriptions (discovery done). ``spin`` is called while waiting (e.g. an executor's spin_once)."""
    get = getattr(endpoint, "get_publisher_count", None) or getattr(endpoint, "get_subscription_count")
    deadline = time.monotonic() + timeout
    while get() < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{getattr(endpoint, 'topic_name', endpoint)}: {get()} of {count} "
                               f"matched endpoints after {timeout} s")
        if spin is not None:
            spin()
        else:
            time.sleep(0.01)


class NodeHarness:
    """An rclpy node in its own context, with a single-threaded executor."""

    def __init__(self, name: str = "seem_ros_test"):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_once(self, timeout: float = 0.05) -> None:
        self.executor.spin_once(timeout_sec=timeout)

    def spin_until(self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not met within {timeout} s")
            self.spin_once()

    def wait_for_matched(self, endpoint, count: int = 1, timeout: float = 10.0) -> None:
        wait_for_matched(endpoint, count, timeout, spin=self.spin_once)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)

    def __getattr__(self, name):  # create_publisher, create_subscription, get_logger, ...
        if name == "node":
            raise AttributeError(name)
        return getattr(self.node, name)


@pytest.fixture(scope="session")
def ros_env(tmp_path_factory):
    """The ROS test environment (own domain id, localhost only, our Fast DDS profile), applied to
    this process for the whole session; pass the returned dict to child processes. Nodes keep
    their exported ONNX encoders in the session's own cache, not the user's."""
    pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed")
    reservation = reserve_domain_id()
    env = dict(ros_test_env(reservation.domain_id), SEEM_ROS_CACHE=str(tmp_path_factory.mktemp("seem_ros_cache")))
    saved = apply_env(env)
    try:
        yield env
    finally:
        restore_env(saved)
        reservation.release()


@pytest.fixture
def ros_node(ros_env, request):
    """A NodeHarness (rclpy node + executor) for one test."""
    harness = NodeHarness("test_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:50])
    try:
        yield harness
    finally:
        harness.close()
