#!/usr/bin/env bash
# Instructions per accepted event, by function, for pixelwatch-relay under a fixed light load
# (a script, not a test). Repeatable where the load benchmark's events/s are not: the count
# does not depend on what else runs on the machine. It counts user-space instructions only
# (no kernel, no fsync), and the writer's per-event share varies with how many rows each
# group commit and delivery batch held, so compare the request path (post_events, sanitize,
# parse_body) between builds, not the totals.
#
# Usage: scripts/callgrind-relay.sh RELAY_BIN OUT_DIR [rate] [seconds]
#   then: callgrind_annotate --inclusive=yes OUT_DIR/cg.out.1
set -euo pipefail
BIN=$(realpath "$1"); mkdir -p "$2"; OUT=$(realpath "$2"); RATE=${3:-100}; SECS=${4:-10}
cd "$(dirname "$0")/.."
. scripts/relay-bench-config.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --example relay_loadgen
L="$CARGO_TARGET_DIR/release/examples/relay_loadgen"
W=$(mktemp -d); PIDS=(); mkdir -p "$OUT"
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$W"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
TT=$(port); META=$(port); R=$(port)
"$L" tiktok --listen "127.0.0.1:$TT" & PIDS+=($!)
"$L" meta --listen "127.0.0.1:$META" & PIDS+=($!)
relay_bench_config "$R" "$W/relay.db" full "$TT" "$META" > "$W/relay.toml"
PIXELWATCH_TIKTOK_ACCESS_TOKEN=bench PIXELWATCH_META_ACCESS_TOKEN=bench PIXELWATCH_LOG=warn \
  valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.out" "$BIN" serve --config "$W/relay.toml" 2>"$OUT/valgrind.log" & RP=$!
PIDS+=($RP)
for _ in $(seq 600); do curl -fs "http://127.0.0.1:$R/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
load() { "$L" load --label "$1" --url "http://127.0.0.1:$R/v1/events" --consent-url "http://127.0.0.1:$R/v1/consent" "${@:2}"; }
load warmup --concurrency 8 --seconds 1 --rate 100 >/dev/null
sleep 1
callgrind_control -z "$RP" >/dev/null   # count from here
RESULT=$(load measured --concurrency 16 --seconds "$SECS" --rate "$RATE")
for _ in $(seq 100); do
  D=$(curl -fs "http://127.0.0.1:$R/metrics" | awk '/^relay_outbox_depth/{s+=$2} END{print s+0}')
  [ "$D" = 0 ] && break; sleep 0.2
done
sleep 1
callgrind_control -d "$RP" >/dev/null   # writes $OUT/cg.out.1
kill -TERM "$RP"; wait "$RP" || true
echo "$RESULT"
N=$(sed -E 's/.*accepted=([0-9]+).*/\1/' <<<"$RESULT")
T=$(awk '/^summary:/{print $2}' "$OUT/cg.out.1")
echo "accepted $N events; $T instructions in all, $((T / N)) per event"
# From / : run inside the source tree, callgrind_annotate splits functions by relative path.
(cd / && callgrind_annotate --inclusive=yes --threshold=100 "$OUT/cg.out.1" 2>/dev/null) > "$OUT/inclusive.txt"
# A function can be listed more than once (inlined parts under other file names): its largest
# inclusive count is the one that covers the call.
for f in 'post_events::{{closure}}' 'Sanitizer::sanitize' 'event::parse_body' 'Lexicon::find_plain' \
         'outbox::writer_loop' 'store::insert_audit' 'store::claim' 'store::record'; do
  grep -F "$f [" "$OUT/inclusive.txt" | awk -v n="$N" -v f="$f" \
    '{c = $1; gsub(",", "", c); if (c + 0 > m) m = c + 0} END {printf "%10.0f per event  %s\n", m / n, f}'
done
