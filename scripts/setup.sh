#!/usr/bin/env bash
# Installs what pixelwatch needs on Debian/Ubuntu: Chromium from apt (if no browser is found);
# with --test also PostgreSQL (the fleet tests start a throwaway server of their own) and
# jsonschema. Idempotent; safe to run every time.
set -euo pipefail
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "$@" >/dev/null
}
have_browser() {
  [ -n "${CHROME:-}" ] && [ -x "${CHROME}" ] && return 0
  for p in /usr/lib/chromium/chromium /usr/bin/chromium /usr/bin/chromium-browser /usr/bin/google-chrome; do
    [ -x "$p" ] && return 0
  done
  return 1
}
if ! have_browser; then
  echo "pixelwatch setup: installing Chromium from apt" >&2
  apt_install chromium
fi
# The fleet tests start a throwaway PostgreSQL server (Debian's package; never its own service).
have_postgres() {
  [ -n "${PIXELWATCH_PG_BIN:-}" ] && [ -x "${PIXELWATCH_PG_BIN}/postgres" ] && return 0
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1
}
if [ "${1:-}" = "--test" ] && ! have_postgres; then
  echo "pixelwatch setup: installing PostgreSQL from apt for the fleet tests" >&2
  apt_install postgresql
fi
# Tests validate SARIF output against its schema with Python's jsonschema.
if [ "${1:-}" = "--test" ] && ! python3 -c "import jsonschema" >/dev/null 2>&1; then
  echo "pixelwatch setup: installing jsonschema (Python) for the SARIF schema test" >&2
  python3 -m pip install --quiet jsonschema || apt_install python3-jsonschema
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "pixelwatch setup: cargo not found; install Rust (https://rustup.rs) first" >&2
  exit 1
fi
