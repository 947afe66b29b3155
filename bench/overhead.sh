#!/usr/bin/env bash
# bench/overhead.sh — what observability costs, bare vs instrumented, in one run.
#
# Builds in release mode, then on this machine (2 cores: the server pinned to one, the load
# tools and the OTLP receiver to the other; the receiver counts what it gets without decoding
# it unless RECEIVER_DECODE=full, and RECEIVER_SCHED=idle runs it under SCHED_IDLE, see
# bench/lib.sh):
#   1. saturated requests/s (wrk, closed loop), bare and instrumented alternated ROUNDS times,
#      on GET /trivial and GET /work (~200 µs of calibrated CPU work);
#   2. latency p50/p99 at 50 % of bare's saturated rate, open loop (overhead-load: constant
#      arrival rate, latency from the intended send time), CPU seconds per 10,000 requests,
#      peak RSS;
#   3. a collector outage: instrumented at 50 % load for OUTAGE_DURATION with nothing listening
#      on the OTLP endpoint, against the same run with the receiver up — RSS every 10 s,
#      throughput, export-error log lines;
#   4. each service's RSS under `faultline up`'s default load (5 requests/s).
# and writes bench/results/<UTC stamp>.md (figures, commands, machine; ready for BENCHMARKS.md)
# with the raw measurements in bench/results/<UTC stamp>/.
#
# Usage: bench/overhead.sh [--quick] [--rounds N] [--skip-up] [--skip-outage] [--no-build]
#   --quick   short durations, one round: checks the harness, figures are not meaningful.
# Environment (defaults in brackets): ROUNDS [3], WARMUP [5] s, SAT_DURATION [20] s,
# LAT_DURATION [30] s, OUTAGE_DURATION [120] s, TELEMETRY_EXPORT_NICE [0], RECEIVER_SCHED [normal],
# RECEIVER_DECODE [count],
# SERVER_EXTRA_ENV [none: more VAR=value settings for every overhead-server, e.g. LD_PRELOAD=…];
# ports and the rest in the "Settings" block of this file and in bench/lib.sh (e.g.
# SAT_DURATION=30 bench/overhead.sh). See bench/README.md.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

# ---------------------------------------------------------------- settings
QUICK=0 SKIP_UP=0 SKIP_OUTAGE=0 BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --rounds)
            [ $# -ge 2 ] || { echo "--rounds needs a number (see --help)" >&2; exit 2; }
            ROUNDS=$2; shift ;;
        --skip-up) SKIP_UP=1 ;;
        --skip-outage) SKIP_OUTAGE=1 ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,28p' "$0" | grep -v '^set '; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    : "${ROUNDS:=1}" "${WARMUP:=1}" "${SAT_DURATION:=3}" "${LAT_DURATION:=3}"
    : "${OUTAGE_DURATION:=20}" "${UP_DURATION:=15}"
fi
ROUNDS=${ROUNDS:-3}                 # A/B repetitions (medians are reported)
TELEMETRY_EXPORT_NICE=${TELEMETRY_EXPORT_NICE:-0}  # the export threads' priority (telemetry's default)
WARMUP=${WARMUP:-5}                 # s, before every measurement, not recorded
SAT_DURATION=${SAT_DURATION:-20}    # s, each saturated wrk run
LAT_DURATION=${LAT_DURATION:-30}    # s, each open-loop run at 50 % load
OUTAGE_DURATION=${OUTAGE_DURATION:-120}  # s, collector-up and collector-down runs
UP_DURATION=${UP_DURATION:-60}      # s, faultline up under its default load
LOAD_FRACTION=${LOAD_FRACTION:-0.5} # of bare's median saturated rate
WORK_TARGET_US=${WORK_TARGET_US:-200}
WRK_THREADS=${WRK_THREADS:-1}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-64}
LOAD_CONNECTIONS=${LOAD_CONNECTIONS:-32}
DEAD_PORT=${DEAD_PORT:-14399}       # nothing listens here (collector outage)
# Cores, ports, BIN, TRACEPARENT, log, die, wait_http, server_env.
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
for v in ROUNDS WARMUP SAT_DURATION LAT_DURATION OUTAGE_DURATION UP_DURATION WORK_TARGET_US; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v=${!v}: a whole number of at least 1 is needed"
done

STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
RESULTS=$ROOT/bench/results
RAW=$RESULTS/$STAMP
REPORT=$RESULTS/$STAMP.md
DATA=$RAW/data.tsv
mkdir -p "$RAW"
: >"$DATA"

# ---------------------------------------------------------------- prerequisites
need() { command -v "$1" >/dev/null 2>&1; }
install_debian() {
    local as=""
    [ "$(id -u)" = 0 ] || as="sudo"
    log "installing $* (apt-get)"
    $as apt-get install -y "$@" >/dev/null 2>&1 ||
        { $as apt-get update >/dev/null 2>&1 && $as apt-get install -y "$@" >/dev/null; }
}
for tool in wrk jq curl taskset; do
    if ! need "$tool"; then
        case "$tool" in taskset) pkg=util-linux ;; *) pkg=$tool ;; esac
        install_debian "$pkg" || die "$tool is missing and could not be installed (apt-get install $pkg)"
    fi
