#!/usr/bin/env bash
# bench/callgrind.sh — instructions per request, bare vs instrumented, under callgrind.
#
# Runs overhead-server (bare, then instrumented with a live OTLP receiver) under
# `valgrind --tool=callgrind` twice, serving N1 and then N2 requests of ROUTE at RATE requests/s
# (open loop, overhead-load), and prints (Ir(N2) - Ir(N1)) / (N2 - N1): the instructions one
# request costs the whole server process (all threads: runtime, exporters, upkeep). Counting
# starts once the server is ready (start-up is left out) and shut-down cancels out. Unlike wall-clock figures this is repeatable on a busy machine, so
# it is the before/after figure for a change in crates/telemetry. Threads are counted apart
# (--separate-threads): the instructions on telemetry's background threads (`otel-export`, the
# SDK's batch processors and `log-flush`, off the service's runtime) are reported separately
# from those on the service's own threads (the request path).
#
# Usage: bench/callgrind.sh [--no-build] [--keep]      (ROUTE=trivial N1=500 N2=1500 RATE=100)
# Writes bench/results/callgrind-<UTC stamp>.md and, with --keep, the callgrind.out.*-NN files
# (one per thread; open them with callgrind_annotate or kcachegrind).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

BUILD=1 KEEP=0
for a in "$@"; do
    case "$a" in
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "unknown argument: $a" >&2; exit 2 ;;
    esac
done
ROUTE=${ROUTE:-trivial}
N1=${N1:-500}
N2=${N2:-1500}
RATE=${RATE:-100}
WORK_ITERATIONS=${WORK_ITERATIONS:-1000}  # GET /work: kept small, it is the same in both modes
SERVER_ARGS=${SERVER_ARGS:-}                # e.g. --no-request-log
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=$ROOT/bench/results/callgrind-$STAMP
mkdir -p "$OUT"

command -v valgrind >/dev/null || die "valgrind is missing (apt-get install valgrind)"
command -v jq >/dev/null || die "jq is missing (apt-get install jq)"

if [ "$BUILD" = 1 ]; then
    log "cargo build --release -p overhead"
    cargo build --release --locked -p overhead >"$OUT/build.log" 2>&1 || die "build failed: $OUT/build.log"
fi

PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done' EXIT

require_free_ports "$APP_PORT" "$ADMIN_PORT" "$GRPC_PORT" "$STATS_PORT"
start_collector "$OUT/collector.out"

# run MODE N: sets RUN_IR and RUN_BACKGROUND, the instructions (Ir) of the whole server process
# and of telemetry's background threads. Runs in the main shell (not in `$(…)`), so that `die`
# stops the script and the server is always in PIDS.
run() {
    local mode=$1 n=$2 file=$OUT/callgrind.out.$1-$2
    server_env
    env -i "${SERVER_ENV[@]}" taskset -c "$SERVER_CPU" valgrind --tool=callgrind --separate-threads=yes --instr-atstart=no \
        --callgrind-out-file="$file" \
        "$BIN/overhead-server" serve --mode "$mode" --listen "127.0.0.1:$APP_PORT" \
        --admin-listen "127.0.0.1:$ADMIN_PORT" --work-iterations "$WORK_ITERATIONS" $SERVER_ARGS \
        >"$OUT/$mode-$n.log" 2>"$OUT/$mode-$n.valgrind" &
    local pid=$!
    PIDS+=("$pid")
    wait_http "http://127.0.0.1:$ADMIN_PORT/healthz" 600 || die "overhead-server did not start under valgrind"
    # Answered, but by this server? (another process on the port would be measured instead)
    kill -0 "$pid" 2>/dev/null || die "overhead-server exited: $(tail -5 "$OUT/$mode-$n.valgrind")"
    # Count from here: start-up (its clock calibration varies from run to run) is left out.
    callgrind_control -i on "$pid" >/dev/null 2>&1 || die "callgrind_control could not start the count"
    taskset -c "$LOAD_CPU" "$BIN/overhead-load" --url "http://127.0.0.1:$APP_PORT/$ROUTE" \
        --rate "$RATE" --duration "$(awk -v n="$n" -v r="$RATE" 'BEGIN {printf "%dms", n * 1000 / r}')" \
        --warmup 0s --connections 4 >"$OUT/$mode-$n.load.json"
    [ "$(jq -r .ok "$OUT/$mode-$n.load.json")" = "$n" ] || die "not all $n requests succeeded: $(cat "$OUT/$mode-$n.load.json")"
    kill -TERM "$pid"
    wait "$pid" || true
    # "<all threads> <background threads>": a thread is telemetry's background thread when its
    # busiest function is the export runtime's loop, an SDK batch processor's or the log flush.
    local all=0 export=0 part ir
    for part in "$file"-*; do
        ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$part")
        all=$((all + ir))
        if callgrind_annotate --inclusive=yes "$part" 2>/dev/null | grep -E "^ *[0-9,]+ \(" | sed -n 2,8p |
            grep -qE "export_thread::ExportRuntime|current_thread::CoreGuard::block_on|BatchSpanProcessor|batch_log_processor|log_writer::"; then
            export=$((export + ir))
        fi
    done
    RUN_IR=$all RUN_BACKGROUND=$export
}

