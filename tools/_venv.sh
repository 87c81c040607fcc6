# Shared by tools/demo and tools/test: make sure .venv exists and holds the
# package (plus the extras in $EXTRAS, e.g. "[dev]"), then expose $PY. Sourced, not
# run; the caller's own arguments are left alone.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [[ ! -x .venv/bin/python ]]; then
    BASE_PY="${PYTHON:-}"
    if [[ -z "$BASE_PY" ]]; then
        for candidate in python3 python; do
            if command -v "$candidate" >/dev/null 2>&1 &&
                "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
                BASE_PY="$candidate"
                break
            fi
        done
    fi
    if [[ -z "$BASE_PY" ]]; then
        echo "error: need Python 3.10 or newer on PATH (or set PYTHON=/path/to/python)" >&2
        exit 2
    fi
    echo "creating .venv with $("$BASE_PY" --version)"
    "$BASE_PY" -m venv .venv
fi
PY="$ROOT/.venv/bin/python"
# Quiet, and cheap when everything is already installed.
"$PY" -m pip install --quiet --disable-pip-version-check --editable ".${EXTRAS:-}"
