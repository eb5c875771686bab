#!/usr/bin/env bash
# One call of the JanusVLN-small training campaign (training/campaign.py) on a GPU machine that
# starts bare (the device calls): carried GL loaders (.gl/*.deb) and pinned wheels (.whl/*.whl)
# are unpacked and installed first, then one budgeted call of the campaign runs.
#
#   scripts/campaign_call.sh OUT [STATE_DIR]
#
# STATE_DIR: the state to continue from (e.g. .campaign/state, unpacked from the last call's
# OUT/state.tar.part*); a state left in /tmp/campaign by a previous call on the same (still warm)
# machine is preferred. The new state leaves as OUT/state.tar.part* (15 MB pieces: the device's
# output limit), with the log. Unpack: cat OUT/state.tar.part* | tar x -C .campaign
# BUDGET (minutes, default 8.3) is the campaign's wall-clock budget.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$1
STATE=${2:-}
if [ -d .gl ]; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
egl=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
[ -f "$egl" ] && export __EGL_VENDOR_LIBRARY_FILENAMES=$egl
if [ -d .whl ]; then python3 -m pip install -q --no-deps .whl/*.whl; fi
WORK=/tmp/campaign
if [ -f "$WORK/last/state.json" ]; then STATE=$WORK/last; fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
export PYTHONUNBUFFERED=1
rc=0
python3 -m training.campaign --config config/recipe_small.yaml ${STATE:+--state "$STATE"} \
  --work-dir "$WORK" --out-dir "$WORK/out" --time-budget-min "${BUDGET:-8.3}" \
  2>&1 | tee "$OUT/campaign.log" || rc=$?
if [ -f "$WORK/out/state/state.json" ]; then
  rm -rf "$WORK/last" && cp -r "$WORK/out/state" "$WORK/last"
  tar cf - -C "$WORK/out" state | split -b 15M - "$OUT/state.tar.part"
fi
exit $rc
