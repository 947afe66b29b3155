# bench/lib.sh — settings and helpers shared by the bench scripts. Sourced, not run: the
# script sets ROOT (the repository's root) first. Every setting can be overridden from the
# environment.

SERVER_CPU=${SERVER_CPU:-1}         # the server's core
LOAD_CPU=${LOAD_CPU:-0}             # the load tools and the OTLP receiver
# The OTLP receiver's scheduling policy on LOAD_CPU: normal, or idle (SCHED_IDLE: it runs only
# when the load tools leave the core free). See start_collector.
RECEIVER_SCHED=${RECEIVER_SCHED:-normal}
# How much of each export request the receiver reads: count (its spans and log records are
# counted undecoded: the least of LOAD_CPU it can take) or full (decoded as a collector does).
RECEIVER_DECODE=${RECEIVER_DECODE:-count}
APP_PORT=${APP_PORT:-18080}         # overhead-server's app listener
ADMIN_PORT=${ADMIN_PORT:-19080}     # its /healthz and /metrics
GRPC_PORT=${GRPC_PORT:-14317}       # the live OTLP receiver (overhead-collector)
STATS_PORT=${STATS_PORT:-14318}     # the receiver's GET /stats, and its OTLP/HTTP
OTLP_PROTOCOL=${OTLP_PROTOCOL:-grpc} # the servers' export protocol: grpc or http/protobuf
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
# Sent with every request (as the gateway's callers do): the instrumented server continues it.
TRACEPARENT=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
# receiver_note: how the receiver was scheduled, for a report.
receiver_note() {
    local decode
    case "$RECEIVER_DECODE" in
        full) decode="decoding every request in full (\`RECEIVER_DECODE=full\`)" ;;
        *) decode="counting spans and log records without decoding them (\`RECEIVER_DECODE=count\`, the default)" ;;
    esac
    case "$RECEIVER_SCHED" in
        idle) echo "the OTLP receiver on that core under SCHED_IDLE (\`RECEIVER_SCHED=idle\`: it yields the core to the load tools, and starves when they fill it), $decode" ;;
        *) echo "the OTLP receiver on that core at normal priority (\`RECEIVER_SCHED=normal\`, the default), $decode" ;;
    esac
}
# The machine, for a report: vCPUs, CPU model, memory, kernel, rustc.
machine_line() {
    echo "$(nproc --all) vCPU \"$(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}')\", $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), Linux $(uname -r); $(rustc --version 2>/dev/null | cut -d' ' -f1-2)"
}

case "$RECEIVER_SCHED" in
    idle | normal) ;;
    *) die "RECEIVER_SCHED=$RECEIVER_SCHED: idle or normal" ;;
esac
case "$RECEIVER_DECODE" in
    count | full) ;;
    *) die "RECEIVER_DECODE=$RECEIVER_DECODE: count or full" ;;
esac
case "$OTLP_PROTOCOL" in
    grpc | http/protobuf) ;;
    *) die "OTLP_PROTOCOL=$OTLP_PROTOCOL: the receiver speaks grpc and http/protobuf" ;;
esac

# port_free PORT: true when nothing listens on 127.0.0.1:PORT.
# require_free_ports PORT…: stops the script if something already listens on one of them
# (its answers would be measured instead of the server under test).
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
require_free_ports() {
    local p
    for p in "$@"; do
        port_free "$p" ||
            die "port $p is in use (another benchmark running? override with the *_PORT variables)"
    done
}

# wait_http URL [TRIES]: true once URL answers 2xx, polling every 0.1 s (TRIES, default 100).
wait_http() {
    local i
    for i in $(seq "${2:-100}"); do
        curl -sf -o /dev/null "$1" && return 0
        sleep 0.1
    done
    return 1
}

# otlp_endpoint: the live receiver's endpoint for OTLP_PROTOCOL.
otlp_endpoint() {
    case "$OTLP_PROTOCOL" in
        grpc) echo "http://127.0.0.1:$GRPC_PORT" ;;
        *) echo "http://127.0.0.1:$STATS_PORT" ;; # http/protobuf (checked above)
    esac
}

