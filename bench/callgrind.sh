#!/usr/bin/env bash
# bench/callgrind.sh — instructions per request, bare vs instrumented, under callgrind.
#
# Runs overhead-server under `valgrind --tool=callgrind` four times: bare, then instrumented
# (exporting to a live OTLP receiver), each serving N1 and then N2 requests of GET /ROUTE at
# RATE requests/s (open loop), and prints (Ir(N2) - Ir(N1)) / (N2 - N1): the instructions one
# request costs the whole server process. Counting starts once the server answers (start-up is
# left out) and shut-down cancels out. Unlike wall-clock figures this is repeatable on a busy
# machine: the before/after figure for a change in crates/telemetry.
#
# The report splits telemetry's cost by thread (the service's own, the SDK's batch processors,
# otel-export, log-flush, the metrics upkeep), gives the libraries' own share of it (a lower
# bound; bench/README.md says what it counts) and, on /trivial and /work, the budget the
# performance issue's throughput target leaves telemetry.
#
# Usage: bench/callgrind.sh [--no-build] [--keep]
#   --no-build  use the binaries in target/release as they are (else: build_release in lib.sh,
#               cargo build --release --locked -p overhead -p faultline)
#   --keep      keep the callgrind.out.*-NN files (one per thread; callgrind_annotate)
# Settings (environment):
#   ROUTE=trivial|work  N1=500  N2=1500 (N2 > N1)  RATE=100
#   WORK_ITERATIONS=1000  GET /work's loop; for the ~200 µs route of the issue, take it from
#                         `taskset -c 1 target/release/overhead-server calibrate --target 200us`
#   SERVER_ARGS (e.g. --no-request-log)  SERVER_EXTRA_ENV (e.g. OTEL_BSP_SCHEDULE_DELAY=60000)
#   OTLP_PROTOCOL=grpc|http/protobuf  CARGO_TARGET_DIR  *_PORT (bench/lib.sh)
# Writes bench/results/callgrind-<UTC stamp>.md. /trivial takes ~45 s, /work ~1 min at RATE=50.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

BUILD=1 KEEP=0
for a in "$@"; do
    case "$a" in
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
        *) echo "unknown argument: $a" >&2; exit 2 ;;
    esac
done
ROUTE=${ROUTE:-trivial}
N1=${N1:-500}
N2=${N2:-1500}
RATE=${RATE:-100}
# GET /work's loop: small by default (the same in both modes). Set but empty (a calibration
# that failed) is an error, not the default.
WORK_ITERATIONS=${WORK_ITERATIONS-1000}
SERVER_ARGS=${SERVER_ARGS:-}                # e.g. --no-request-log
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
case $ROUTE in
    trivial|work) ;;
    *) die "ROUTE must be trivial or work, not '$ROUTE'" ;;
esac
for v in N1 N2 RATE WORK_ITERATIONS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive whole number, not '${!v}'"
done
[ "$N2" -gt "$N1" ] || die "N2 ($N2) must be larger than N1 ($N1): the figure is (Ir(N2) - Ir(N1)) / (N2 - N1)"
command -v valgrind >/dev/null || die "valgrind is missing (apt-get install valgrind)"
command -v jq >/dev/null || die "jq is missing (apt-get install jq)"
require_free_ports "$APP_PORT" "$ADMIN_PORT" "$GRPC_PORT" "$STATS_PORT"
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=$ROOT/bench/results/callgrind-$STAMP
mkdir -p "$OUT"

[ "$BUILD" = 0 ] || build_release "$OUT/build.log"
[ -x "$BIN/overhead-server" ] || die "$BIN/overhead-server is missing (run without --no-build)"

PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done' EXIT

start_collector "$OUT/collector.out"

