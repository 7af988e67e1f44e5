#!/usr/bin/env bash
# Load benchmark for pixelwatch-relay (a script, not a test). Everything runs on loopback:
#   - a TikTok stand-in that answers code 0                (relay_loadgen tiktok)
#   - a Meta stand-in that answers events_received = sent  (relay_loadgen meta)
#   - a no-op HTTP endpoint, the ceiling                   (relay_loadgen noop)
#   - the relay (release build, durable SQLite outbox, consent gate on, two destinations)
#   - the load generator in its own process               (relay_loadgen load)
# Prints accepted events/s, p50/p99 latency and the ratio to the ceiling, then the same at a
# fixed 1,000 events/s, the time per ingest stage (parse, consent, sanitize, commit), and checks
# that both destinations' outboxes drained.
# Usage: scripts/bench-relay.sh [seconds] [concurrency] [synchronous]
set -euo pipefail
SECS=${1:-10}
CONC=${2:-64}
SYNC=${3:-full}
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --bin pixelwatch-relay --example relay_loadgen
BIN="$CARGO_TARGET_DIR/release"
LOADGEN="$BIN/examples/relay_loadgen"
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
TT=$(port); META=$(port); NOOP=$(port); RELAY=$(port)
"$LOADGEN" tiktok --listen "127.0.0.1:$TT" & PIDS+=($!)
"$LOADGEN" meta --listen "127.0.0.1:$META" & PIDS+=($!)
"$LOADGEN" noop --listen "127.0.0.1:$NOOP" & PIDS+=($!)

cat > "$WORK/relay.toml" <<TOML
[server]
listen = "127.0.0.1:$RELAY"
allowed_origins = ["https://clinic.example"]
[database]
path = "$WORK/relay.db"
synchronous = "$SYNC"
[dispatch]
poll_ms = 100
[[mapping]]
from = "BookedGLP1Consultation"
to = "Schedule"
[[destination]]
kind = "tiktok"
endpoint = "http://127.0.0.1:$TT/open_api/v1.3/event/track/"
pixel_code = "CBENCH"
[[destination]]
kind = "meta"
endpoint = "http://127.0.0.1:$META/v21.0/1234/events"
pixel_id = "1234"
[[page_category]]
path_pattern = "^/book"
url = "https://clinic.example/booking"
[[page_category]]
path_pattern = ".*"
url = "https://clinic.example/"
TOML
PIXELWATCH_TIKTOK_ACCESS_TOKEN=bench PIXELWATCH_META_ACCESS_TOKEN=bench PIXELWATCH_LOG=warn \
  "$BIN/pixelwatch-relay" serve --config "$WORK/relay.toml" & PIDS+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$RELAY/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), synchronous=$SYNC, $SECS s per run, concurrency $CONC, destinations: tiktok + meta"
R=$("$LOADGEN" load --label relay --url "http://127.0.0.1:$RELAY/v1/events" --consent-url "http://127.0.0.1:$RELAY/v1/consent" --concurrency "$CONC" --seconds "$SECS")
echo "$R"
C=$("$LOADGEN" load --label ceiling --url "http://127.0.0.1:$NOOP/v1/events" --concurrency "$CONC" --seconds "$SECS")
echo "$C"
F=$("$LOADGEN" load --label relay --url "http://127.0.0.1:$RELAY/v1/events" --consent-url "http://127.0.0.1:$RELAY/v1/consent" --concurrency 32 --seconds "$SECS" --rate 1000)
echo "$F"
rate() { sed -E 's/.*events_per_s=([0-9.]+).*/\1/' <<<"$1"; }
python3 - "$(rate "$R")" "$(rate "$C")" <<'PY'
import sys
r, c = float(sys.argv[1]), float(sys.argv[2])
print(f"== relay {r:.0f} events/s durably vs ceiling {c:.0f} requests/s: ratio {r / c:.2f}")
PY
# Delivery check: wait until both outboxes drain, then compare counters.
for _ in $(seq 150); do
  D=$(curl -fs "http://127.0.0.1:$RELAY/metrics" | awk '/^relay_outbox_depth/{s+=$2} END{print s+0}')
  [ "$D" = "0" ] && break; sleep 0.2
done
curl -fs "http://127.0.0.1:$RELAY/metrics" > "$WORK/metrics.txt"
grep -E '^relay_(events_accepted_total|events_queued_total|events_delivered_total|outbox_depth|outbox_commits_total|outbox_commands_total|outbox_commit_seconds_(sum|count))' "$WORK/metrics.txt"
# Time per ingest stage, over all three runs: mean and the bucket holding the 99th percentile.
python3 - "$WORK/metrics.txt" <<'PY'
import re, sys
buckets, sums, counts = {}, {}, {}
for line in open(sys.argv[1]):
    m = re.match(r'relay_stage_seconds_bucket\{stage="(\w+)",le="([^"]+)"\} (\d+)', line)
    if m:
        buckets.setdefault(m[1], []).append((float("inf") if m[2] == "+Inf" else float(m[2]), int(m[3])))
    m = re.match(r'relay_stage_seconds_(sum|count)\{stage="(\w+)"\} ([\d.e+-]+)', line)
    if m:
        (sums if m[1] == "sum" else counts)[m[2]] = float(m[3])
print("== time per request in each ingest stage (mean, p99 bucket upper bound)")
for stage in ["parse", "consent", "sanitize", "commit"]:
    n = counts.get(stage, 0)
    if not n:
        continue
    p99 = next(le for le, c in buckets[stage] if c >= 0.99 * n)
    print(f"   {stage:<9} mean {sums[stage] / n * 1e6:8.1f} us   p99 <= {p99 * 1e6:9.0f} us   ({int(n)} requests)")
PY