done
[ "$(nproc --all)" -ge 2 ] || die "needs 2 cores (one for the server, one for the load)"
[ "$(nproc --all)" -eq 2 ] || log "note: $(nproc --all) cores; only cores $SERVER_CPU and $LOAD_CPU are used"

require_free_ports "$APP_PORT" "$ADMIN_PORT" "$GRPC_PORT" "$STATS_PORT" "$DEAD_PORT"

# ---------------------------------------------------------------- processes
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget() { local keep=() p; for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done; PIDS=("${keep[@]}"); }
stop() { # pid: SIGTERM, wait (15 s), then SIGKILL
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget "$pid"
}

CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; } # utime + stime
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
secs() { awk -v t="$1" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", t / hz}'; }

# route_drops (from the server's own queue_full counter, `dropped_spans` in lib.sh: exact per
# route, unlike what reaches the receiver) PHASE MODE ROUTE ROUND REQUESTS DROPPED_BEFORE: records spans dropped per request
route_drops() {
    [ "$2" = instrumented ] || return 0
    record "$1" "$2" "$3" "$4" spans_dropped_per_request "$(ratio "$(($(dropped_spans) - $6))" "$5")"
}

# start_server MODE TAG [OTLP_ENDPOINT] -> SERVER_PID, SERVER_LOG
start_server() {
    local mode=$1 tag=$2 endpoint=${3:-$(otlp_endpoint)}
    SERVER_LOG=$RAW/$tag.log
    server_env "$endpoint"
    env -i "${SERVER_ENV[@]}" TELEMETRY_EXPORT_NICE="$TELEMETRY_EXPORT_NICE" \
        taskset -c "$SERVER_CPU" "$BIN/overhead-server" serve --mode "$mode" \
        --listen "127.0.0.1:$APP_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
        --work-iterations "$WORK_ITERATIONS" >"$SERVER_LOG" 2>"$RAW/$tag.stderr" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_http "http://127.0.0.1:$ADMIN_PORT/healthz" || die "the $mode server did not start: $(cat "$RAW/$tag.stderr")"
}

record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$DATA"; } # phase mode route round metric value

# wrk_run SECONDS ROUTE OUTFILE
wrk_run() {
    taskset -c "$LOAD_CPU" wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"$1s" --latency \
        -H "traceparent: $TRACEPARENT" "http://127.0.0.1:$APP_PORT/$2" >"$3" 2>&1
}
wrk_rps() { awk '/^Requests\/sec:/ {print $2}' "$1"; }
wrk_requests() { awk '/requests in/ {print $1}' "$1"; }
wrk_errors() { awk '/Non-2xx|Socket errors/ {n++} END {print n + 0}' "$1"; }

# load_run RATE SECONDS WARMUP ROUTE OUTFILE
load_run() {
    taskset -c "$LOAD_CPU" "$BIN/overhead-load" --url "http://127.0.0.1:$APP_PORT/$4" \
        --rate "$1" --duration "$2s" --warmup "$3s" --connections "$LOAD_CONNECTIONS" >"$5"
}

median() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
values() { awk -F'\t' -v p="$1" -v m="$2" -v r="$3" -v k="$4" '$1 == p && $2 == m && $3 == r && $5 == k {print $6}' "$DATA"; }
med() { values "$@" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b == 0 || a == "nan" || b == "nan") print "nan"; else printf "%.3f", a / b}'; }
fmt() { awk -v v="$1" -v d="${2:-0}" 'BEGIN {if (v == "nan") print "n/a"; else printf "%.*f", d, v}'; }
pct() { awk -v g="$1" 'BEGIN {printf "%+.1f %%", g * 100}'; } # a fraction as a signed percentage
verdict() { # value op target ("n/a" under --quick: its durations measure nothing)
    awk -v v="$1" -v op="$2" -v t="$3" -v quick="$QUICK" 'BEGIN {
        if (quick == 1) {print "n/a (--quick)"; exit}
        if (v == "nan") {print "n/a"; exit}
        ok = (op == ">=") ? (v >= t) : (v <= t)
        print ok ? "**met**" : "**missed**" }'
}

# ---------------------------------------------------------------- build
[ "$BUILD" = 0 ] || build_release "$RAW/build.log"
for b in overhead-server overhead-load overhead-collector; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing (run without --no-build)"
done

