#!/usr/bin/env bash
# Wheels for running the janus_core and training tests on a machine without network whose
# Python already has torch and transformers (e.g. a GPU image: Python 3.12, torch 2.11,
# transformers 5.17). Downloads, at the pins of requirements/*.txt, what such an image may lack
# into .whl/ (ignored by git; about 43 MB): pytest, accelerate, the embedded simulator's
# moderngl/glcontext/scipy/scikit-fmm, Pillow. Usage: scripts/offline_wheels.sh [PY_VERSION]
# (default 3.12). Then, on that machine, from the repository root:
#   python3 -m venv --system-site-packages "$HOME/jv"
#   "$HOME/jv"/bin/pip install --no-index --find-links .whl pytest accelerate moderngl scipy \
#       scikit-fmm pillow
#   OMP_NUM_THREADS=8 "$HOME/jv"/bin/python -m pytest -q -p no:cacheprovider test/janus_core \
#       test/training
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${1:-3.12}
pin() {  # the pinned version of $1 (not requirements/oldest.txt)
  cat requirements/{policy,sim,training,dev}.txt | sed -n "s/^$1==\([^ #]*\).*/\1/p" | head -1
}
mkdir -p .whl
binary=(pytest=="$(pin pytest)" pluggy iniconfig packaging accelerate=="$(pin accelerate)"
        psutil moderngl=="$(pin moderngl)" glcontext=="$(pin glcontext)" scipy=="$(pin scipy)"
        pillow=="$(pin pillow)")
platforms=()
for p in manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_27_x86_64 manylinux_2_28_x86_64; do
  platforms+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" \
  "${platforms[@]}" -d .whl "${binary[@]}"
# scikit-fmm publishes no binary wheels: build one with that Python (pyenv or PATH)
py=$(command -v "python$PYV" || true)
if ! "${py:-false}" -c '' 2>/dev/null; then
  py=$(ls "$(pyenv root 2>/dev/null)"/versions/"$PYV"*/bin/python"$PYV" 2>/dev/null | head -1)
fi
[ -n "$py" ] || { echo "[wheels] no python$PYV here to build scikit-fmm's wheel" >&2; exit 1; }
"$py" -m pip wheel -q --no-deps -w .whl "scikit-fmm==$(pin scikit-fmm)"
ls -la .whl