# run MODE N: sets RUN_IR and RUN_BACKGROUND, the instructions (Ir) of the whole server process
# and of telemetry's background threads, RUN_LIB_BG and RUN_LIB_REQ, the libraries' share on the
# background threads and on the others, and a THREADS entry (Ir and kind) per thread. Runs in
# the main shell (not in `$(…)`), so that `die` stops the script and the server is always in PIDS.
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
    # A thread is telemetry's background thread when its busiest functions are an SDK batch
    # processor's, the export runtime's (otel-export, a current-thread tokio runtime busy with
    # tonic's HTTP/2 connection task; for OTLP/HTTP, reqwest's blocking-client threads), the log
    # flush's or the Prometheus recorder's upkeep. The first two run library code (the SDK's
    # conversion to OTLP, prost, tonic) but for two thin exporter wrappers of ours; the last two
    # are ours. On the other threads, the libraries' share is what their entry points cost
    # (library_calls).
    local all=0 export=0 lib_bg=0 lib_req=0 part ir top calls kind
    for part in "$file"-*; do
        ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$part")
        all=$((all + ir))
        top=$(callgrind_annotate --inclusive=yes "$part" 2>/dev/null | grep -E "^ *[0-9,]+ \(" | sed -n 2,16p || true)
        if grep -qE "BatchSpanProcessor" <<<"$top"; then
            export=$((export + ir)) lib_bg=$((lib_bg + ir)) kind="SDK batch span processor"
        elif grep -qE "batch_log_processor" <<<"$top"; then
            export=$((export + ir)) lib_bg=$((lib_bg + ir)) kind="SDK batch log processor"
        elif { grep -q "current_thread::CoreGuard::block_on" <<<"$top" &&
            grep -qE "h2::client::ClientTask|tonic::" <<<"$top"; }; then
            export=$((export + ir)) lib_bg=$((lib_bg + ir)) kind="otel-export (OTLP/gRPC client)"
        elif grep -q "reqwest::blocking::client" <<<"$top"; then
            export=$((export + ir)) lib_bg=$((lib_bg + ir)) kind="reqwest (OTLP/HTTP client)"
        elif grep -qE "log_writer::" <<<"$top"; then
            export=$((export + ir)) kind="log flush"
        elif grep -qE "metrics_exporter_prometheus|run_upkeep" <<<"$top"; then
            export=$((export + ir)) kind="metrics upkeep"
        else
            calls=$(library_calls "$part") || die "cannot tell the libraries' share in $part (see above)"
            lib_req=$((lib_req + calls)) kind="service (main, runtime, other)"
        fi
        THREADS[$mode-$n-${part##*-}]="$ir|$kind"
    done
    RUN_IR=$all RUN_BACKGROUND=$export RUN_LIB_BG=$lib_bg RUN_LIB_REQ=$lib_req
}

# library_calls FILE: the instructions (inclusive) one thread spent in the calls that
# tracing-opentelemetry and the OTLP log bridge receive from `tracing` (creating, entering,
# leaving and closing a span; an event), and in `OpenTelemetrySpanExt` (the span's context,
# which starts the SDK span, its parent, an attribute), less this repository's span and log
# processor wrappers inside them (with the SDK's batch processors they call): a lower bound of
# what those libraries cost, since `tracing`'s own dispatch and registry are left out.
library_calls() {
    callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null | awk '
        /PROGRAM TOTALS/ { total = $1; gsub(/,/, "", total); next }
        /^ *[0-9,]+ \(/ {
            v = $1; gsub(/,/, "", v)
            name = $0
            sub(/^ *[0-9,]+ \( *[0-9.]+%\) +[^:]*:/, "", name)
            sub(/ \[[^]]*\]$/, "", name)
            if (name ~ /OpenTelemetryLayer<S,T> as tracing_subscriber::layer::Layer<S>>::on_[a-z_]+$/ ||
                name ~ /OpenTelemetryTracingBridge<P,L> as tracing_subscriber::layer::Layer<S>>::on_event$/) {
                lib += v
                if (v + 0 > total + 0) inflated = inflated " " name
                if (name ~ /::on_close$/) need_end = 1
                if (name ~ /OpenTelemetryTracingBridge/) need_emit = 1
            } else if (name ~ /BoundedSpanProcessor<P> as opentelemetry_sdk::trace::span_processor::SpanProcessor>::on_end$/) {
                end_wrapper = v
            } else if (name ~ /EventTime<P> as opentelemetry_sdk::logs::log_processor::LogProcessor>::(emit|event_enabled)$/) {
                log_wrapper += v
            } else if (name ~ /BoundedSpanProcessor<P> as opentelemetry_sdk::trace::span_processor::SpanProcessor>::on_start$/ ||
                       name ~ /KeepRandomFlag as opentelemetry_sdk::trace::sampler::ShouldSample>::should_sample$/) {
                start_wrapper += v
            } else if (name ~ /OpenTelemetrySpanExt>::[a-z_]+(::\{\{closure\}\})*$/) {
                # A method inlined into its caller shows as its closures: count the outermost.
                m = name; sub(/.*OpenTelemetrySpanExt>::/, "", m)
                method = m; sub(/::.*/, "", method)
                depth = gsub(/\{\{closure\}\}/, "", m)
                if (!(method in best) || depth < bestdepth[method]) { best[method] = v; bestdepth[method] = depth }
            }
        }
        END {
            # Our wrappers run inside library calls: the span processor inside on_close, the log
            # processor inside the bridge, the sampler and on_start inside the span context.
            # Subtract each only if the call around it was counted (the compiler may inline a
            # call into its caller, which then hides it); a wrapper counted without its caller
            # would lower the bound, a caller counted without its wrapper (renamed) would raise
            # it, so that stops the script.
            if ((need_end && !end_wrapper) || (need_emit && !log_wrapper) || inflated != "") {
                print "library_calls: a wrapper of ours was not found by name, or a count exceeds the thread total:" inflated > "/dev/stderr"
                exit 1
            }
            for (k in best) lib += best[k]
            ours = (need_end ? end_wrapper : 0) + (need_emit ? log_wrapper : 0) + ("context" in best ? start_wrapper : 0)
            printf "%d\n", lib - ours
        }'
}

declare -A IR EXPORT LIB_BG LIB_REQ THREADS
for mode in bare instrumented; do
    for n in $N1 $N2; do
        log "callgrind: $mode, $n requests of /$ROUTE"
        run "$mode" "$n"
        [ -n "$RUN_IR" ] && [ "$RUN_IR" -gt 0 ] || die "no instruction count for $mode, $n requests"
        # shellcheck disable=SC2034 # read through per_count's nameref
        IR[$mode-$n]=$RUN_IR EXPORT[$mode-$n]=$RUN_BACKGROUND LIB_BG[$mode-$n]=$RUN_LIB_BG LIB_REQ[$mode-$n]=$RUN_LIB_REQ
    done
done
# Did the instrumented runs' spans reach the receiver? (A run that stopped exporting would
# count fewer instructions for the wrong reason.)
SPANS=$(collector_spans || echo 0)
kill -TERM "$COLLECTOR_PID" 2>/dev/null || true

# per_count ARRAY MODE: that count's per-request difference between the two runs.
per_count() {
    local -n counts=$1
    awk -v a="${counts[$2-$N1]}" -v b="${counts[$2-$N2]}" -v n1="$N1" -v n2="$N2" 'BEGIN {printf "%.0f", (b - a) / (n2 - n1)}'
}
BARE=$(per_count IR bare)
INSTR=$(per_count IR instrumented)
INSTR_EXPORT=$(per_count EXPORT instrumented)
INSTR_LIB_BG=$(per_count LIB_BG instrumented)
INSTR_LIB_REQ=$(per_count LIB_REQ instrumented)
INSTR_LIB=$((INSTR_LIB_BG + INSTR_LIB_REQ))
# The issue's saturated-throughput target for this route (instrumented ÷ bare), if it has one.
case $ROUTE in
    trivial) TARGET=0.90 ;;
    work) TARGET=0.97 ;;
    *) TARGET= ;;
