#!/usr/bin/env bash
# Quick start 2: set up and run every test (unit, real-Chromium integration, relay).
# .ci/run calls exactly this after its lint gate.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
cargo test --all-targets "$@"
