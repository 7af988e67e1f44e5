#!/usr/bin/env bash
# Load benchmark for pixelwatch-relay (a script, not a test). Everything runs on loopback:
#   - a TikTok stand-in that answers code 0                (relay_loadgen tiktok)
#   - a Meta stand-in that answers events_received = sent  (relay_loadgen meta)
#   - a no-op HTTP endpoint, the ceiling                   (relay_loadgen noop)
#   - the relay (release build, durable SQLite outbox, consent gate on, two destinations)
#   - the load generator in its own process               (relay_loadgen load)
#
# Order: ceiling; then per relay binary (a fresh database each): closed loop, wait until both
# outboxes drained (nothing of one phase runs in the next), open loop at 1,000 events/s, drain;
# then the ceiling again. The ratio is to the mean of the two ceilings, which bracket the relay
# runs. For each relay it prints accepted events/s, p50/p99, the ratio, the time to drain the
# closed loop's backlog, p50/p99 at 1,000/s, the CPU time per accepted event by thread (from
# /proc, so a busy neighbour changes it much less than it changes events/s), the outbox's group
# commits, the time per request in each ingest stage (parse, consent, sanitize, commit) and the
# relay's peak resident memory (VmHWM).
#
# Usage: scripts/bench-relay.sh [seconds] [concurrency] [synchronous]
#   BASELINE_BIN=path/to/pixelwatch-relay  also run that binary, first, in the same run
#   ABBA=1                                  with BASELINE_BIN: baseline, this, this, baseline
#                                           (the order bias and the drift of a shared box cancel;
#                                           compare the mean of each binary's two rows)
#   PERF_DIR=dir                            `perf record` the relay's closed loop into dir/<label>.data
#   EVENTS_PER_REQUEST=n                    the relay's closed loop sends n events per request
#                                           (`{"events": [...]}`, as a page's sendBeacon batch);
#                                           the ceiling stays one request, the 1,000/s loop one
#                                           event per request
set -euo pipefail
SECS=${1:-10}
CONC=${2:-64}
SYNC=${3:-full}
cd "$(dirname "$0")/.."
. scripts/relay-bench-config.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --bin pixelwatch-relay --example relay_loadgen
BIN="$CARGO_TARGET_DIR/release"
LOADGEN="$BIN/examples/relay_loadgen"
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
TT=$(port); META=$(port); NOOP=$(port)
"$LOADGEN" tiktok --listen "127.0.0.1:$TT" & PIDS+=($!); TT_PID=$!
"$LOADGEN" meta --listen "127.0.0.1:$META" & PIDS+=($!); META_PID=$!
"$LOADGEN" noop --listen "127.0.0.1:$NOOP" & PIDS+=($!)

# CPU ticks per thread name of some processes, and the time those threads were ready to run
# but waited for a CPU (schedstat's run delay, ns): "comm ticks wait_ns" lines (comm of the
# stand-ins is their process name, prefixed so they are told apart).
cpu() {
  python3 - "$@" <<'PY'
import os, sys
tot, wait = {}, {}
for spec in sys.argv[1:]:
    prefix, pid = spec.split("=")
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        continue
    for t in tids:
        try:
            s = open(f"/proc/{pid}/task/{t}/stat").read()
            w = int(open(f"/proc/{pid}/task/{t}/schedstat").read().split()[1])
        except (FileNotFoundError, IndexError, ValueError):
            continue
        comm = s[s.index("(") + 1 : s.rindex(")")]
        f = s[s.rindex(")") + 2 :].split()
        name = prefix if prefix != "relay" else "relay:" + comm.rstrip("0123456789-")
        tot[name] = tot.get(name, 0) + int(f[11]) + int(f[12])
        wait[name] = wait.get(name, 0) + w
for k, v in sorted(tot.items()):
    print(k, v, wait[k])
PY
}

ceiling() {
  "$LOADGEN" load --label ceiling --url "http://127.0.0.1:$NOOP/v1/events" --concurrency "$CONC" --seconds "$SECS"
}

