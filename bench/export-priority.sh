#!/usr/bin/env bash
# bench/export-priority.sh — what running the export threads (or the OTLP receiver) at a
# lower priority buys.
#
# Side by side in one run, ROUNDS times (even rounds in reverse order), the VARIANTS (default:
# bare, instrumented with TELEMETRY_EXPORT_NICE=0, the default, and instrumented with
# TELEMETRY_EXPORT_NICE=10, all with the receiver at RECEIVER_SCHED, normal unless set, and
# RECEIVER_DECODE, count unless set), server pinned to core 1, load tools and OTLP receiver to
# core 0 (as bench/overhead.sh). A variant is MODE:NICE:RECEIVER_SCHED[:RECEIVER_DECODE]
# (bare|instrumented : the server's TELEMETRY_EXPORT_NICE : idle|normal, the receiver's policy
# : count|full, how much of each request it reads; see bench/lib.sh), e.g. what the receiver's
# policy does:
#   VARIANTS="bare:0:normal instrumented:0:normal instrumented:0:idle" bench/export-priority.sh
# or what decoding every request costs the instrumented server's latency:
#   VARIANTS="bare:0:normal instrumented:0:normal:count instrumented:0:normal:full" …
# Each variant runs on a fresh server:
#   1. saturated GET /trivial with wrk for SAT_DURATION seconds (after 2 s of warm-up):
#      requests/s and the spans the receiver got per request served;
#   2. GET /$ROUTE open loop at RATE requests/s for DURATION seconds (after a 3 s warm-up):
#      p50/p99/p99.9, spans per request, the server's peak RSS.
# The medians go last. The report is a Markdown table on stdout (progress on stderr).
#
# Usage: bench/export-priority.sh [--no-build]   (RATE=2139 ROUTE=work DURATION=20
#        SAT_DURATION=10 ROUNDS=3 VARIANTS=…; WORK_ITERATIONS defaults to ~200 µs calibrated on
#        core 1)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=1
for a in "$@"; do
    case "$a" in
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "unknown argument: $a" >&2; exit 2 ;;
    esac
done
RATE=${RATE:-2139}
ROUTE=${ROUTE:-work}
DURATION=${DURATION:-20}
SAT_DURATION=${SAT_DURATION:-10}
ROUNDS=${ROUNDS:-3}
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
VARIANTS=${VARIANTS-"bare:0:$RECEIVER_SCHED instrumented:0:$RECEIVER_SCHED instrumented:10:$RECEIVER_SCHED"}
read -ra VARIANT_LIST <<<"$VARIANTS" # split on blanks, no file-name expansion
SEEN=" "
for i in "${!VARIANT_LIST[@]}"; do
    variant=${VARIANT_LIST[$i]}
    [[ $variant =~ ^(bare|instrumented):([0-9]|1[0-9]):(idle|normal)(:(count|full))?$ ]] ||
        die "VARIANTS: '$variant' is not MODE:NICE:RECEIVER_SCHED[:RECEIVER_DECODE] (bare or instrumented, 0-19, idle or normal, count or full; e.g. instrumented:10:idle)"
    [ -n "${BASH_REMATCH[4]}" ] || variant+=":$RECEIVER_DECODE"
    VARIANT_LIST[$i]=$variant
    [[ $SEEN == *" $variant "* ]] && die "VARIANTS: '$variant' is given twice (its rounds would be pooled into one median)"
    SEEN+="$variant "
done
[ "$SEEN" != " " ] || die "VARIANTS is empty"
OUT=$(mktemp -d)
for tool in wrk jq curl taskset; do command -v "$tool" >/dev/null || die "$tool is missing"; done
if [ "$BUILD" = 1 ]; then
    build_release "$OUT/build.log"
fi
WORK_ITERATIONS=${WORK_ITERATIONS:-$(taskset -c "$SERVER_CPU" "$BIN/overhead-server" calibrate --target 200us)}

PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; rm -rf "$OUT"' EXIT

require_free_ports "$APP_PORT" "$ADMIN_PORT" "$GRPC_PORT" "$STATS_PORT"
RUNNING_RECEIVER=
# receiver SCHED DECODE: (re)starts the receiver under that policy, reading requests that way,
# unless it already runs so.
receiver() {
    [ "$RUNNING_RECEIVER" = "$1:$2" ] && return 0
    if [ -n "$RUNNING_RECEIVER" ]; then
        kill -TERM "$COLLECTOR_PID"
        wait "$COLLECTOR_PID" || true
    fi
    RECEIVER_SCHED=$1 RECEIVER_DECODE=$2 start_collector "$OUT/collector.out"
    RUNNING_RECEIVER=$1:$2
}

wrk_requests() { awk '/requests in/ {print $1}' "$1"; }

