"""The environment for running seem_ros processes on one machine: loopback-only discovery, our
Fast DDS profile (large images over shared memory) and a domain id that no other run on this
machine holds (a lock file)."""
from __future__ import annotations

import fcntl
import os
import sys
import tempfile
from pathlib import Path
from typing import Dict, Mapping, Optional

PROFILE = Path(__file__).resolve().parents[2] / "config" / "fastdds_localhost.xml"
_DROP = ("ROS_STATIC_PEERS", "ROS_LOCALHOST_ONLY", "FASTRTPS_DEFAULT_PROFILES_FILE", "ROS_DISCOVERY_SERVER",
         "ROS_SUPER_CLIENT", "CYCLONEDDS_URI", "ZENOH_ROUTER_CONFIG_URI")
_held = []          # lock files kept open for the life of the process


def reserve_domain_id(candidates=range(100, 150)) -> int:
    lock_dir = Path(tempfile.gettempdir()) / "seem_ros_domains"
    lock_dir.mkdir(exist_ok=True)
    ids = list(candidates)
    start = os.getpid() % len(ids)
    for k in range(len(ids)):
        d = ids[(start + k) % len(ids)]
        f = open(lock_dir / f"{d}.lock", "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        _held.append(f)
        return d
    raise RuntimeError(f"no free ROS domain id in {candidates}")


def localhost_env(domain_id: Optional[int] = None, base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ if base is None else base)
    for k in _DROP:
        env.pop(k, None)
    env.update({"ROS_DOMAIN_ID": str(reserve_domain_id() if domain_id is None else domain_id),
                "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
                "FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE), "PYTHONUNBUFFERED": "1"})
    # The PyPI ROS wheels re-execute Python once with LD_LIBRARY_PATH set and mark it; a child
    # that inherits the mark without the path cannot import rclpy.
    if os.path.join(sys.prefix, "lib") not in env.get("LD_LIBRARY_PATH", "").split(os.pathsep):
        env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    return env


def apply(env: Mapping[str, str]) -> None:
    """Use `env`'s ROS variables in this process (before its first rclpy context)."""
    for k in _DROP:
        os.environ.pop(k, None)
    for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "RMW_IMPLEMENTATION", "FASTDDS_DEFAULT_PROFILES_FILE"):
        os.environ[k] = env[k]