START_EPOCH=$(date +%s)
# "steal total" in clock ticks, all cores: a VM's steal time is what its hypervisor gave to
# others while this VM wanted the cores (proc(5), /proc/stat).
cpu_steal() { awk '$1 == "cpu" {print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
read -r STEAL0 TOTAL0 <<<"$(cpu_steal)"
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- crates/telemetry crates/overhead 2>/dev/null || COMMIT="$COMMIT (telemetry/overhead modified)"

# ---------------------------------------------------------------- calibration
WORK_ITERATIONS=$(taskset -c "$SERVER_CPU" "$BIN/overhead-server" calibrate --target "${WORK_TARGET_US}us")
log "GET /work = $WORK_ITERATIONS iterations (~${WORK_TARGET_US} µs on core $SERVER_CPU)"

# ---------------------------------------------------------------- live OTLP receiver
start_collector "$RAW/collector.out" "$RAW/collector.err"

order_of_round() { if [ $(($1 % 2)) = 1 ]; then echo "bare instrumented"; else echo "instrumented bare"; fi; }
ROUTES="trivial work"

# finish_server PHASE MODE ROUND REQUESTS SPANS_BEFORE: peak RSS, log lines, spans, then stop
finish_server() {
    local phase=$1 mode=$2 round=$3 requests=$4 spans_before=$5
    record "$phase" "$mode" all "$round" peak_rss_kb "$(status_kb "$SERVER_PID" VmHWM)"
    stop "$SERVER_PID"
    sleep 1.5 # the last batch reaches the receiver
    if [ "$mode" = instrumented ]; then
        local spans lines
        spans=$(($(collector_spans) - spans_before))
        lines=$(grep -c '"request served"' "$SERVER_LOG" || true)
        record "$phase" "$mode" all "$round" spans_per_request "$(ratio "$spans" "$requests")"
        record "$phase" "$mode" all "$round" log_lines_per_request "$(ratio "$lines" "$requests")"
    fi
    rm -f "$SERVER_LOG" # can be hundreds of MB
}

# ---------------------------------------------------------------- 1. saturated throughput
for round in $(seq "$ROUNDS"); do
    for mode in $(order_of_round "$round"); do
        log "saturated: round $round/$ROUNDS, $mode"
        spans_before=$(collector_spans)
        start_server "$mode" "sat-$mode-$round"
        total=0
        for route in $ROUTES; do
            d0=0; [ "$mode" = bare ] || d0=$(dropped_spans)
            wrk_run "$WARMUP" "$route" "$RAW/sat-$mode-$route-$round.warmup.txt"
            t0=$(cpu_ticks "$SERVER_PID"); w0=$(date +%s.%N)
            wrk_run "$SAT_DURATION" "$route" "$RAW/sat-$mode-$route-$round.txt"
            t1=$(cpu_ticks "$SERVER_PID"); w1=$(date +%s.%N)
            f=$RAW/sat-$mode-$route-$round.txt
            n=$(wrk_requests "$f")
            n_all=$((n + $(wrk_requests "$RAW/sat-$mode-$route-$round.warmup.txt")))
            total=$((total + n_all))
            route_drops sat "$mode" "$route" "$round" "$n_all" "$d0"
            record sat "$mode" "$route" "$round" rps "$(wrk_rps "$f")"
            record sat "$mode" "$route" "$round" server_cpu_busy "$(awk -v c=$((t1 - t0)) -v hz="$CLK_TCK" -v a="$w0" -v b="$w1" 'BEGIN {printf "%.3f", c / hz / (b - a)}')"
            record sat "$mode" "$route" "$round" cpu_s_per_10k "$(awk -v c=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$n" 'BEGIN {printf "%.4f", c / hz / n * 10000}')"
            record sat "$mode" "$route" "$round" wrk_errors "$(wrk_errors "$f")"
        done
        finish_server sat "$mode" "$round" "$total" "$spans_before"
    done
done

declare -A RATE
for route in $ROUTES; do
    bare=$(med sat bare "$route" rps)
    RATE[$route]=$(awk -v r="$bare" -v f="$LOAD_FRACTION" 'BEGIN {printf "%d", r * f}')
    log "50 % load on /$route: ${RATE[$route]} requests/s (bare saturated median $bare)"
done
# The outage runs load the instrumented server at half of *its own* capacity: half of bare's
# may be more than it can serve at all on a trivial route.
OUTAGE_RATE=$(awk -v r="$(med sat instrumented trivial rps)" -v f="$LOAD_FRACTION" 'BEGIN {printf "%d", r * f}')

# ---------------------------------------------------------------- 2. latency at 50 % load
for round in $(seq "$ROUNDS"); do
    for mode in $(order_of_round "$round"); do
        log "latency: round $round/$ROUNDS, $mode"
        spans_before=$(collector_spans)
        start_server "$mode" "lat-$mode-$round"
        total=0
        for route in $ROUTES; do
            rate=${RATE[$route]}
            d0=0; [ "$mode" = bare ] || d0=$(dropped_spans)
            load_run "$rate" "$WARMUP" 0 "$route" "$RAW/lat-$mode-$route-$round.warmup.json"
            t0=$(cpu_ticks "$SERVER_PID") w0=$(date +%s.%N)
            load_run "$rate" "$LAT_DURATION" 0 "$route" "$RAW/lat-$mode-$route-$round.json"
            t1=$(cpu_ticks "$SERVER_PID") w1=$(date +%s.%N)
            # Over the run's real length: an overloaded server is still draining its backlog
            # after the nominal duration.
            record lat "$mode" "$route" "$round" server_cpu_busy "$(awk -v c=$((t1 - t0)) -v hz="$CLK_TCK" -v a="$w0" -v b="$w1" 'BEGIN {printf "%.3f", c / hz / (b - a)}')"
            f=$RAW/lat-$mode-$route-$round.json
            n=$(jq -r '.ok + .non_2xx' "$f")
            n_all=$((n + $(jq -r '.ok + .non_2xx' "$RAW/lat-$mode-$route-$round.warmup.json")))
            total=$((total + n_all))
            route_drops lat "$mode" "$route" "$round" "$n_all" "$d0"
            for k in p50_us p90_us p99_us p999_us achieved_rps release_lag_p99_us release_lag_max_us; do
                record lat "$mode" "$route" "$round" "$k" "$(jq -r ".$k" "$f")"
            done
            record lat "$mode" "$route" "$round" failed "$(jq -r '.errors + .non_2xx + .unfinished' "$f")"
            record lat "$mode" "$route" "$round" client_cpu_s_per_10k "$(jq -r 'if (.ok + .non_2xx) > 0 then .client_cpu_s / (.ok + .non_2xx) * 10000 else 0 end' "$f")"
            record lat "$mode" "$route" "$round" cpu_s_per_10k "$(awk -v c=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$n" 'BEGIN {printf "%.4f", c / hz / n * 10000}')"
        done
        finish_server lat "$mode" "$round" "$total" "$spans_before"
    done