# run MODE NICE: sets ROW to "sat_rps sat_spans_per_request p50 p99 p999 spans_per_request
# peak_rss_mb release_lag_p99". Runs in the main shell (not in `$(…)`), so that `die` stops the
# script and the server is always in PIDS.
run() {
    local before after result pid sat_rps sat_spans n
    server_env
    env -i "${SERVER_ENV[@]}" TELEMETRY_EXPORT_NICE="$2" \
        taskset -c "$SERVER_CPU" "$BIN/overhead-server" serve --mode "$1" \
        --listen "127.0.0.1:$APP_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
        --work-iterations "$WORK_ITERATIONS" >"$OUT/server.log" 2>"$OUT/server.err" &
    pid=$!
    PIDS+=("$pid")
    wait_http "http://127.0.0.1:$ADMIN_PORT/healthz" || die "the server did not start: $(cat "$OUT/server.err")"
    kill -0 "$pid" 2>/dev/null || die "the server exited: $(cat "$OUT/server.err")"
    before=$(collector_spans)
    taskset -c "$LOAD_CPU" wrk -t1 -c64 -d2s -H "traceparent: $TRACEPARENT" \
        "http://127.0.0.1:$APP_PORT/trivial" >"$OUT/warm.txt"
    taskset -c "$LOAD_CPU" wrk -t1 -c64 -d"${SAT_DURATION}s" -H "traceparent: $TRACEPARENT" \
        "http://127.0.0.1:$APP_PORT/trivial" >"$OUT/sat.txt"
    sat_rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$OUT/sat.txt")
    [ -n "$sat_rps" ] && [ -n "$(wrk_requests "$OUT/warm.txt")" ] || die "wrk failed: $(cat "$OUT/sat.txt")"
    n=$(($(wrk_requests "$OUT/warm.txt") + $(wrk_requests "$OUT/sat.txt")))
    sleep 2 # what is still queued is exported, or was dropped
    sat_spans=$(awk -v s="$(($(collector_spans) - before))" -v n="$n" 'BEGIN {printf "%.3f", s / n}')
    before=$(collector_spans)
    result=$(taskset -c "$LOAD_CPU" "$BIN/overhead-load" --url "http://127.0.0.1:$APP_PORT/$ROUTE" \
        --rate "$RATE" --duration "${DURATION}s" --warmup 3s --connections 32) ||
        die "overhead-load failed"
    local rss_kb
    rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    kill -TERM "$pid"
    wait "$pid" || true
    sleep 2 # the last batch reaches the receiver
    after=$(collector_spans)
    # The warm-up's requests are served (and exported) too.
    ROW=$(echo "$result" | jq -r --argjson spans "$((after - before))" --argjson rss "$rss_kb" \
        --argjson warm "$((RATE * 3))" \
        --arg sat "$sat_rps $sat_spans" \
        '"\($sat) \(.p50_us) \(.p99_us) \(.p999_us) \($spans / (.ok + $warm) * 1000 | round / 1000) \($rss / 1024 * 10 | round / 10) \(.release_lag_p99_us)"')
    [ -n "$ROW" ] || die "no figures for $1 at nice $2"
}

ROWS=$OUT/rows.tsv
for round in $(seq "$ROUNDS"); do
    # Odd rounds in the given order, even rounds in reverse, so no variant always goes first
    # (or always gets the receiver freshly restarted).
    order=("${VARIANT_LIST[@]}")
    if [ $((round % 2)) = 0 ]; then
        order=()
        for ((i = ${#VARIANT_LIST[@]} - 1; i >= 0; i--)); do order+=("${VARIANT_LIST[$i]}"); done
    fi
    for variant in "${order[@]}"; do
        IFS=: read -r mode nice sched decode <<<"$variant"
        log "round $round/$ROUNDS: $mode, TELEMETRY_EXPORT_NICE=$nice, receiver $sched ($decode): saturated /trivial, then /$ROUTE at $RATE/s"
        receiver "$sched" "$decode"
        run "$mode" "$nice"
        printf '%s\t%s\t%s\n' "$variant" "$round" "$ROW" >>"$ROWS"
    done
done

median() { sort -g | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
col() { awk -F'\t' -v v="$1" '$1 == v {split($3, f, " "); print f['"$2"']}' "$ROWS" | median; }
# cells VARIANT [MARK]: the variant's three table cells, each wrapped in MARK (e.g. ** for bold).
cells() { IFS=: read -r mode nice sched decode <<<"$1"; echo "${2:-}$mode${2:-} | ${2:-}$nice${2:-} | ${2:-}$sched, $decode${2:-}"; }
echo "### Export priority (bench/export-priority.sh)"
echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD), $ROUNDS round(s) alternated: saturated GET /trivial (wrk, ${SAT_DURATION} s), then GET /$ROUTE ($WORK_ITERATIONS iterations) at $RATE requests/s, open loop, ${DURATION} s. Column \"receiver\": the OTLP receiver's scheduling policy on core $LOAD_CPU (\`RECEIVER_SCHED\`) and how much of each request it read (\`RECEIVER_DECODE\`)."
echo
echo "| mode | TELEMETRY_EXPORT_NICE | receiver | round | /trivial saturated req/s | /trivial spans per request | /$ROUTE p50 µs | p99 µs | p99.9 µs | /$ROUTE spans per request | peak RSS MB, both phases | client's release lag p99 µs |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
while IFS=$'\t' read -r variant round rest; do
    set -- $rest
    echo "| $(cells "$variant") | $round | $1 | $2 | $3 | $4 | $5 | $6 | $7 | $8 |"
done <"$ROWS"
for variant in "${VARIANT_LIST[@]}"; do
    echo "| $(cells "$variant" "**") | median | $(col "$variant" 1) | $(col "$variant" 2) | $(col "$variant" 3) | $(col "$variant" 4) | $(col "$variant" 5) | $(col "$variant" 6) | $(col "$variant" 7) | $(col "$variant" 8) |"
done
