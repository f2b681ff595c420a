#!/usr/bin/env bash
# Set up a Debian machine for aiinfra development: system packages, .venv, the package.
# Idempotent. Run as root (apt-get). Used by scripts/quickstart.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${AIINFRA_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
APT_PACKAGES=(openmpi-bin libopenmpi-dev shellcheck curl chromium)
TORCH_PIN="torch==2.13.0"  # the CPU build this machine kind keeps on disk; the
                           # project's own requirement stays a range (pyproject.toml)

log() { printf '[setup] %s\n' "$*" >&2; }

install_apt() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    missing+=(python3-venv)
  fi
  ((${#missing[@]} == 0)) && return 0
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

install_python() {
  [[ -x "$VENV/bin/python" ]] || { log "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
  local pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
  "$VENV/bin/python" -c 'import torch' >/dev/null 2>&1 || { log "pip install $TORCH_PIN"; "${pip[@]}" "$TORCH_PIN"; }
  log "pip install '.[test]' (a regular, non-editable install: templates and profiles come from the wheel)"
  "${pip[@]}" ".[test]"
}

install_apt
install_python
log "ready: $("$VENV/bin/aiinfra" --version)"