done

# ---------------------------------------------------------------- 3. collector outage
OUTAGE_ROUTE=trivial
# outage_run TAG ENDPOINT
outage_run() {
    local tag=$1 endpoint=$2 rate=$OUTAGE_RATE
    log "outage: $tag, $OUTAGE_DURATION s at $rate requests/s on /$OUTAGE_ROUTE, OTLP to $endpoint"
    start_server instrumented "$tag" "$endpoint"
    load_run "$rate" "$WARMUP" 0 "$OUTAGE_ROUTE" "$RAW/$tag.warmup.json"
    local t0 t1 start now
    t0=$(cpu_ticks "$SERVER_PID")
    load_run "$rate" "$OUTAGE_DURATION" 0 "$OUTAGE_ROUTE" "$RAW/$tag.json" &
    local load_pid=$!
    start=$(date +%s.%N)
    : >"$RAW/$tag.rss.tsv"
    while kill -0 "$load_pid" 2>/dev/null; do
        now=$(date +%s.%N)
        printf '%.0f\t%s\n' "$(awk -v a="$start" -v b="$now" 'BEGIN {print b - a}')" \
            "$(status_kb "$SERVER_PID" VmRSS)" >>"$RAW/$tag.rss.tsv"
        for _ in $(seq 100); do kill -0 "$load_pid" 2>/dev/null || break; sleep 0.1; done
    done
    wait "$load_pid"
    printf '%.0f\t%s\n' "$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')" \
        "$(status_kb "$SERVER_PID" VmRSS)" >>"$RAW/$tag.rss.tsv"
    t1=$(cpu_ticks "$SERVER_PID")
    local n
    n=$(jq -r '.ok + .non_2xx' "$RAW/$tag.json")
    record "$tag" instrumented "$OUTAGE_ROUTE" 1 cpu_s_per_10k "$(awk -v c=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$n" 'BEGIN {printf "%.4f", c / hz / n * 10000}')"
    for k in achieved_rps p50_us p99_us; do
        record "$tag" instrumented "$OUTAGE_ROUTE" 1 "$k" "$(jq -r ".$k" "$RAW/$tag.json")"
    done
    record "$tag" instrumented "$OUTAGE_ROUTE" 1 failed "$(jq -r '.errors + .non_2xx + .unfinished' "$RAW/$tag.json")"
    # then saturated, as in phase 1
    wrk_run "$WARMUP" "$OUTAGE_ROUTE" "$RAW/$tag.sat.warmup.txt"
    wrk_run "$SAT_DURATION" "$OUTAGE_ROUTE" "$RAW/$tag.sat.txt"
    record "$tag" instrumented "$OUTAGE_ROUTE" 1 sat_rps "$(wrk_rps "$RAW/$tag.sat.txt")"
    curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics" | grep '^otel_sdk' >"$RAW/$tag.otel-metrics.txt" || true
    record "$tag" instrumented all 1 peak_rss_kb "$(status_kb "$SERVER_PID" VmHWM)"
    stop "$SERVER_PID"
    # Keep only what is not a per-request line (export errors, start/stop, anything else).
    grep -v '"request served"' "$SERVER_LOG" >"$RAW/$tag.other-log-lines.jsonl" || true
    rm -f "$SERVER_LOG"
}
if [ "$SKIP_OUTAGE" = 0 ]; then
    port_free "$DEAD_PORT" || die "port $DEAD_PORT must have nothing listening"
    outage_run outage-up "$(otlp_endpoint)"
    outage_run outage-down "http://127.0.0.1:$DEAD_PORT"
fi

stop "$COLLECTOR_PID"

