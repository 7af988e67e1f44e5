#!/usr/bin/env bash
# Fleet benchmark: 200 small generated sites queued in a throwaway PostgreSQL, scanned by 1 and
# then 2 workers in one run. Prints sites/min, queue overhead per job (ms) and PostgreSQL round
# trips per job. BENCH_SITES=N to resize.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
cargo build --release --quiet --bin pixelwatch --example bench_fleet
exec ./target/release/examples/bench_fleet
