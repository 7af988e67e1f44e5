#!/usr/bin/env bash
# Crawl benchmark: a generated clinic site (tag manager injecting TikTok at 1 s and Meta at 2.5 s,
# keepalive JSON POST, sendBeacon, 1 s heartbeat, open chat WebSocket) scanned at 1 tab (baseline),
# the default concurrency and 8 tabs, in one run. Prints pages/minute, peak memory (PSS of
# scanner + Chromium), settle reasons and times, late tags captured and the scanner's health
# counters. BENCH_PAGES=N (200), BENCH_BASELINE_PAGES=N (20), BENCH_CONCURRENCY=1,4,8 to change.
# About 5-6 minutes on 2 quiet cores; the machine's load average is printed at start and end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --quiet --example bench_crawl
echo "bench-crawl: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) before the run" >&2
exec ./target/release/examples/bench_crawl
