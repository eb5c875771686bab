#!/usr/bin/env bash
# Set up janus_vln_ros from scratch, in one command:
#   apt packages the embedded simulator needs (EGL/Mesa; only when run as root),
#   a virtual environment in .venv with every Python dependency pinned (requirements/*.txt),
#   the package itself (editable, so `janus-vln` is on the venv's PATH), and a colcon build.
# Options (environment): VENV=path (default .venv); JANUS_PROFILE=full|robot (robot: the policy and
# ROS only, no simulator or training stack); PYTHON=python3;
# JANUS_ROS=pip|system: pip (default) installs ROS 2 Kilted from PyPI wheels and every package at
# its pin; system is for a machine with a ROS 2 distro installed and sourced (rclpy, messages,
# python3-opencv from apt / rosdep): the venv sees the system's packages (--system-site-packages,
# and ROS through the sourced PYTHONPATH), no ROS wheels are installed, and the policy's
# dependencies come from setup.py's ranges, so a torch / numpy already there (a Jetson build, the
# distro's numpy) is kept rather than replaced by the pins.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
PROFILE=${JANUS_PROFILE:-full}
ROS=${JANUS_ROS:-pip}
case "$ROS" in
  pip) ;;
  system)
    if ! "$PYTHON" -c "import rclpy" 2>/dev/null; then
      echo "[setup] JANUS_ROS=system: $PYTHON cannot import rclpy; source your ROS 2 setup first" \
           "(e.g. . /opt/ros/jazzy/setup.bash) and install the package's dependencies with" \
           "rosdep install --from-paths . --ignore-src -y" >&2
      exit 1
    fi ;;
  *) echo "[setup] JANUS_ROS must be pip or system, got '$ROS'" >&2; exit 1 ;;
esac
APT_PACKAGES="libegl1 libegl-mesa0 libgl1-mesa-dri"

if [ "$PROFILE" = full ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing apt packages: $APT_PACKAGES"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $APT_PACKAGES \
      >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends $APT_PACKAGES >/dev/null; }
  else
    missing=$(for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
    if [ -n "$missing" ]; then
      echo "[setup] NOTE: not root, so apt packages were not installed. The embedded simulator" \
           "renders headless through EGL and needs: sudo apt-get install $missing" >&2
    fi
  fi
fi

echo "[setup] creating $VENV"
if [ "$ROS" = system ]; then
  "$PYTHON" -m venv --system-site-packages "$VENV"
else
  "$PYTHON" -m venv "$VENV"
fi
# colcon must not mistake the ROS wheels' share/*/package.xml inside the venv for packages.
touch "$VENV/COLCON_IGNORE"
. "$VENV/bin/activate"
python -m pip install -q --upgrade "pip>=24"
reqs=(-r requirements/dev.txt)
if [ "$PROFILE" = full ]; then
  reqs+=(-r requirements/sim.txt -r requirements/training.txt)
fi
if [ "$ROS" = pip ]; then
  echo "[setup] installing pinned Python packages ($PROFILE profile, ROS 2 from PyPI)"
  python -m pip install -q -r requirements/ros.txt -r requirements/policy.txt "${reqs[@]}"
  python -m pip install -q --no-deps --no-build-isolation -e .
else
  echo "[setup] installing the policy by setup.py's ranges, keeping what the system has" \
       "($PROFILE profile, ROS 2 from the system)"
  python -m pip install -q "${reqs[@]}"
  # A torch already there stays (pinned to itself). transformers 5 runs here only on torch >= 2.6
  # (janus_core.compat); with an older torch (JetPack 6: 2.3 to 2.5) pip gets transformers 4.57.
  keep=()
  if have=$(python -c "import importlib.metadata as m; print(m.version('torch'))" 2>/dev/null); then
    keep=("torch==$have")
    python -c "import sys, torch; sys.exit(tuple(map(int, torch.__version__.split('.')[:2])) < (2, 6))" \
      || keep+=("transformers<5")
  fi
  # build isolation: the system's setuptools may be too old to build an editable wheel
  python -m pip install -q -e . "${keep[@]}"
  python -c 'import sys, rclpy, torch, numpy; print(f"[setup] rclpy from {rclpy.__file__}, \
torch {torch.__version__} from {torch.__file__}, numpy {numpy.__version__}", file=sys.stderr)'
fi

echo "[setup] colcon build"
export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
colcon --log-base log build --symlink-install --base-paths . --packages-select janus_vln_ros \
  --event-handlers console_cohesion- summary+ >/dev/null
echo "[setup] done. Next: scripts/test.sh (tests) or: . $VENV/bin/activate && janus-vln --help"