rate() { sed -E 's/.*events_per_s=([0-9.]+).*/\1/' <<<"$1"; }
field() { sed -E "s/.*$2=([0-9.]+).*/\1/" <<<"$1"; }

# Seconds until both outboxes are empty (up to 60 s).
drain() {
  local start=$SECONDS
  for _ in $(seq 600); do
    D=$(curl -fs "http://127.0.0.1:$1/metrics" | awk '/^relay_outbox_depth/{s+=$2} END{print s+0}')
    [ "$D" = "0" ] && break; sleep 0.1
  done
  echo $((SECONDS - start))
}

SUMMARY=()
run_relay() {
  local label=$1 bin=$2
  local RELAY; RELAY=$(port)
  mkdir -p "$WORK/$label"
  relay_bench_config "$RELAY" "$WORK/$label/relay.db" "$SYNC" "$TT" "$META" > "$WORK/$label/relay.toml"
  PIXELWATCH_TIKTOK_ACCESS_TOKEN=bench PIXELWATCH_META_ACCESS_TOKEN=bench PIXELWATCH_LOG=warn \
    "$bin" serve --config "$WORK/$label/relay.toml" & local pid=$!
  PIDS+=($pid)
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$RELAY/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  local procs=("relay=$pid" "tiktok-standin=$TT_PID" "meta-standin=$META_PID")
  cpu "${procs[@]}" > "$WORK/$label/cpu0"
  local perf_pid=
  if [ -n "${PERF_DIR:-}" ]; then
    mkdir -p "$PERF_DIR"
    perf record -F 499 --call-graph dwarf,32768 -p "$pid" -o "$PERF_DIR/$label.data" -- sleep "$SECS" >/dev/null 2>&1 & perf_pid=$!
  fi
  local R
  R=$("$LOADGEN" load --label "$label" --url "http://127.0.0.1:$RELAY/v1/events" --consent-url "http://127.0.0.1:$RELAY/v1/consent" --concurrency "$CONC" --seconds "$SECS" --events "${EVENTS_PER_REQUEST:-1}")
  cpu "${procs[@]}" > "$WORK/$label/cpu1"
  local T; T=$(drain "$RELAY")
  cpu "${procs[@]}" > "$WORK/$label/cpu2"
  [ -n "$perf_pid" ] && wait "$perf_pid" || true
  local F
  F=$("$LOADGEN" load --label "$label" --url "http://127.0.0.1:$RELAY/v1/events" --consent-url "http://127.0.0.1:$RELAY/v1/consent" --concurrency 32 --seconds "$SECS" --rate 1000)
  drain "$RELAY" >/dev/null
  echo "== $label ($bin)"
  echo "$R"
  echo "   closed loop's backlog drained ${T} s after the run"
  echo "$F"
  curl -fs "http://127.0.0.1:$RELAY/metrics" > "$WORK/$label/metrics.txt"
  grep -E '^relay_(events_accepted_total|events_delivered_total|outbox_depth|outbox_commits_total|outbox_commands_total|outbox_commit_seconds_(sum|count))' "$WORK/$label/metrics.txt" | sed 's/^/   /'
  # CPU per accepted event of the closed loop, by thread, until its backlog drained.
  python3 - "$WORK/$label/cpu0" "$WORK/$label/cpu1" "$WORK/$label/cpu2" "$(field "$R" accepted)" <<'PY'
import os, sys
def load(p, col=1):
    return {l.split()[0]: int(l.split()[col]) for l in open(p) if l.strip()}
a, b, c, n = load(sys.argv[1]), load(sys.argv[2]), load(sys.argv[3]), int(sys.argv[4])
wa, wc = load(sys.argv[1], 2), load(sys.argv[3], 2)
hz = os.sysconf("SC_CLK_TCK")
us = lambda d, k: (d.get(k, 0) - a.get(k, 0)) / hz * 1e6 / max(n, 1)
waited = lambda k: (wc.get(k, 0) - wa.get(k, 0)) / 1e3 / max(n, 1)
print("   CPU per accepted event (closed loop until drained), by thread, and the time it was ready")
print("   but waited for a CPU (a box short of CPU shows here, not in the CPU column):")
relay = sum(us(c, k) for k in c if k.startswith("relay:"))
for k in sorted(c):
    if us(c, k) >= 0.5:
        print(f"     {k:<26} {us(c, k):6.1f} us   waited {waited(k):6.1f} us")
print(f"     {'relay, all threads':<26} {relay:6.1f} us (during the run: {sum(us(b, k) for k in b if k.startswith('relay:')):.1f} us)")
PY
  python3 - "$WORK/$label/metrics.txt" <<'PY'
import re, sys
buckets, sums, counts = {}, {}, {}
for line in open(sys.argv[1]):
    m = re.match(r'relay_stage_seconds_bucket\{stage="(\w+)",le="([^"]+)"\} (\d+)', line)
    if m:
        buckets.setdefault(m[1], []).append((float("inf") if m[2] == "+Inf" else float(m[2]), int(m[3])))
    m = re.match(r'relay_stage_seconds_(sum|count)\{stage="(\w+)"\} ([\d.e+-]+)', line)
    if m:
        (sums if m[1] == "sum" else counts)[m[2]] = float(m[3])
commit = [(float("inf") if m[1] == "+Inf" else float(m[1]), int(m[2])) for m in
          (re.match(r'relay_outbox_commit_seconds_bucket\{le="([^"]+)"\} (\d+)', l) for l in open(sys.argv[1])) if m]
if commit:
    n = commit[-1][1]
    print("   outbox group commits by duration: " + ", ".join(
        f"<= {le * 1e3:g} ms: {c - prev}" for (le, c), prev in zip(commit, [0] + [c for _, c in commit]) if c - prev))
print("   time per request in each ingest stage, both runs (mean, p99 bucket upper bound):")
for stage in ["parse", "consent", "sanitize", "commit"]:
    n = counts.get(stage, 0)
    if not n:
        continue
    p99 = next(le for le, c in buckets[stage] if c >= 0.99 * n)
    print(f"     {stage:<9} mean {sums[stage] / n * 1e6:8.1f} us   p99 <= {p99 * 1e6:9.0f} us   ({int(n)} requests)")
PY
  # Peak resident memory of the relay process over both runs (VmHWM).
  local HWM; HWM=$(awk '/^VmHWM/{printf "%.0f", $2 / 1024}' "/proc/$pid/status")
  echo "   peak memory (VmHWM) ${HWM} MiB"
  SUMMARY+=("$label $(rate "$R") $(field "$R" p50_ms) $(field "$R" p99_ms) $(field "$F" p50_ms) $(field "$F" p99_ms) $T $HWM")
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), synchronous=$SYNC, $SECS s per run, concurrency $CONC, destinations: tiktok + meta, ${EVENTS_PER_REQUEST:-1} event(s) per request in the closed loop"
C1=$(ceiling); echo "$C1"
if [ -n "${BASELINE_BIN:-}" ]; then run_relay baseline "$BASELINE_BIN"; fi
run_relay relay "$BIN/pixelwatch-relay"
if [ -n "${BASELINE_BIN:-}" ] && [ -n "${ABBA:-}" ]; then
  run_relay relay-2 "$BIN/pixelwatch-relay"
  run_relay baseline-2 "$BASELINE_BIN"
fi
C2=$(ceiling); echo "$C2"
echo "== load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$(rate "$C1")" "$(rate "$C2")" "${SUMMARY[@]}" <<'PY'
import sys
c1, c2 = float(sys.argv[1]), float(sys.argv[2])
c = (c1 + c2) / 2
print(f"== ceiling {c1:.0f} and {c2:.0f} requests/s (mean {c:.0f})")
for s in sys.argv[3:]:
    label, r, p50, p99, f50, f99, drain, hwm = s.split()
    print(f"== {label}: {float(r):.0f} events/s durably, ratio {float(r) / c:.2f} to the ceiling; "
          f"p50/p99 {p50}/{p99} ms; at 1,000/s p50/p99 {f50}/{f99} ms; backlog drained in {drain} s; "
          f"peak memory {hwm} MiB")
PY
