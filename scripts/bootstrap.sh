# Sourced by scripts/run-service and scripts/run-tests: makes a fresh Debian/Ubuntu machine with Python 3.11
# ready, installing only what is missing. Re-running it is cheap.

KTUNE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${KTUNE_VENV:-$KTUNE_ROOT/.venv}"
PY="$VENV/bin/python"

_sudo() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

_apt_install() {
  echo "installing $* from the distribution's packages" >&2
  if [ -z "${_KTUNE_APT_UPDATED:-}" ]; then _sudo apt-get update -qq; _KTUNE_APT_UPDATED=1; fi
  _sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

_python() {
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 13)))'; then
      echo "$candidate"; return 0
    fi
  done
  echo "ktune needs Python 3.11 or 3.12 on PATH" >&2; return 1
}

# Creates the virtual environment $1 unless it exists (installing the distribution's venv module if needed).
_make_venv() {
  [ -x "$1/bin/python" ] && return 0
  local python; python="$(_python)"
  if ! "$python" -m venv "$1" 2>/dev/null; then
    rm -rf "$1"
    _apt_install "$(basename "$python")-venv" || _apt_install python3-venv
    "$python" -m venv "$1"
  fi
}

ensure_venv() {
  _make_venv "$VENV"
  local stamp="$VENV/.ktune-installed"
  if [ ! -f "$stamp" ] || [ "$KTUNE_ROOT/pyproject.toml" -nt "$stamp" ]; then
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q -e "$KTUNE_ROOT[dev]"
    touch "$stamp"
  fi
}

ensure_redis_server() {
  command -v redis-server >/dev/null 2>&1 || _apt_install redis-server
}

# The shipped install (scripts/check-install): this package without [dev], in its own environment, installed
# as the Dockerfile installs it: from a copy of only what the image copies, with `pip install .`.
PROD_VENV="${KTUNE_PROD_VENV:-$KTUNE_ROOT/.venv-prod}"
PROD_PY="$PROD_VENV/bin/python"

ensure_prod_venv() {
  _make_venv "$PROD_VENV"
  # The dependencies are resolved again only when pyproject.toml changed (pip's cache keeps the downloads),
  # the project itself only when its files changed.
  local deps_stamp="$PROD_VENV/.ktune-pyproject.sha256" code_stamp="$PROD_VENV/.ktune-code.sha256"
  local deps code
  deps="$(sha256sum "$KTUNE_ROOT/pyproject.toml" | cut -d' ' -f1)"
  code="$(cd "$KTUNE_ROOT" && find pyproject.toml README.md service worker -type f ! -name '*.pyc' -print0 |
    sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$deps_stamp" 2>/dev/null)" = "$deps" ] && [ "$(cat "$code_stamp" 2>/dev/null)" = "$code" ]; then
    return 0
  fi
  local copy; copy="$(mktemp -d)"
  cp -r "$KTUNE_ROOT/pyproject.toml" "$KTUNE_ROOT/README.md" "$KTUNE_ROOT/service" "$KTUNE_ROOT/worker" "$copy/"
  if [ "$(cat "$deps_stamp" 2>/dev/null)" != "$deps" ]; then
    "$PROD_PY" -m pip install -q --upgrade pip
    "$PROD_PY" -m pip install -q "$copy"
    "$PROD_PY" -m pip check
    echo "$deps" > "$deps_stamp"
  else
    "$PROD_PY" -m pip install -q --no-deps --force-reinstall "$copy"
  fi
  echo "$code" > "$code_stamp"
  rm -rf "$copy"
}
