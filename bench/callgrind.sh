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
# from those on the service's own threads (the request path). It also reports the libraries'
# own share (a lower bound: the SDK's export threads, and the calls into tracing-opentelemetry
# and the OTLP log bridge) and, on /trivial and /work, the budget the throughput target leaves.
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
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
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
    # busiest functions are the export runtime's, an SDK batch processor's, the log flush's or
    # the Prometheus recorder's upkeep.
    # Of those, the export runtime and the batch processors run library code only (the SDK's
    # conversion to OTLP, prost, tonic); the log flush is ours. On the other threads, the
    # libraries' own share is what their entry points cost (library_calls).
    local all=0 export=0 lib_bg=0 lib_req=0 part ir top calls kind
    for part in "$file"-*; do
        ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$part")
        all=$((all + ir))
        top=$(callgrind_annotate --inclusive=yes "$part" 2>/dev/null | grep -E "^ *[0-9,]+ \(" | sed -n 2,16p || true)
        # The export runtime: a current-thread tokio runtime busy with the OTLP client (tonic's
        # HTTP/2 connection task; for OTLP/HTTP, reqwest's blocking client thread).
        if grep -qE "BatchSpanProcessor|batch_log_processor" <<<"$top" ||
            { grep -q "current_thread::CoreGuard::block_on" <<<"$top" &&
                grep -qE "h2::client::ClientTask|tonic::|reqwest::" <<<"$top"; }; then
            export=$((export + ir)) lib_bg=$((lib_bg + ir)) kind="export (library code)"
        elif grep -qE "log_writer::" <<<"$top"; then
            export=$((export + ir)) kind="log flush"
        elif grep -qE "metrics_exporter_prometheus|run_upkeep" <<<"$top"; then
            export=$((export + ir)) kind="metrics upkeep"
        else
            calls=$(library_calls "$part") || die "cannot tell the libraries' share in $part (see above)"
            lib_req=$((lib_req + calls)) kind="service"
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
            } else if (name ~ /BoundedSpanProcessor<P> as opentelemetry_sdk::trace::span_processor::SpanProcessor>::on_(start|end)$/ ||
                       name ~ /EventTime<P> as opentelemetry_sdk::logs::log_processor::LogProcessor>::(emit|event_enabled)$/ ||
                       name ~ /KeepRandomFlag as opentelemetry_sdk::trace::sampler::ShouldSample>::should_sample$/) {
                ours += v
                if (name ~ /::on_end$/) have_end = 1
                if (name ~ /::emit$/) have_emit = 1
            } else if (name ~ /OpenTelemetrySpanExt>::[a-z_]+(::\{\{closure\}\})*$/) {
                # A method inlined into its caller shows as its closures: count the outermost.
                m = name; sub(/.*OpenTelemetrySpanExt>::/, "", m)
                method = m; sub(/::.*/, "", method)
                depth = gsub(/\{\{closure\}\}/, "", m)
                if (!(method in best) || depth < bestdepth[method]) { best[method] = v; bestdepth[method] = depth }
            }
        }
        END {
            # A wrapper of ours not found by name would be counted as library code; a count
            # above the thread total means a counted function nested in itself. Either would
            # raise the bound, so stop instead.
            if ((need_end && !have_end) || (need_emit && !have_emit) || inflated != "") {
                print "library_calls: a wrapper of ours was not found by name, or a count exceeds the thread total:" inflated > "/dev/stderr"
                exit 1
            }
            for (k in best) lib += best[k]
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
{
    echo "### Instructions per request (callgrind)"
    echo
    echo "\`bench/callgrind.sh\` ($(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates/telemetry crates/overhead bench/callgrind.sh bench/lib.sh || echo ', with uncommitted changes to telemetry, overhead or the bench scripts')):"
    echo "GET /$ROUTE${SERVER_ARGS:+ (server: $SERVER_ARGS)} at $RATE requests/s, export over OTLP \`$OTLP_PROTOCOL\`, whole server process, (Ir($N2 requests) − Ir($N1 requests)) / $((N2 - N1))."
    echo "Machine: $(machine_line).$(extra_env_note)"
    echo
    echo "| mode | Ir, $N1 requests | Ir, $N2 requests | per request |"
    echo "|---|---|---|---|"
    echo "| bare | ${IR[bare-$N1]} | ${IR[bare-$N2]} | $BARE |"
    echo "| instrumented | ${IR[instrumented-$N1]} | ${IR[instrumented-$N2]} | $INSTR |"
    echo
    echo "Instrumented ÷ bare: $(awk -v a="$INSTR" -v b="$BARE" 'BEGIN {printf "%.2f", a / b}'); telemetry adds $((INSTR - BARE)) instructions per request:"
    echo "$((INSTR - INSTR_EXPORT - BARE)) on the service's own threads (the request path: $((INSTR - INSTR_EXPORT)) against bare's $BARE)"
    echo "and $INSTR_EXPORT on telemetry's background threads (\`otel-export\`, the SDK's batch processors, \`log-flush\` and the Prometheus recorder's upkeep, off the service's runtime)."
    echo
    echo "Spans the OTLP receiver got from the two instrumented runs: $SPANS for $((N1 + N2)) requests$(awk -v s="$SPANS" -v n=$((N1 + N2)) 'BEGIN {if (s < 0.99 * n) print " — **fewer than one per request: export did not keep up or failed, so the instrumented count is too low**"; else print " (one per request)"}')."
    echo
    echo "Threads of the instrumented runs (callgrind numbers them in the order they started):"
    echo
    echo "| thread | kind | Ir, $N1 requests | Ir, $N2 requests | per request |"
    echo "|---|---|---|---|---|"
    for key in $(printf '%s\n' "${!THREADS[@]}" | grep "^instrumented-$N2-" | sort); do
        nn=${key##*-}
        IFS='|' read -r ir2 kind <<<"${THREADS[$key]}"
        IFS='|' read -r ir1 _ <<<"${THREADS[instrumented-$N1-$nn]:-0|}"
        echo "| $nn | $kind | $ir1 | $ir2 | $(awk -v a="$ir1" -v b="$ir2" -v n=$((N2 - N1)) 'BEGIN {printf "%.0f", (b - a) / n}') |"
    done
    echo
    echo "The libraries' own share of it, at least: **$INSTR_LIB** per request. $INSTR_LIB_BG on the SDK's batch processors and the export runtime (turning spans and log records into OTLP protobuf, encoding and sending them; library code but for two thin exporter wrappers of ours, whose bookkeeping is per batch) and $INSTR_LIB_REQ on the request path, in the calls that tracing-opentelemetry and the OTLP log bridge receive (creating, entering, leaving and closing the span, starting the SDK span, the log event; less our span and log processor wrappers and sampler inside them; \`tracing\`'s own dispatch and registry not counted)."
    if [ -n "$TARGET" ]; then
        BUDGET=$(awk -v b="$BARE" -v t="$TARGET" 'BEGIN {printf "%.0f", b * (1 / t - 1)}')
        echo
        echo -n "Saturated throughput ≥ $TARGET × bare's on GET /$ROUTE (the performance issue's target) allows telemetry at most **$BUDGET** instructions per request (bare's $BARE × (1/$TARGET − 1), if throughput went as user-space instructions per request; the kernel's work and the instructions' different speeds are not in it, see bench/README.md): "
        if [ "$INSTR_LIB" -gt "$BUDGET" ]; then
            echo "the libraries' share alone is $(awk -v l="$INSTR_LIB" -v b="$BUDGET" 'BEGIN {printf "%.1f", l / b}') times that."
        else
            echo "the libraries' share leaves $((BUDGET - INSTR_LIB)) for everything else; telemetry used $((INSTR - BARE))."
        fi
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
