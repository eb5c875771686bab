#!/usr/bin/env bash
# Set up janus_vln_ros from scratch, in one command:
#   apt packages the embedded simulator needs (EGL/Mesa; only when run as root),
#   a virtual environment in .venv with every Python dependency pinned (requirements/*.txt),
#   the package itself (editable, so `janus-vln` is on the venv's PATH), and a colcon build.
# Options (environment): VENV=path (default .venv); JANUS_PROFILE=full|robot (robot: the policy and
# ROS only, no simulator or training stack); PYTHON=python3.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
PROFILE=${JANUS_PROFILE:-full}
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
"$PYTHON" -m venv "$VENV"
# colcon must not mistake the ROS wheels' share/*/package.xml inside the venv for packages.
touch "$VENV/COLCON_IGNORE"
. "$VENV/bin/activate"
python -m pip install -q --upgrade "pip>=24"
reqs=(-r requirements/ros.txt -r requirements/policy.txt -r requirements/dev.txt)
if [ "$PROFILE" = full ]; then
  reqs+=(-r requirements/sim.txt -r requirements/training.txt)
fi
echo "[setup] installing pinned Python packages ($PROFILE profile)"
python -m pip install -q "${reqs[@]}"
python -m pip install -q --no-deps --no-build-isolation -e .

echo "[setup] colcon build"
export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
colcon --log-base log build --symlink-install --base-paths . --packages-select janus_vln_ros \
  --event-handlers console_cohesion- summary+ >/dev/null
echo "[setup] done. Next: scripts/test.sh (tests) or: . $VENV/bin/activate && janus-vln --help"