# build_release LOG: the release build every bench script measures, its output in LOG. Always
# the same packages: built alone, `overhead` unifies its dependencies' features differently
# (faultline turns on `tracing/log`, among others), the compiler inlines differently, and the
# overhead-server binary is not the one the other scripts measured.
build_release() {
    log "cargo build --release --locked -p overhead -p faultline"
    cargo build --release --locked -p overhead -p faultline >"$1" 2>&1 || die "release build failed; see $1"
}

# extra_env_note: a sentence for a report naming SERVER_EXTRA_ENV, or nothing when it is unset.
extra_env_note() {
    [ -z "${SERVER_EXTRA_ENV:-}" ] || echo " Every overhead-server also ran with \`$SERVER_EXTRA_ENV\` (\`SERVER_EXTRA_ENV\`)."
}

# server_env [OTLP_ENDPOINT]: sets SERVER_ENV, the whole environment of an overhead-server,
# configured the way `faultline serve` reads it (for `env -i "${SERVER_ENV[@]}" …`). OTLP goes
# to the live receiver over OTLP_PROTOCOL unless another endpoint is given.
server_env() {
    SERVER_ENV=(
        PATH="$PATH" HOME="${HOME:-/root}" RUST_LOG=info LOG_FORMAT=json
        OTEL_SERVICE_NAME=overhead-server OTEL_TRACES_SAMPLER=parentbased_always_on
        OTEL_EXPORTER_OTLP_PROTOCOL="$OTLP_PROTOCOL"
        OTEL_EXPORTER_OTLP_ENDPOINT="${1:-$(otlp_endpoint)}"
    )
    # SERVER_EXTRA_ENV: more settings for every overhead-server of a run, bare and instrumented
    # alike (not the services of overhead.sh's `faultline up` phase),
    # e.g. SERVER_EXTRA_ENV="LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2".
    local extra
    read -ra extra <<<"${SERVER_EXTRA_ENV:-}"
    SERVER_ENV+=("${extra[@]}")
}

# collector_spans: how many spans the live receiver (start_collector) has counted so far.
collector_spans() { curl -sf "http://127.0.0.1:$STATS_PORT/stats" | jq -r .spans; }

# dropped_spans: how many spans the overhead-server on ADMIN_PORT has dropped so far because its
# export queue was full (its own counter, incremented when a span ends; 0 when it has none).
dropped_spans() {
    { curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics" || true; } |
        awk '/^otel_sdk_processor_span_processed_total\{.*error_type="queue_full"/ {n += $NF} END {printf "%d", n}'
}

# start_collector OUT_FILE [ERR_FILE]: starts the live OTLP receiver on LOAD_CPU, adds it to the
# script's PIDS, sets COLLECTOR_PID and waits until it answers.
#
# The receiver stands in for a collector on another machine, but here it shares a core with the
# load tools, and neither policy is neutral (bench/README.md, BENCHMARKS.md):
# - normal (the default): while it reads a batch, the open-loop client can be kept from
#   sending on time, and that wait counts as the instrumented server's latency (up to ~1 ms
#   of its p99 at half load of /work on a quiet machine, measured side by side); bare exports
#   nothing, so this errs against the instrumented server only;
# - idle (SCHED_IDLE, sched(7), no privilege needed): the client is rarely kept waiting, but
#   when the load tools fill the core (/trivial at half of bare's rate) the receiver starves,
#   the server's export queue fills and it drops spans, doing less work than it should: that
#   errs in the instrumented server's favour, so it is for measuring the receiver's share only.
# Either way it reads each request as RECEIVER_DECODE says: count (the default) takes about a
# third of the CPU per span or log record that full decoding does (bench/README.md).
start_collector() {
    local sched=()
    if [ "$RECEIVER_SCHED" = idle ]; then
        command -v chrt >/dev/null || die "chrt is missing (util-linux), needed for RECEIVER_SCHED=idle"
        sched=(chrt --idle 0)
    fi
    "${sched[@]}" taskset -c "$LOAD_CPU" "$BIN/overhead-collector" --grpc "127.0.0.1:$GRPC_PORT" \
        --stats "127.0.0.1:$STATS_PORT" --decode "$RECEIVER_DECODE" >"$1" 2>"${2:-$1}" &
    COLLECTOR_PID=$!
    PIDS+=("$COLLECTOR_PID")
    wait_http "http://127.0.0.1:$STATS_PORT/stats" || die "the OTLP receiver did not start: $(tail -3 "${2:-$1}")"
}
