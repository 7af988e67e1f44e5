#!/usr/bin/env bash
# Crawl benchmark: a generated local site at 1 tab and at the default concurrency, in one run.
# Prints pages/minute and peak memory (PSS of scanner + Chromium). BENCH_PAGES=N to resize.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --quiet --example bench_crawl
exec ./target/release/examples/bench_crawl
