#!/usr/bin/env bash
# bench/hops.sh — where an order's time goes, per hop, from the traces themselves.
#
# Starts overhead-collector on the default OTLP endpoint (127.0.0.1:4317) dumping every span,
# `faultline up --no-load` in a fresh directory, then `faultline load --mix 100,0,0` (order
# placements only, open loop) at RPS for DURATION, stops everything, and prints overhead-hops'
# breakdown anchored at the gateway's SERVER span `POST /api/orders` (and writes it to
# bench/results/hops-<stamp>.md).
#
# Usage: RPS=250 DURATION=20s bench/hops.sh [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RPS=${RPS:-250}
DURATION=${DURATION:-20s}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=$ROOT/bench/results/hops-$STAMP
mkdir -p "$OUT"
log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [ "${1:-}" != --no-build ]; then
    log "cargo build --release -p overhead -p faultline"
    cargo build --release --locked -p overhead -p faultline >"$OUT/build.log" 2>&1 || die "build failed: $OUT/build.log"
fi
for p in 4317 8080 8081 8082; do
    ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || die "port $p is in use"
done

PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done' EXIT
"$BIN/overhead-collector" --grpc 127.0.0.1:4317 --stats 127.0.0.1:14318 \
    --spans-out "$OUT/spans.jsonl" >"$OUT/collector.out" 2>&1 &
COLLECTOR=$!
PIDS+=("$COLLECTOR")
"$BIN/faultline" up --no-load --dir "$OUT/faultline" </dev/null >"$OUT/up.out" 2>&1 &
UP=$!
PIDS+=("$UP")
for _ in $(seq 600); do
    grep -q "All services ready" "$OUT/up.out" 2>/dev/null && break
    kill -0 "$UP" 2>/dev/null || die "faultline up stopped: $(tail -5 "$OUT/up.out")"
    sleep 0.1
done
log "faultline load --mix 100,0,0 --rps $RPS --duration $DURATION"
OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 "$BIN/faultline" load --mix 100,0,0 \
    --rps "$RPS" --duration "$DURATION" | tee "$OUT/load.txt"
sleep 5 # fulfillment finishes, the last batches are exported
kill -INT "$UP"
wait "$UP" || true
sleep 2
kill -TERM "$COLLECTOR"
wait "$COLLECTOR" || true
{
    echo "### Where an order's time goes (bench/hops.sh)"
    echo
    echo "\`RPS=$RPS DURATION=$DURATION bench/hops.sh\`, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)."
    echo "\`faultline up --no-load\` (native defaults), \`faultline load --mix 100,0,0 --rps $RPS --duration $DURATION\`;"
    echo "spans received by \`overhead-collector --spans-out\`, broken down by \`overhead-hops --anchor 'POST /api/orders'\`."
    echo
    echo "The load, as \`faultline load\` reported it (latency from each request's scheduled send time):"
    echo
    echo '```text'
    cat "$OUT/load.txt"
    echo '```'
    echo
    "$BIN/overhead-hops" --spans "$OUT/spans.jsonl" --anchor "POST /api/orders"
} >"$OUT.md"
cat "$OUT.md"
log "done: $OUT.md (spans: $OUT/spans.jsonl)"
