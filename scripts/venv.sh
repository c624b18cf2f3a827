# Shared by webui.sh and run_tests.sh: an idempotent virtual environment.
# A stamp file lists the hashes of the requirement-file sets already installed; pip runs only for a new one.
VENV_DIR="${VENV_DIR:-.venv}"
VENV_PY="$VENV_DIR/bin/python"

ensure_venv() {
  if [ ! -x "$VENV_PY" ]; then
    echo "Creating virtual environment in $VENV_DIR"
    python3 -m venv "$VENV_DIR"
  fi
  local stamp="$VENV_DIR/.requirements-stamp" want
  # requirements-nodeps.txt: packages installed without their declared dependencies (see the file)
  local nodeps="$(dirname "$VENV_DIR")/requirements-nodeps.txt"
  [ -f "$nodeps" ] || nodeps=""
  want=$(cat "$@" $nodeps | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || ! grep -qx "$want" "$stamp"; then
    echo "Installing requirements: $*"
    "$VENV_PY" -m pip install --quiet --upgrade pip
    local args=()
    for f in "$@"; do args+=(-r "$f"); done
    "$VENV_PY" -m pip install --quiet "${args[@]}"
    if [ -n "$nodeps" ]; then "$VENV_PY" -m pip install --quiet --no-deps -r "$nodeps"; fi
    echo "$want" >>"$stamp"
  fi
}

# Browser tests drive Debian's Chromium through Playwright (no browser downloads).
ensure_chromium() {
  if command -v chromium >/dev/null 2>&1; then return 0; fi
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Debian's chromium for the browser tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ||
      echo "warning: could not install chromium; browser tests will be skipped"
  else
    echo "warning: chromium not found and not root; browser tests will be skipped"
  fi
}