# ---------------------------------------------------------------- 4. faultline up
UP_ROWS="" UP_HOW=""
rss_row() { # name pid
    local rss hwm
    rss=$(awk -v k="$(status_kb "$2" VmRSS)" 'BEGIN {print k / 1024}')
    hwm=$(awk -v k="$(status_kb "$2" VmHWM)" 'BEGIN {print k / 1024}')
    UP_ROWS+="| $1 | $(fmt "$rss" 1) MB | $(fmt "$hwm" 1) MB | $(verdict "$rss" "<=" 40) |"$'\n'
}
if [ "$SKIP_UP" = 0 ]; then
    if ! [ -x "$BIN/faultline" ]; then
        log "skipping faultline up: $BIN/faultline is missing"
    elif port_free 8080 && port_free 8081 && port_free 8082 && port_free 9080 && port_free 9081 && port_free 9082; then
        log "faultline up for $UP_DURATION s (default load, 5 requests/s)"
        UP_HOW="\`${BIN#"$ROOT"/}/faultline up\` (its default load: 5 requests/s, the default mix)"
        "$BIN/faultline" up --dir "$RAW/faultline-up" </dev/null >"$RAW/faultline-up.out" 2>&1 &
        UP_PID=$!
        PIDS+=("$UP_PID")
        sleep "$UP_DURATION"
        for child in $(pgrep -P "$UP_PID" || true); do
            name=$(tr '\0' ' ' <"/proc/$child/cmdline" | awk '{for (i = 1; i < NF; i++) if ($i == "serve") print $(i + 1)}')
            [ -n "$name" ] && rss_row "$name" "$child"
        done
        stop "$UP_PID"
    else
        # Another `faultline up` holds the contract ports: run what `up` runs — the three
        # `faultline serve` processes on SQLite files and `faultline load` at 5 requests/s — on
        # other ports.
        base=${UP_BASE_PORT:-28080}
        log "ports 8080-8082/9080-9082 are in use: the three services on $base-$((base + 2)) and \`faultline load --rps 5\` for $UP_DURATION s"
        UP_HOW="The three \`faultline serve\` processes as \`faultline up\` starts them (SQLite files, embedded queue) on ports $base-$((base + 2)), because another \`faultline up\` held 8080-8082, and \`faultline load --rps 5\` (the load \`up\` drives)"
        d=$RAW/faultline-serve
        mkdir -p "$d"
        declare -A SVC_PID
        for svc in orders fulfillment gateway; do
            case $svc in orders) n=1 ;; fulfillment) n=2 ;; gateway) n=0 ;; esac
            env DATABASE_URL="sqlite://$d/$svc.db" QUEUE_URL="sqlite://$d/queue.db" \
                LISTEN_ADDR="127.0.0.1:$((base + n))" ADMIN_LISTEN_ADDR="127.0.0.1:$((base + 1000 + n))" \
                ORDERS_URL="http://127.0.0.1:$((base + 1))" FULFILLMENT_URL="http://127.0.0.1:$((base + 2))" \
                "$BIN/faultline" serve "$svc" </dev/null >"$d/$svc.log" 2>&1 &
            SVC_PID[$svc]=$!
            PIDS+=("${SVC_PID[$svc]}")
            wait_http "http://127.0.0.1:$((base + 1000 + n))/healthz" || die "faultline serve $svc did not start: $(tail -3 "$d/$svc.log")"
        done
        "$BIN/faultline" load --target "http://127.0.0.1:$base" --rps 5 --duration "${UP_DURATION}s" \
            >"$d/load.out" 2>&1 || log "faultline load: $(tail -2 "$d/load.out")"
        for svc in gateway orders fulfillment; do
            rss_row "$svc" "${SVC_PID[$svc]}"
        done
        for svc in gateway fulfillment orders; do stop "${SVC_PID[$svc]}"; done
    fi
fi

