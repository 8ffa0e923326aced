#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment in .venv from the pinned
# requirement files given as arguments, and installs keras_sf2f itself into it in editable
# mode (pyproject.toml: the package and its sf2f-* console scripts). Re-running is cheap: the
# environment is only re-installed when the requirement files or pyproject.toml change.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SF2F_VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
[ "$#" -gt 0 ] || set -- requirements.txt
stamp="$VENV/.requirements.sha256"
want=$(cat "$@" pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
echo "[setup] installing pinned requirements: $*"
for f in "$@"; do
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$f"
done
# The project itself, editable (the source tree is what runs), without its dependencies (the
# pins above are the lock) and without build isolation: the build uses the setuptools that
# the requirements installed (TensorFlow depends on it), so nothing is downloaded.
echo "[setup] installing keras_sf2f (editable) and its console scripts"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
echo "$want" > "$stamp"
