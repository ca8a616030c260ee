#!/usr/bin/env bash
# Set up a virtual environment with mmflow and its plugins on a fresh machine (CPU).
#   bash scripts/setup.sh          # runtime: torch (CPU) + mmflow + plugins + the toy example plugin
#   bash scripts/setup.sh --test   # also pytest, the offline evaluation metrics (requirements/eval.txt) and the
#                                  # reference packages the parity tests compare against
# The venv goes to $MMFLOW_VENV (default .venv). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${MMFLOW_VENV:-.venv}"
WITH_TESTS=0
[[ "${1:-}" == "--test" ]] && WITH_TESTS=1

[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)

# torch first, pinned: an unpinned torch requirement would pull a multi-GB CUDA build.
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" -c requirements/constraints.txt \
    -e ".[app]" -e "plugins/audio_f5tts[espeak]" -e plugins/motion_liveportrait -e plugins/jamflow -e examples/toy_gesture -e examples/tri_stream

if [[ $WITH_TESTS == 1 ]]; then
    "${PIP[@]}" -c requirements/constraints.txt -r requirements/test.txt -r requirements/eval.txt
    # Reference implementations for parity tests, without their heavy (GUI, CUDA, hub) dependencies.
    "${PIP[@]}" --no-deps f5-tts==1.1.22 vocos==0.1.0 mimic-head==0.1.5 torchaudio==2.11.0
    # PyPI's torchaudio is a CUDA build whose extension cannot load beside CPU torch; its pure-python
    # transforms (all the references use) work once the extension libraries are gone.
    rm -f "$VENV"/lib/python3*/site-packages/torchaudio/lib/*.so
fi
echo "mmflow environment ready in $VENV"
