#!/usr/bin/env bash
# Load benchmark for pixelwatch-relay (a script, not a test). Everything runs on loopback:
#   - a TikTok stand-in that answers code 0      (relay_loadgen tiktok)
#   - a no-op HTTP endpoint, the ceiling         (relay_loadgen noop)
#   - the relay (release build, durable SQLite outbox, consent gate on)
#   - the load generator in its own process     (relay_loadgen load)
# Prints accepted events/s, p50/p99 latency and the ratio to the ceiling, then the same at a
# fixed 1,000 events/s. Usage: scripts/bench-relay.sh [seconds] [concurrency] [synchronous]
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
TT=$(port); NOOP=$(port); RELAY=$(port)
"$LOADGEN" tiktok --listen "127.0.0.1:$TT" & PIDS+=($!)
"$LOADGEN" noop --listen "127.0.0.1:$NOOP" & PIDS+=($!)

cat > "$WORK/relay.toml" <<TOML
[server]
listen = "127.0.0.1:$RELAY"
allowed_origins = ["https://clinic.example"]
[database]
path = "$WORK/relay.db"
synchronous = "$SYNC"
[tiktok]
endpoint = "http://127.0.0.1:$TT/open_api/v1.3/event/track/"
pixel_code = "CBENCH"
[dispatch]
poll_ms = 100
[[mapping]]
from = "BookedGLP1Consultation"
to = "Schedule"
[[page_category]]
path_pattern = "^/book"
url = "https://clinic.example/booking"
[[page_category]]
path_pattern = ".*"
url = "https://clinic.example/"
TOML
PIXELWATCH_TIKTOK_ACCESS_TOKEN=bench PIXELWATCH_LOG=warn "$BIN/pixelwatch-relay" serve --config "$WORK/relay.toml" & PIDS+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$RELAY/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

echo "== machine: $(nproc) cores, synchronous=$SYNC, $SECS s per run, concurrency $CONC"
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
# Delivery check: wait until the outbox drains, then compare counters.
for _ in $(seq 100); do
  D=$(curl -fs "http://127.0.0.1:$RELAY/metrics" | awk '/^relay_outbox_depth /{print $2}')
  [ "${D:-1}" = "0" ] && break; sleep 0.2
done
curl -fs "http://127.0.0.1:$RELAY/metrics" | grep -E '^relay_(events_accepted_total|events_delivered_total|outbox_depth|outbox_commits_total|outbox_commands_total|outbox_commit_seconds_(sum|count)) '