# ---------------------------------------------------------------- report
END_EPOCH=$(date +%s)
read -r STEAL1 TOTAL1 <<<"$(cpu_steal)"
STEAL_PCT=$(awk -v s=$((STEAL1 - STEAL0)) -v t=$((TOTAL1 - TOTAL0)) 'BEGIN {printf "%.1f", (t > 0 ? s / t * 100 : 0)}')
log "writing $REPORT"
mb() { awk -v k="$1" 'BEGIN {if (k == "nan") print "nan"; else printf "%.1f", k / 1024}'; }
{
    echo "## Instrumented vs bare (bench/overhead.sh)"
    echo
    if [ "$QUICK" = 1 ]; then
        echo "**QUICK RUN (\`--quick\`): it checks the harness; its short durations measure nothing,"
        echo "so no target is judged (n/a). Run without \`--quick\` for figures.**"
        echo
    fi
    echo "- Date: $(date -u -d "@$START_EPOCH" '+%Y-%m-%d %H:%M UTC') ($(( (END_EPOCH - START_EPOCH) / 60 )) min $(( (END_EPOCH - START_EPOCH) % 60 )) s). Commit: $COMMIT."
    echo "- Machine: $(machine_line)."
    echo "- CPU steal time during the run: $STEAL_PCT % of the cores' time (\`/proc/stat\`: time the VM's hypervisor gave"
    echo "  to others while this VM wanted it: the more, the less the latency figures can be trusted)."
    echo "- Command: \`bench/overhead.sh$( [ "$QUICK" = 1 ] && echo " --quick")$( [ "$SKIP_UP" = 1 ] && echo " --skip-up")$( [ "$SKIP_OUTAGE" = 1 ] && echo " --skip-outage")$( [ "$BUILD" = 0 ] && echo " --no-build")\`$( [ "$BUILD" = 0 ] && echo " (binaries as found in $BIN, not rebuilt: the commit above is the checkout's, not necessarily theirs)") (ROUNDS=$ROUNDS WARMUP=$WARMUP SAT_DURATION=$SAT_DURATION LAT_DURATION=$LAT_DURATION OUTAGE_DURATION=$OUTAGE_DURATION RECEIVER_SCHED=$RECEIVER_SCHED RECEIVER_DECODE=$RECEIVER_DECODE TELEMETRY_EXPORT_NICE=$TELEMETRY_EXPORT_NICE OTLP_PROTOCOL=$OTLP_PROTOCOL; durations in seconds)."
    echo "- Server \`overhead-server\` pinned to core $SERVER_CPU (tokio multi-thread runtime, hence one worker);"
    echo "  \`wrk -t$WRK_THREADS -c$WRK_CONNECTIONS\`, \`overhead-load\` ($LOAD_CONNECTIONS connections) pinned to core $LOAD_CPU,"
    echo "  with $(receiver_note)."
    echo "  Every request carries a \`traceparent\`. GET /work = $WORK_ITERATIONS iterations of \`overhead::burn\` (~$WORK_TARGET_US µs, calibrated on core $SERVER_CPU)."
    [ -z "${SERVER_EXTRA_ENV:-}" ] || echo "-$(extra_env_note) Bare and instrumented alike; not the \`faultline up\` phase."
    echo "- **bare**: the same router and handlers, no subscriber, no layer, no recorder."
    echo "  **instrumented**: \`telemetry::init\` (JSON logs at \`info\` to a file, one line per request;"
    echo "  \`parentbased_always_on\`; batch OTLP export (\`OTEL_EXPORTER_OTLP_PROTOCOL=$OTLP_PROTOCOL\`) of spans and logs to a live receiver that"
    echo "  counts them (\`RECEIVER_DECODE=$RECEIVER_DECODE\`), on export threads at \`TELEMETRY_EXPORT_NICE=$TELEMETRY_EXPORT_NICE\`),"
    echo "  \`ServerLayer\` (SERVER span, RED metrics, ids), Prometheus recorder."
    echo "- Bare and instrumented alternate (round 1: bare first, round 2: instrumented first, …); each"
    echo "  figure is the median over the rounds; ratio = instrumented ÷ bare."
    echo
    for route in $ROUTES; do
        t_sat=0.90; [ "$route" = work ] && t_sat=0.97
        echo "### GET /$route"
        echo
        echo "| measure | bare | instrumented | ratio | target |"
        echo "|---|---|---|---|---|"
        b=$(med sat bare "$route" rps); i=$(med sat instrumented "$route" rps); r=$(ratio "$i" "$b")
        echo "| saturated requests/s (wrk) | $(fmt "$b") | $(fmt "$i") | $r | ≥ $t_sat $(verdict "$r" ">=" "$t_sat") |"
        b=$(med sat bare "$route" server_cpu_busy); i=$(med sat instrumented "$route" server_cpu_busy)
        echo "| server core busy while saturated | $(fmt "$b" 2) | $(fmt "$i" 2) | | ≈ 1.00 (else wrk was the limit) |"
        b=$(med lat bare "$route" server_cpu_busy); i=$(med lat instrumented "$route" server_cpu_busy)
        echo "| server core busy at ${RATE[$route]}/s | $(fmt "$b" 2) | $(fmt "$i" 2) | | (≈ 1.00 would mean at or beyond that server's capacity) |"
        # Half of bare's capacity can be more than the instrumented server serves at all: then
        # its requests queue without bound and the latency ratio measures the backlog. Only
        # when its saturated figure is the server's own (its core busy), not wrk's limit.
        beyond=""
        if awk -v c="$(med sat instrumented "$route" rps)" -v r="${RATE[$route]}" \
            -v busy="$(med sat instrumented "$route" server_cpu_busy)" 'BEGIN {exit !(c < r && busy >= 0.9)}'; then
            beyond=" (instrumented saturates at $(fmt "$(med sat instrumented "$route" rps)")/s, below this rate: the ratio is its backlog)"
        fi
        b=$(med lat bare "$route" p50_us); i=$(med lat instrumented "$route" p50_us); r=$(ratio "$i" "$b")
        echo "| p50 at ${RATE[$route]}/s, open loop | $(fmt "$b") µs | $(fmt "$i") µs | $r | ≤ 1.05 $(verdict "$r" "<=" 1.05)$beyond |"
        b=$(med lat bare "$route" p99_us); i=$(med lat instrumented "$route" p99_us); r=$(ratio "$i" "$b")
        echo "| p99 at ${RATE[$route]}/s, open loop | $(fmt "$b") µs | $(fmt "$i") µs | $r | ≤ 1.10 $(verdict "$r" "<=" 1.10)$beyond |"
        b=$(med lat bare "$route" p999_us); i=$(med lat instrumented "$route" p999_us)
        echo "| p99.9 at ${RATE[$route]}/s | $(fmt "$b") µs | $(fmt "$i") µs | $(ratio "$i" "$b") | |"
        b=$(med lat bare "$route" cpu_s_per_10k); i=$(med lat instrumented "$route" cpu_s_per_10k)
        echo "| CPU s per 10,000 requests (at ${RATE[$route]}/s) | $(fmt "$b" 3) | $(fmt "$i" 3) | $(ratio "$i" "$b") | |"
        b=$(med sat bare "$route" cpu_s_per_10k); i=$(med sat instrumented "$route" cpu_s_per_10k)
        echo "| CPU s per 10,000 requests (saturated) | $(fmt "$b" 3) | $(fmt "$i" 3) | $(ratio "$i" "$b") | |"
        b=$(med lat bare "$route" client_cpu_s_per_10k); i=$(med lat instrumented "$route" client_cpu_s_per_10k)
        echo "| load client's CPU s per 10,000 requests (at ${RATE[$route]}/s) | $(fmt "$b" 3) | $(fmt "$i" 3) | | client busy ≈ $(awk -v c="$b" -v r="${RATE[$route]}" 'BEGIN {printf "%.0f", c * r / 100}') % of its core |"
        b=$(med lat bare "$route" release_lag_p99_us); i=$(med lat instrumented "$route" release_lag_p99_us)
        echo "| load client's release lag p99 (at ${RATE[$route]}/s) | $(fmt "$b") µs | $(fmt "$i") µs | | how late the client queued its requests (its own work, or the receiver on its core), inside the latencies above |"
        i=$(med sat instrumented "$route" spans_dropped_per_request); j=$(med lat instrumented "$route" spans_dropped_per_request)
        echo "| spans dropped per request, export queue full (saturated / at ${RATE[$route]}/s) | | $(fmt "$i" 3) / $(fmt "$j" 3) | | 0: every span exported |"
        echo
    done
    b=$(med sat bare all peak_rss_kb); i=$(med sat instrumented all peak_rss_kb)
    echo "Peak RSS (VmHWM) of a server after its saturated runs: bare $(mb "$b") MB, instrumented $(mb "$i") MB;"
    b=$(med lat bare all peak_rss_kb); i=$(med lat instrumented all peak_rss_kb)
    echo "after its 50 % runs: bare $(mb "$b") MB, instrumented $(mb "$i") MB."
    echo "Export was live: $(med sat instrumented all spans_per_request) spans received by the OTLP receiver per request"
    echo "served on both routes together (saturated runs; $(med lat instrumented all spans_per_request) at 50 %), $(med sat instrumented all log_lines_per_request) JSON log lines per request."
    for route in $ROUTES; do
        for mode in bare instrumented; do
            busy=$(med sat "$mode" "$route" server_cpu_busy)
            if awk -v b="$busy" 'BEGIN {exit !(b != "nan" && b < 0.9)}'; then
                echo
                echo "**Warning: the $mode server's core was only $(fmt "$busy" 2) busy while \`wrk\` saturated GET /$route**:"
                echo "\`wrk\` (or its core) was the limit, not the server, so that saturated rate, its ratio and"
                echo "the 50 % rate derived from it understate the server. Rerun on a quieter machine."
            fi
        done
    done
    for phase in sat lat; do
        for route in $ROUTES; do
            dpr=$(med "$phase" instrumented "$route" spans_dropped_per_request)
            if awk -v d="$dpr" 'BEGIN {exit !(d != "nan" && d > 0.01)}'; then
                case "$phase" in sat) what="saturated" ;; *) what="50 % load (${RATE[$route]}/s)" ;; esac
                echo
                echo "**Warning: spans were dropped on GET /$route in the $what runs** ($dpr per request): the"
                echo "export queue was full (\`otel_sdk_processor_span_processed_total{error_type=\"queue_full\"}\`),"
                echo "so there the instrumented server did less export work than a complete trace record costs."
                if [ "$RECEIVER_SCHED" = idle ]; then
                    echo "With \`RECEIVER_SCHED=idle\` a receiver starved by the load tools causes such drops too."
                fi
            fi
        done
    done
    echo
    echo "Open-loop runs with failed or unfinished requests: $(awk -F'\t' '$1 == "lat" && $5 == "failed" && $6 > 0' "$DATA" | wc -l) (of $(awk -F'\t' '$1 == "lat" && $5 == "failed"' "$DATA" | wc -l))."
    echo
    echo "Every run (medians above are over these):"
    echo
    echo "| route | mode | round | sat req/s | p50 µs | p99 µs | CPU s/10k (50 %) |"
    echo "|---|---|---|---|---|---|---|"
    for route in $ROUTES; do for mode in bare instrumented; do for round in $(seq "$ROUNDS"); do
        echo "| /$route | $mode | $round | $(fmt "$(values sat "$mode" "$route" rps | grep -v '^$' | head -n $round | tail -1)") | $(fmt "$(values lat "$mode" "$route" p50_us | head -n $round | tail -1)") | $(fmt "$(values lat "$mode" "$route" p99_us | head -n $round | tail -1)") | $(values lat "$mode" "$route" cpu_s_per_10k | head -n $round | tail -1) |"
    done; done; done
    echo
    if [ "$SKIP_OUTAGE" = 0 ]; then
        echo "### Collector outage"
        echo
        echo "Instrumented, GET /$OUTAGE_ROUTE at $OUTAGE_RATE requests/s (50 % of the instrumented server's saturated rate) for $OUTAGE_DURATION s, then saturated for $SAT_DURATION s;"
        echo "first with the OTLP receiver up, then with nothing listening on the OTLP endpoint."
        echo
        u0=$(head -1 "$RAW/outage-down.rss.tsv" | cut -f2); u1=$(tail -1 "$RAW/outage-down.rss.tsv" | cut -f2)
        half=$(awk -v n="$(wc -l <"$RAW/outage-down.rss.tsv")" 'BEGIN {printf "%d", (n + 1) / 2}')
        um=$(sed -n "${half}p" "$RAW/outage-down.rss.tsv" | cut -f2)
        growth=$(awk -v a="$u0" -v b="$u1" 'BEGIN {printf "%.3f", b / a - 1}')
        late=$(awk -v a="$um" -v b="$u1" 'BEGIN {printf "%.3f", b / a - 1}')
        echo "| measure | collector up | collector down | ratio (down ÷ up) | target |"
        echo "|---|---|---|---|---|"
        b=$(med outage-up instrumented "$OUTAGE_ROUTE" achieved_rps); i=$(med outage-down instrumented "$OUTAGE_ROUTE" achieved_rps); r=$(ratio "$i" "$b")
        echo "| throughput at 50 % (req/s) | $(fmt "$b" 1) | $(fmt "$i" 1) | $r | ≥ 0.98 $(verdict "$r" ">=" 0.98) |"
        b=$(med outage-up instrumented "$OUTAGE_ROUTE" sat_rps); i=$(med outage-down instrumented "$OUTAGE_ROUTE" sat_rps); r=$(ratio "$i" "$b")
        echo "| saturated requests/s afterwards | $(fmt "$b") | $(fmt "$i") | $r | not a target: saturated, both export queues fill, and with nothing to send to, most spans are dropped unconverted (the SDK counters below), so the collector-down server does less work per request |"
        b=$(med outage-up instrumented "$OUTAGE_ROUTE" p50_us); i=$(med outage-down instrumented "$OUTAGE_ROUTE" p50_us)
        echo "| p50 at 50 % | $(fmt "$b") µs | $(fmt "$i") µs | $(ratio "$i" "$b") | |"
        b=$(med outage-up instrumented "$OUTAGE_ROUTE" p99_us); i=$(med outage-down instrumented "$OUTAGE_ROUTE" p99_us)
        echo "| p99 at 50 % | $(fmt "$b") µs | $(fmt "$i") µs | $(ratio "$i" "$b") | |"
        b=$(med outage-up instrumented "$OUTAGE_ROUTE" cpu_s_per_10k); i=$(med outage-down instrumented "$OUTAGE_ROUTE" cpu_s_per_10k)
        echo "| CPU s per 10,000 requests | $(fmt "$b" 3) | $(fmt "$i" 3) | $(ratio "$i" "$b") | |"
        echo "| RSS at start → end of the $OUTAGE_DURATION s | $(mb "$(head -1 "$RAW/outage-up.rss.tsv" | cut -f2)") → $(mb "$(tail -1 "$RAW/outage-up.rss.tsv" | cut -f2)") MB | $(mb "$u0") → $(mb "$u1") MB ($(pct "$growth")) | | ≤ +10 % $(verdict "$growth" "<=" 0.10) |"
        echo "| RSS growth over the second half | | $(pct "$late") | | ≈ 0 (stopped growing) |"
        echo
        echo "RSS while the collector was down (s since start of the 50 % run → MB): $(awk -F'\t' '{printf "%s%s s %.1f", (NR > 1 ? ", " : ""), $1, $2 / 1024}' "$RAW/outage-down.rss.tsv")."
        echo
        errs=$RAW/outage-down.export-errors.tsv
        jq -r 'select(.target == "telemetry::export") | [(.timestamp | sub("\\.[0-9]+Z$"; "Z") | fromdateiso8601), .signal, (.suppressed_failures // 0)] | @tsv' \
            "$RAW/outage-down.other-log-lines.jsonl" >"$errs" 2>/dev/null || true
        n_err=$(wc -l <"$errs")
        # Most lines in any 10 s window: per signal, and all signals together.
        max_in_10s() { sort -n | awk '{t[NR] = $1} END {m = 0; for (i = 1; i <= NR; i++) {c = 0; for (j = i; j <= NR && t[j] < t[i] + 10; j++) c++; if (c > m) m = c}; print m}'; }
        window=$(cut -f1 "$errs" | max_in_10s)
        per_signal_window=0
        for sig in $(cut -f2 "$errs" | sort -u); do
            w=$(awk -F'\t' -v s="$sig" '$2 == s {print $1}' "$errs" | max_in_10s)
            [ "$w" -gt "$per_signal_window" ] && per_signal_window=$w
        done
        per_signal=$(cut -f2 "$errs" | sort | uniq -c | awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $2, $1}')
        others=$(jq -r 'select(.target != "telemetry::export") | .level' "$RAW/outage-down.other-log-lines.jsonl" 2>/dev/null | grep -cv INFO || true)
        run_s=$((OUTAGE_DURATION + 2 * WARMUP + SAT_DURATION))
        echo "Export-error log lines while the collector was down (~$run_s s of load): $n_err ($per_signal);"
        echo "at most $window in any 10 s window for all signals together ($(verdict "$window" "<=" 1) for one line per 10 s; traces and logs share one budget), $per_signal_window for the busiest signal alone."
        echo "Other WARN/ERROR lines: $others. SDK counters at the end (\`/metrics\`):"
        echo
        echo '```text'
        grep -v '^#' "$RAW/outage-down.otel-metrics.txt" 2>/dev/null || echo "(none)"
        echo '```'
        echo
    fi
    if [ -n "$UP_ROWS" ]; then
        echo "### Services under \`faultline up\` (default load, 5 requests/s)"
        echo
        echo "$UP_HOW for $UP_DURATION s (not pinned; OTLP to the default endpoint):"
        echo
        echo "| service | RSS at the end | peak RSS | target ≤ 40 MB |"
        echo "|---|---|---|---|"
        printf '%s' "$UP_ROWS"
        echo
    fi
    echo "Raw measurements: \`bench/results/$STAMP/\` (\`data.tsv\`: phase, mode, route, round, measure, value)."
} >"$REPORT"
cat "$REPORT"
log "done: $REPORT"
