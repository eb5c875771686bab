#!/usr/bin/env bash
# The test command: colcon build + colcon test (pytest output shown), ROS isolated to this
# machine, then one plain summary line "N passed, N failed, N skipped" from the JUnit results.
# Extra arguments go to pytest, e.g. scripts/test.sh -k conversions  or  scripts/test.sh -m slow
set -euo pipefail
cd "$(dirname "$0")/.."
. "${VENV:-.venv}/bin/activate"
export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( RANDOM % 100 + 1 ))}"
export ROS_LOG_DIR="$(mktemp -d)/ros_log"
export FASTDDS_DEFAULT_PROFILES_FILE="$PWD/config/fastdds_shm.xml"

colcon --log-base log build --symlink-install --base-paths . --packages-select janus_vln_ros \
  --event-handlers console_cohesion- summary+
set +u; . install/setup.bash; set -u
rm -f build/janus_vln_ros/pytest.xml
rc=0
colcon --log-base log test --base-paths . --packages-select janus_vln_ros \
  --event-handlers console_direct+ --return-code-on-test-failure \
  --pytest-args -p no:cacheprovider "$@" || rc=$?
python scripts/test_summary.py build/janus_vln_ros/pytest.xml || rc=1
exit $rc
