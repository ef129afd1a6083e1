# Shared by scripts/demo.sh and scripts/test.sh: the virtual environment.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON_BIN="${PYTHON_BIN:-python3.11}"
command -v "$PYTHON_BIN" >/dev/null 2>&1 || PYTHON_BIN=python3

ensure_venv() {  # $1: requirements file
  if [ ! -x .venv/bin/python ]; then
    echo ">> creating .venv with $("$PYTHON_BIN" --version)"
    "$PYTHON_BIN" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
  fi
  echo ">> installing $1"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$1"
}
