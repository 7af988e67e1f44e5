#!/usr/bin/env bash
# Quick start 1: set up, build, and scan the bundled demo clinic (no internet, no database server).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --quiet --bin pixelwatch
exec ./target/release/pixelwatch demo "$@"
