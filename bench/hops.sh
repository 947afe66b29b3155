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
# (--no-build: use the release build's overhead-collector, overhead-hops and faultline as built,
# in target/release or $CARGO_TARGET_DIR/release;
# ports 4317, 14318, 8080-8082 and 9080-9082 must be free.)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RPS=${RPS:-250}
DURATION=${DURATION:-20s}
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"   # BIN, log, die, machine_line
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=$ROOT/bench/results/hops-$STAMP

BUILD=1
for a in "$@"; do
    case "$a" in
        --no-build) BUILD=0 ;;
        -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "unknown argument: $a (see --help)" >&2; exit 2 ;;
    esac
done
# The contract's ports (the receiver on the default OTLP endpoint, the three services and their
# admin ports) and the receiver's stats port.
for p in 4317 14318 8080 8081 8082 9080 9081 9082; do
    ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null ||
        die "port $p is in use (another faultline up or benchmark running?)"
done
mkdir -p "$OUT"
if [ "$BUILD" = 1 ]; then
    build_release "$OUT/build.log"
fi
for b in overhead-collector overhead-hops faultline; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing: cargo build --release -p overhead -p faultline (or run without --no-build)"
done

PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done' EXIT
"$BIN/overhead-collector" --grpc 127.0.0.1:4317 --stats 127.0.0.1:14318 \
    --spans-out "$OUT/spans.jsonl" >"$OUT/collector.out" 2>&1 &
COLLECTOR=$!
PIDS+=("$COLLECTOR")
for _ in $(seq 100); do
    curl -sf -o /dev/null http://127.0.0.1:14318/stats && break
    kill -0 "$COLLECTOR" 2>/dev/null || die "the OTLP receiver stopped: $(tail -3 "$OUT/collector.out")"
    sleep 0.1
done
"$BIN/faultline" up --no-load --dir "$OUT/faultline" </dev/null >"$OUT/up.out" 2>&1 &
UP=$!
PIDS+=("$UP")
for _ in $(seq 600); do
    grep -q "All services ready" "$OUT/up.out" 2>/dev/null && break
    kill -0 "$UP" 2>/dev/null || die "faultline up stopped: $(tail -5 "$OUT/up.out")"
    sleep 0.1
done
# CPU time (utime + stime, clock ticks) of each service, before and after the load.
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
declare -A CPU0
for child in $(pgrep -P "$UP" || true); do CPU0[$child]=$(cpu_ticks "$child"); done
LOAD_START=$(date +%s.%N)
log "faultline load --mix 100,0,0 --rps $RPS --duration $DURATION"
OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 "$BIN/faultline" load --mix 100,0,0 \
    --rps "$RPS" --duration "$DURATION" | tee "$OUT/load.txt"
LOAD_END=$(date +%s.%N)
declare -A CPU1
for child in "${!CPU0[@]}"; do CPU1[$child]=$(cpu_ticks "$child" 2>/dev/null || echo 0); done
sleep 5 # fulfillment finishes, the last batches are exported
# Each service's CPU over the load (in cores: CPU seconds per second of load) and its memory
# after it: resident now, and its peak (VmHWM).
RSS_ROWS=""
HZ=$(getconf CLK_TCK)
for child in $(pgrep -P "$UP" || true); do
    name=$(tr '\0' ' ' <"/proc/$child/cmdline" | awk '{for (i = 1; i < NF; i++) if ($i == "serve") print $(i + 1)}')
    [ -n "$name" ] || continue
    cores=$(awk -v a="${CPU0[$child]:-0}" -v b="${CPU1[$child]:-0}" -v hz="$HZ" -v t0="$LOAD_START" -v t1="$LOAD_END" \
        'BEGIN {printf "%.2f", (b - a) / hz / (t1 - t0)}')
    RSS_ROWS+="| $name | $cores | $(awk '$1 == "VmRSS:" {printf "%.1f", $2 / 1024}' "/proc/$child/status") MB | $(awk '$1 == "VmHWM:" {printf "%.1f", $2 / 1024}' "/proc/$child/status") MB |"$'\n'
done
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
    echo "Machine: $(machine_line)."
    echo
    echo "The load, as \`faultline load\` reported it (latency from each request's scheduled send time):"
    echo
    echo '```text'
    cat "$OUT/load.txt"
    echo '```'
    echo
    "$BIN/overhead-hops" --spans "$OUT/spans.jsonl" --anchor "POST /api/orders"
    if [ -n "$RSS_ROWS" ]; then
        echo
        echo "Each service: CPU during the load (cores: its CPU seconds per second of load)"
        echo "and memory 5 s after it (\`/proc/<pid>/stat\` and \`status\`):"
        echo
        echo "| service | CPU (cores) | VmRSS | peak (VmHWM) |"
        echo "|---|---|---|---|"
        printf '%s' "$RSS_ROWS"
    fi
} >"$OUT.md"
cat "$OUT.md"
log "done: $OUT.md (spans: $OUT/spans.jsonl)"