esac
REPORT=$ROOT/bench/results/callgrind-$STAMP.md
# thousands N: N with a comma every three digits.
thousands() { sed -E ':a;s/^(-?[0-9]+)([0-9]{3})/\1,\2/;ta' <<<"$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
{
    echo "### Instructions per request (callgrind)"
    echo
    echo "\`bench/callgrind.sh\` ($(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates/telemetry crates/overhead bench/callgrind.sh bench/lib.sh || echo ', with uncommitted changes to telemetry, overhead or the bench scripts')):"
    echo "GET /$ROUTE$([ "$ROUTE" = work ] && echo " ($WORK_ITERATIONS iterations)")${SERVER_ARGS:+ (server: $SERVER_ARGS)} at $RATE requests/s, export over OTLP \`$OTLP_PROTOCOL\`, whole server process, (Ir($N2 requests) − Ir($N1 requests)) / $((N2 - N1))."
    echo "Binary: $BIN/overhead-server$([ "$BUILD" = 1 ] && echo ", built by this run (cargo build --release --locked -p overhead -p faultline)" || echo " as found (--no-build)")."
    echo "Machine: $(machine_line).$(extra_env_note)"
    echo
    echo "| mode | Ir, $N1 requests | Ir, $N2 requests | per request |"
    echo "|---|---|---|---|"
    echo "| bare | $(thousands "${IR[bare-$N1]}") | $(thousands "${IR[bare-$N2]}") | $(thousands "$BARE") |"
    echo "| instrumented | $(thousands "${IR[instrumented-$N1]}") | $(thousands "${IR[instrumented-$N2]}") | $(thousands "$INSTR") |"
    echo
    echo "Instrumented ÷ bare: $(ratio "$INSTR" "$BARE"); telemetry adds $(thousands $((INSTR - BARE))) instructions per request:"
    echo "$(thousands $((INSTR - INSTR_EXPORT - BARE))) on the service's own threads (the request path: $(thousands $((INSTR - INSTR_EXPORT))) against bare's $(thousands "$BARE"))"
    echo "and $(thousands "$INSTR_EXPORT") on telemetry's background threads (\`otel-export\`, the SDK's batch processors, \`log-flush\` and the Prometheus recorder's upkeep, off the service's runtime)."
    echo
    echo "Spans the OTLP receiver got from the two instrumented runs: $SPANS for $((N1 + N2)) requests$(awk -v s="$SPANS" -v n=$((N1 + N2)) 'BEGIN {if (s < 0.99 * n) print " — **fewer than one per request: export did not keep up or failed, so the instrumented count is too low**"; else print " (one per request)"}')."
    echo
    echo "Threads of the instrumented runs (callgrind numbers them in the order they started; a thread of one run only, such as a processor's shut-down thread, is counted from 0 in the other):"
    echo
    echo "| thread | kind | Ir, $N1 requests | Ir, $N2 requests | per request |"
    echo "|---|---|---|---|---|"
    for nn in $(printf '%s\n' "${!THREADS[@]}" | sed -n "s/^instrumented-\($N1\|$N2\)-//p" | sort -u); do
        IFS='|' read -r ir1 kind1 <<<"${THREADS[instrumented-$N1-$nn]:-0|}"
        IFS='|' read -r ir2 kind2 <<<"${THREADS[instrumented-$N2-$nn]:-0|}"
        per=$(awk -v a="$ir1" -v b="$ir2" -v n=$((N2 - N1)) 'BEGIN {v = (b - a) / n; printf "%.0f", (v > -0.5 && v < 0.5) ? 0 : v}')
        # A thread whose count does not grow with the requests (start-up, a processor's
        # shut-down thread) is not another worker of its kind.
        idle=$(awk -v a="$ir1" -v b="$ir2" 'BEGIN {if (b < 1.5 * a) print ", idle: start-up or shut-down"}')
        echo "| $nn | ${kind2:-$kind1}$idle | $(thousands "$ir1") | $(thousands "$ir2") | $(thousands "$per") |"
    done
    echo
    echo "The libraries' own share of it, at least: **$(thousands "$INSTR_LIB")** per request."
    echo "$(thousands "$INSTR_LIB_BG") of it on the SDK's batch processors and \`otel-export\`, which turn spans and log records into OTLP protobuf, encode and send them (library code but for two thin exporter wrappers of ours, whose bookkeeping is per batch)."
    echo "$(thousands "$INSTR_LIB_REQ") on the request path, in the calls that tracing-opentelemetry and the OTLP log bridge receive: the span created, entered, left and closed, the SDK span started, the log event; less our span and log processor wrappers and sampler inside them. \`tracing\`'s own dispatch and registry are not counted."
    if [ -n "$TARGET" ] && { [ "$ROUTE" = trivial ] || [ "$WORK_ITERATIONS" -ge 10000 ]; }; then
        BUDGET=$(awk -v b="$BARE" -v t="$TARGET" 'BEGIN {printf "%.0f", b * (1 / t - 1)}')
        echo
        echo "The performance issue's target for GET /$ROUTE, saturated throughput ≥ $TARGET × bare's, leaves telemetry about **$(thousands "$BUDGET")** instructions per request: bare's $(thousands "$BARE") × (1/$TARGET − 1), if throughput went as user-space instructions per request (the kernel's work and the different speeds of instructions are not in it: bench/README.md)."
        if [ "$INSTR_LIB" -gt "$BUDGET" ]; then
            echo "The libraries' share alone is **$(ratio "$INSTR_LIB" "$BUDGET")** times that; all of telemetry, $(ratio $((INSTR - BARE)) "$BUDGET") times."
        else
            echo "The libraries' share is $(ratio "$INSTR_LIB" "$BUDGET") of it, leaving $(thousands $((BUDGET - INSTR_LIB))) for everything else; all of telemetry is $(ratio $((INSTR - BARE)) "$BUDGET") times it."
        fi
    elif [ "$ROUTE" = work ]; then
        echo
        echo "No budget: the issue's target for GET /work is for ~200 µs of work, and $WORK_ITERATIONS iterations are far fewer (set WORK_ITERATIONS from \`overhead-server calibrate --target 200us\`)."
    fi
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
