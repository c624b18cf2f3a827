#!/usr/bin/env bash
# Start the web UI: creates .venv on first run, installs requirements.txt when it changed,
# then runs app.py with every argument passed through (./webui.sh --help prints the flags).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
ensure_venv requirements.txt
exec "$VENV_PY" app.py "$@"