declare -A IR EXPORT
for mode in bare instrumented; do
    for n in $N1 $N2; do
        log "callgrind: $mode, $n requests of /$ROUTE"
        run "$mode" "$n"
        [ -n "$RUN_IR" ] && [ "$RUN_IR" -gt 0 ] || die "no instruction count for $mode, $n requests"
        IR[$mode-$n]=$RUN_IR EXPORT[$mode-$n]=$RUN_BACKGROUND
    done
done
# Did the instrumented runs' spans reach the receiver? (A run that stopped exporting would
# count fewer instructions for the wrong reason.)
SPANS=$(collector_spans || echo 0)
kill -TERM "$COLLECTOR_PID" 2>/dev/null || true

per() { awk -v a="${IR[$1-$N1]}" -v b="${IR[$1-$N2]}" -v n1="$N1" -v n2="$N2" 'BEGIN {printf "%.0f", (b - a) / (n2 - n1)}'; }
per_export() { awk -v a="${EXPORT[$1-$N1]}" -v b="${EXPORT[$1-$N2]}" -v n1="$N1" -v n2="$N2" 'BEGIN {printf "%.0f", (b - a) / (n2 - n1)}'; }
BARE=$(per bare)
INSTR=$(per instrumented)
INSTR_EXPORT=$(per_export instrumented)
REPORT=$ROOT/bench/results/callgrind-$STAMP.md
{
    echo "### Instructions per request (callgrind)"
    echo
    echo "\`bench/callgrind.sh\` ($(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates/telemetry crates/overhead || echo ', telemetry/overhead modified')):"
    echo "GET /$ROUTE${SERVER_ARGS:+ (server: $SERVER_ARGS)}, export over OTLP \`$OTLP_PROTOCOL\`, whole server process, (Ir($N2 requests) − Ir($N1 requests)) / $((N2 - N1))."
    echo "Machine: $(machine_line).$(extra_env_note)"
    echo
    echo "| mode | Ir, $N1 requests | Ir, $N2 requests | per request |"
    echo "|---|---|---|---|"
    echo "| bare | ${IR[bare-$N1]} | ${IR[bare-$N2]} | $BARE |"
    echo "| instrumented | ${IR[instrumented-$N1]} | ${IR[instrumented-$N2]} | $INSTR |"
    echo
    echo "Instrumented ÷ bare: $(awk -v a="$INSTR" -v b="$BARE" 'BEGIN {printf "%.2f", a / b}'); telemetry adds $((INSTR - BARE)) instructions per request:"
    echo "$((INSTR - INSTR_EXPORT - BARE)) on the service's own threads (the request path: $((INSTR - INSTR_EXPORT)) against bare's $BARE)"
    echo "and $INSTR_EXPORT on telemetry's background threads (\`otel-export\`, the SDK's batch processors and \`log-flush\`, off the service's runtime)."
    echo
    echo "Spans the OTLP receiver got from the two instrumented runs: $SPANS for $((N1 + N2)) requests$(awk -v s="$SPANS" -v n=$((N1 + N2)) 'BEGIN {if (s < 0.99 * n) print " — **fewer than one per request: export did not keep up or failed, so the instrumented count is too low**"; else print " (one per request)"}')."
    if command -v callgrind_annotate >/dev/null; then
        echo
        echo "Top functions (inclusive) of the instrumented run with $N2 requests, on its busiest thread (the runtime worker):"
        echo
        echo '```text'
        # The busiest thread: the runtime worker that serves the requests.
        busiest=$(for part in "$OUT/callgrind.out.instrumented-$N2"-*; do
            echo "$(awk '/^(summary|totals):/ {print $2; exit}' "$part") $part"; done | sort -n | tail -1 | cut -d' ' -f2)
        callgrind_annotate --inclusive=yes --threshold=100 "$busiest" 2>/dev/null |
            grep -E "^ *[0-9,]+ \(" | head -60 | cut -c1-200 || true
        echo '```'
    fi
} >"$REPORT"
[ "$KEEP" = 1 ] || rm -f "$OUT"/callgrind.out.*
cat "$REPORT"
log "done: $REPORT"
