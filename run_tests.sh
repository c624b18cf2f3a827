#!/usr/bin/env bash
# Run the whole test suite: same environment as webui.sh plus test dependencies,
# lint (ruff), the import contracts (import-linter, [tool.importlinter] in pyproject.toml), then pytest.
# Extra arguments go to pytest (e.g. ./run_tests.sh -k api).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
ensure_venv requirements.txt requirements-test.txt
ensure_chromium
# Tests run tiny models on few cores: idle OpenMP threads should sleep, not spin against the test servers.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
"$VENV_PY" -m ruff check .
"$VENV_PY" -m ruff format --check .
"$VENV_DIR/bin/lint-imports" --no-cache
exec "$VENV_PY" -m pytest "$@"
