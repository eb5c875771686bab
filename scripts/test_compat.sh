#!/usr/bin/env bash
# The compatibility run: `pip install .` (not editable) into a fresh venv of its own, then the
# janus_core tests (checkpoint and golden-logits tests included) against that installed copy.
#   scripts/test_compat.sh            newest: the newest transformers 5.x and the newest torch
#                                     that pip may take here (not the pinned ones)
#   scripts/test_compat.sh oldest     the low end of setup.py's ranges: requirements/oldest.txt
#                                     (torch 2.3, transformers 4.57.1, numpy 1.21; Python 3.10)
# Extra arguments go to pytest instead of the default test/janus_core, e.g.
#   scripts/test_compat.sh newest test/janus_core test/training   (installs the training extra)
# Options (environment): PYTHON (default python3; oldest: python3.10 when there is one),
# COMPAT_VENV (default .venv-compat-<mode>), COMPAT_REUSE=1 keeps an existing venv.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
MODE=${1:-newest}
[ $# -gt 0 ] && shift
case "$MODE" in
  newest|oldest) ;;
  *) echo "usage: scripts/test_compat.sh [newest|oldest] [pytest args...]" >&2; exit 2 ;;
esac
TESTS=("$@")
[ ${#TESTS[@]} -eq 0 ] && TESTS=(test/janus_core)
EXTRAS=""
for t in "${TESTS[@]}"; do
  case "$t" in test/training*) EXTRAS="[training]" ;; esac
done
python310() {  # the oldest Python we declare, where the machine has it (PATH or pyenv)
  local p
  for p in python3.10 "$(pyenv root 2>/dev/null)"/versions/3.10*/bin/python3.10; do
    if "$p" -c '' >/dev/null 2>&1; then echo "$p"; return; fi
  done
  echo python3
}
if [ "$MODE" = oldest ]; then PYTHON=${PYTHON:-$(python310)}; else PYTHON=${PYTHON:-python3}; fi
VENV=${COMPAT_VENV:-.venv-compat-$MODE}

if [ "${COMPAT_REUSE:-0}" != 1 ] || [ ! -x "$VENV/bin/python" ]; then
  echo "[compat] creating $VENV ($MODE, $("$PYTHON" --version))"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  touch "$VENV/COLCON_IGNORE"
  "$VENV/bin/python" -m pip install -q --upgrade "pip>=24"
fi
PIP=("$VENV/bin/python" -m pip install -q)
if [ "$MODE" = oldest ]; then
  # the training extra raises numpy and torch above the core's floor (setup.py TRAINING)
  [ -n "$EXTRAS" ] && { echo "[compat] oldest runs janus_core only (see setup.py)" >&2; exit 2; }
  echo "[compat] pip install . with requirements/oldest.txt as constraints"
  "${PIP[@]}" -c requirements/oldest.txt . pytest
else
  pinned=$(sed -n 's/^torch==\([^ #]*\).*/\1/p' requirements/policy.txt)
  echo "[compat] pip install .$EXTRAS with the newest transformers 5 and a torch other than $pinned"
  "${PIP[@]}" ".$EXTRAS" "transformers>=5,<6" "torch!=$pinned" "pytest>=8"
fi
"$VENV/bin/python" - <<'EOF'
import platform, numpy, torch, transformers
print(f"[compat] python {platform.python_version()}, torch {torch.__version__}, "
      f"transformers {transformers.__version__}, numpy {numpy.__version__}")
EOF

# The tests run from a copy of the repository without the package sources, so every import of
# janus_core / training comes from what pip installed.
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
git ls-files -z -- . ':!janus_core' ':!sim_bridge' ':!training' ':!janus_vln_ros' \
  | tar --null -T - -cf - | tar -xf - -C "$WORK"
cd "$WORK"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$REPO/$VENV/bin/python" -m pytest -q -p no:cacheprovider \
  "${TESTS[@]}"
