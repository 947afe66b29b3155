#!/usr/bin/env bash
# bench/ab.sh — two builds of overhead-server, instrumented, side by side: the wall-clock
# before/after of a change in crates/telemetry (bench/callgrind.sh counts instructions, which
# miss system calls and wake-ups; this measures CPU time and throughput).
#
# Usage: bench/ab.sh A_BINARY B_BINARY      (ROUTE=trivial RATE=15000 DURATION=8
#        SAT_DURATION=8 ROUNDS=3; server pinned to core 1, load and OTLP receiver to core 0,
#        the receiver at normal priority unless RECEIVER_SCHED=idle, counting without
#        decoding unless RECEIVER_DECODE=full (bench/lib.sh);
#        A_NAME/B_NAME name the builds in the report, e.g. their commits;
#        A_ENV/B_ENV add settings to one side, e.g. B_ENV="OTEL_BSP_MAX_EXPORT_BATCH_SIZE=64",
#        to compare two settings of one build: bench/ab.sh BIN BIN; ROUTE=work needs
#        WORK_ITERATIONS, default 1000 ≈ 3 µs: `overhead-server calibrate --target 200us`)
#
# Build the two binaries first, e.g. A from a commit (in a worktree, with a target dir of its
# own: sharing one lets cargo hand this tree A's binary as "fresh") and B from this tree:
#   git worktree add /tmp/base <commit>
#   (cd /tmp/base && CARGO_TARGET_DIR=/tmp/base-target cargo build --release -p overhead -p faultline)
#   cp /tmp/base-target/release/overhead-server /tmp/A
#   cargo build --release -p overhead -p faultline && cp "${CARGO_TARGET_DIR:-target}"/release/overhead-server /tmp/B
#   bench/ab.sh /tmp/A /tmp/B    (overhead-load and overhead-collector: from this tree's build)
#
# Per round, A and B alternate (odd rounds A first), each on a fresh server with a live OTLP
# receiver: GET /$ROUTE open loop at RATE requests/s for DURATION s after a 1 s warm-up (the
# server's CPU µs per request from /proc/<pid>/stat, p50 and p99), then saturated with wrk for
# SAT_DURATION s (requests/s). Prints every run and the medians, and writes
# bench/results/ab-<UTC stamp>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
case "${1:-}" in
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    "") sed -n '2,27p' "$0" >&2; exit 2 ;;
esac
[ $# = 2 ] || { echo "usage: bench/ab.sh A_BINARY B_BINARY" >&2; exit 2; }
A=$(realpath "$1") B=$(realpath "$2")
ROUTE=${ROUTE:-trivial}
RATE=${RATE:-15000}
DURATION=${DURATION:-8}
SAT_DURATION=${SAT_DURATION:-8}
ROUNDS=${ROUNDS:-3}
A_NAME=${A_NAME:-}
B_NAME=${B_NAME:-}
A_ENV=${A_ENV:-}
B_ENV=${B_ENV:-}
WORK_ITERATIONS=${WORK_ITERATIONS:-1000}
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
CLK_TCK=$(getconf CLK_TCK)
OUT=$(mktemp -d)
for tool in wrk jq curl taskset; do command -v "$tool" >/dev/null || die "$tool is missing"; done
for b in "$A" "$B" "$BIN/overhead-collector" "$BIN/overhead-load"; do
    [ -x "$b" ] || die "$b is not an executable (cargo build --release -p overhead -p faultline)"
done

PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; rm -rf "$OUT"' EXIT

require_free_ports "$APP_PORT" "$ADMIN_PORT" "$GRPC_PORT" "$STATS_PORT"
start_collector "$OUT/collector.out"


# run LABEL BINARY EXTRA_ENV: sets ROW to "cpu_us_per_request p50_us p99_us saturated_rps
# spans_per_request dropped_per_request_open_loop dropped_per_request_saturated". Runs in the main shell (not in `$(…)`), so that `die` stops the script
# and the server is always in PIDS.
run() {
    local label=$1 bin=$2 extra pid t0 t1 d0 d1 d2 sat spans0 served
    read -ra extra <<<"$3"
    server_env
    spans0=$(collector_spans)
    env -i "${SERVER_ENV[@]}" "${extra[@]}" taskset -c "$SERVER_CPU" "$bin" serve \
        --mode instrumented --listen "127.0.0.1:$APP_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
        --work-iterations "$WORK_ITERATIONS" >"$OUT/$label.log" 2>"$OUT/$label.stderr" &
    pid=$!
    PIDS+=("$pid")
    wait_http "http://127.0.0.1:$ADMIN_PORT/healthz" || die "$label did not start: $(cat "$OUT/$label.stderr")"
    # Answered, but by this server? (another process on the port would be measured instead)
    kill -0 "$pid" 2>/dev/null || die "$label exited: $(cat "$OUT/$label.stderr")"
    t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    d0=$(dropped_spans)
    taskset -c "$LOAD_CPU" "$BIN/overhead-load" --url "http://127.0.0.1:$APP_PORT/$ROUTE" \
        --rate "$RATE" --duration "${DURATION}s" --warmup 1s >"$OUT/$label.json" ||
        die "overhead-load failed for $label"
    t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    d1=$(dropped_spans)
    taskset -c "$LOAD_CPU" wrk -t1 -c64 -d"${SAT_DURATION}s" -H "traceparent: $TRACEPARENT" \
        "http://127.0.0.1:$APP_PORT/$ROUTE" >"$OUT/$label.wrk" || die "wrk failed for $label"
    sat=$(awk '/^Requests\/sec:/ {print $2}' "$OUT/$label.wrk")
    [ -n "$sat" ] || die "wrk gave no rate for $label: $(cat "$OUT/$label.wrk")"
    d2=$(dropped_spans)
    kill -TERM "$pid"
    wait "$pid" || true
    sleep 1 # the last batch reaches the receiver
    local f=$OUT/$label.json
    [ "$(jq -r '.errors + .non_2xx + .unfinished' "$f")" = 0 ] || log "warning: $label had failed requests: $(cat "$f")"
    # Every request the server answered: warm-up, measured, saturated.
    served=$(($(jq -r '.ok + .non_2xx' "$f") + RATE + $(awk '/requests in/ {print $1}' "$OUT/$label.wrk")))
    # Warm-up requests are served inside the CPU window too.
    ROW=$(awk -v c=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$(jq -r '.scheduled' "$f")" -v w="$RATE" \
        -v p50="$(jq -r .p50_us "$f")" -v p99="$(jq -r .p99_us "$f")" -v sat="$sat" \
        -v s="$(($(collector_spans) - spans0))" -v served="$served" \
        -v dl=$((d1 - d0)) -v ds=$((d2 - d1)) -v nsat="$(awk '/requests in/ {print $1}' "$OUT/$label.wrk")" \
        'BEGIN {printf "%.2f\t%.0f\t%.0f\t%.0f\t%.3f\t%.3f\t%.3f", c / hz * 1e6 / (n + w), p50, p99, sat, s / served, dl / (n + w), (nsat > 0 ? ds / nsat : 0)}')
}

ROWS=$OUT/rows.tsv
for round in $(seq "$ROUNDS"); do
    order="A B"; [ $((round % 2)) = 0 ] && order="B A"
    for which in $order; do
        bin=$A extra=$A_ENV
        [ "$which" = B ] && bin=$B extra=$B_ENV
        log "round $round/$ROUNDS: $which"
        run "$which-$round" "$bin" "$extra"
        printf '%s\t%s\t%s\n' "$round" "$which" "$ROW" >>"$ROWS"
    done
done

median() { sort -n | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
col() { awk -F'\t' -v w="$1" -v c="$2" '$2 == w {print $c}' "$ROWS" | median; }
REPORT=$ROOT/bench/results/ab-$STAMP.md
mkdir -p "$ROOT/bench/results"
{
    echo "### A/B: \`bench/ab.sh\` ($(date -u '+%Y-%m-%d %H:%M UTC'), run from a checkout at $(git rev-parse --short HEAD))"
    echo
    echo "- A: ${A_NAME:+$A_NAME, }\`$A\`${A_ENV:+ with \`$A_ENV\`}"
    echo "- B: ${B_NAME:+$B_NAME, }\`$B\`${B_ENV:+ with \`$B_ENV\`}"
    echo "- GET /$ROUTE, instrumented, export over OTLP \`$OTLP_PROTOCOL\` unless an _ENV says otherwise; open loop at $RATE requests/s for ${DURATION} s (after 1 s of warm-up),"
    echo "  then \`wrk -t1 -c64\` for ${SAT_DURATION} s; server on core $SERVER_CPU, load and OTLP receiver on core $LOAD_CPU,"
    echo "  $(receiver_note)."
    echo "- Rounds: $ROUNDS, alternated (odd rounds A first); medians.$([ "$ROUTE" = work ] && echo " GET /work = $WORK_ITERATIONS iterations of \`overhead::burn\`.")"
    echo "- Machine: $(machine_line).$(extra_env_note)"
    echo
    echo "| build | CPU µs per request at $RATE/s | p50 µs | p99 µs | saturated requests/s | spans received per request | spans dropped per request at $RATE/s / saturated |"
    echo "|---|---|---|---|---|---|---|"
    for w in A B; do
        name=$A_NAME; [ "$w" = B ] && name=$B_NAME
        echo "| $w${name:+: $name} | $(col "$w" 3) | $(col "$w" 4) | $(col "$w" 5) | $(col "$w" 6) | $(col "$w" 7) | $(col "$w" 8) / $(col "$w" 9) |"
    done
    echo
    echo "Spans received per request: the receiver's count over the whole run (open loop, warm-up and"
    echo "saturation together) per request served; 0 when a build exports nothing (\`OTEL_SDK_DISABLED\`)."
    echo "Spans dropped: the server's own \`otel_sdk_processor_span_processed_total{error_type=\"queue_full\"}\`"
    echo "per request, in each phase; a build that dropped spans did less export work than complete traces cost."
    echo
    echo "Every run (round, build, CPU µs per request, p50, p99, saturated requests/s, spans per request, dropped per request open loop, saturated):"
    echo
    echo '```text'
    cat "$ROWS"
    echo '```'
} >"$REPORT"
cat "$REPORT"
log "done: $REPORT"
