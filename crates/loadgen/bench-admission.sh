#!/usr/bin/env bash
# The admission benchmark of issue 4, end to end, on a 2-core machine:
#
#   1. builds the release binaries;
#   2. baseline: `portcullis-loadgen noop-server` (an AdmissionService that judges nothing,
#      on the same server stack) pinned to core 0, loaded from core 1 in open loop at each
#      rate (the latency floor of this machine and generator) and in closed loop; then
#      `portcullis-loadgen engine-cost`, the engine alone on the same review and policy in a
#      hot loop on core 0;
#   3. the real service: `portcullis up` (embedded: every service in one process) pinned to
#      core 0; the 15-rule policy applied and a cluster created with the CLI; then open loop
#      at each rate and closed loop at each concurrency, from core 1;
#   4. prints a markdown table and the two verdicts: p99 at 10,000/s (target: at most 2 ms)
#      and the real closed-loop maximum as a share of the baseline's (target: at least 80%),
#      with the bound on that share: a no-op call's server CPU against it plus the engine's.
#
# Usage: crates/loadgen/bench-admission.sh            (both parts, ~8 minutes)
#        PARTS=noop crates/loadgen/bench-admission.sh (the baseline only)
#        DURATION=10s WARMUP=2s crates/loadgen/bench-admission.sh
# Everything it starts is stopped on exit; its files go to a temporary folder, kept when
# KEEP=1 (the path is printed).
set -euo pipefail

# ---------------------------------------------------------------------------------------
# Settings (environment overrides).
DURATION=${DURATION:-30s}            # measured window of each row
WARMUP=${WARMUP:-5s}                 # unrecorded load before each row, same rate
RATES=${RATES:-"2000 5000 10000"}    # open-loop rows of the real service (reviews per second)
NOOP_RATES=${NOOP_RATES-$RATES}      # open-loop rows of the no-op baseline: the floor of what
                                     # this machine, stack and generator can show ("" to skip)
# Open loop: the generator polls for each call's time instead of sleeping, which spares it a
# wake-up per call (about 0.1 ms, and most of its CPU, in this VM); its CPU then reads 100%.
# Set OPEN_LOOP_FLAGS= to sleep on a high-resolution timer instead.
OPEN_LOOP_FLAGS=${OPEN_LOOP_FLAGS-"--spin"}
CONCURRENCIES=${CONCURRENCIES:-"32 64 128"}  # closed-loop rows (callers)
# Closed loop: likewise, the generator polls for answers instead of sleeping. An answer
# written to a sleeping generator's socket makes the server's core wake the generator's
# (an inter-processor interrupt, expensive in a VM: 4% of the real service's time in a
# profile here); a connector on another machine costs the server nothing of the kind.
# Set CLOSED_LOOP_FLAGS= to let the generator sleep.
CLOSED_LOOP_FLAGS=${CLOSED_LOOP_FLAGS-"--spin"}
CONNECTIONS=${CONNECTIONS:-16}       # HTTP/2 connections of the generator
SERVER_CORE=${SERVER_CORE:-0}        # taskset -c for the server
GENERATOR_CORE=${GENERATOR_CORE:-1}  # taskset -c for the generator
PARTS=${PARTS:-"noop real"}          # which parts to run
SKIP_BUILD=${SKIP_BUILD:-0}          # 1: use the binaries already in target/release
REVIEW=${REVIEW:-crates/engine/benches/data/review-8k.json}
POLICY=${POLICY:-crates/loadgen/data/policy-15-rules.yaml}
POLICY_NAME=${POLICY_NAME:-bench.admission15}
NOOP_KEY=${NOOP_KEY:-pck_loadgen_noop_connector_key_0000}

# ---------------------------------------------------------------------------------------
# The real service's command line.
# Flags of `portcullis up` besides --data-dir and --listen: the admission listener (port 0:
# any free port; the address is read from the startup output) and no per-tenant rate limit
# (the default limit, 1,000 reviews/s per tenant, would refuse most of 10,000/s).
UP_FLAGS=${UP_FLAGS:-"--admission-listen 127.0.0.1:0 --rate-limit 0"}
# The startup lines `up` prints on stdout: the policy store's URL and the admission URL.
STORE_READY=${STORE_READY:-"portcullis listening on "}
ADMISSION_READY=${ADMISSION_READY:-"portcullis admission listening on "}
# Decision events are always on: every decision goes to `up`'s in-process bus.
# ---------------------------------------------------------------------------------------

cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=${BIN:-$ROOT/target/release}  # where the binaries are (the build step builds release)
# shellcheck source=crates/loadgen/bench-lib.sh
. "$ROOT/crates/loadgen/bench-lib.sh"
bench_init bench-admission
# Servers run pinned to the server core; SERVER_WRAPPER: a command put before the server's,
# e.g. "env LD_PRELOAD=..." or "perf record -o F".
START_WRAPPER="taskset -c $SERVER_CORE ${SERVER_WRAPPER:-}"

# load SERVER_LABEL URL KEY PID ARGS...: one admission run from the generator core; its
# report goes to stderr and its `row |` line to $TMP/rows.
load() {
    local label=$1 url=$2 key=$3 pid=$4
    shift 4
    local out
    out=$(taskset -c "$GENERATOR_CORE" "$BIN/portcullis-loadgen" admission \
        --server "$url" --key "$key" --review "$REVIEW" \
        --duration "$DURATION" --warmup "$WARMUP" --connections "$CONNECTIONS" \
        --server-pid "$pid" --label "$label" "$@")
    echo "$out" >&2
    echo "$out" | grep '^row |' >>"$TMP/rows"
    echo >&2
}

# sweep SERVER_LABEL URL KEY PID RATES: the open-loop runs at each of RATES, then the
# closed-loop runs at each of $CONCURRENCIES, against one server.
sweep() {
    local label=$1 url=$2 key=$3 pid=$4 rates=$5 r c
    for r in $rates; do
        # shellcheck disable=SC2086 # a list of flags
        load "$label" "$url" "$key" "$pid" --rate "$r" $OPEN_LOOP_FLAGS
    done
    for c in $CONCURRENCIES; do
        # shellcheck disable=SC2086 # a list of flags
        load "$label" "$url" "$key" "$pid" --closed-loop --concurrency "$c" $CLOSED_LOOP_FLAGS
    done
}

if [[ $SKIP_BUILD != 1 ]]; then
    log "building (release)"
    if [[ " $PARTS " == *" real "* ]]; then
        cargo build --release -p portcullis-cli -p portcullis-loadgen
    else
        cargo build --release -p portcullis-loadgen
    fi
fi
[[ -r $REVIEW ]] || { log "no review at $REVIEW"; exit 1; }
: >"$TMP/rows"

log "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, kernel $(uname -r)," \
    "$(rustc -V 2>/dev/null || echo 'rustc ?'); load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
log "each row: warm-up $WARMUP, then $DURATION measured; server on core $SERVER_CORE, generator on core $GENERATOR_CORE"

if [[ " $PARTS " == *" noop "* ]]; then
    log "baseline: no-op AdmissionService"
    start noop "noop-server listening on " "$BIN/portcullis-loadgen" noop-server \
        --listen 127.0.0.1:0 --key "$NOOP_KEY"
    NOOP_PID=$STARTED_PID
    NOOP_URL=$(url_of noop "noop-server listening on ")
    log "noop-server pid $NOOP_PID at $NOOP_URL"
    sweep noop "$NOOP_URL" "$NOOP_KEY" "$NOOP_PID" "$NOOP_RATES"
    stop "$NOOP_PID"
    # The engine alone on the same review and policy, on the server's core: the real
    # service does all the no-op does plus at least this, which bounds the ratio.
    log "the engine alone: parse + evaluate of the review in a hot loop"
    taskset -c "$SERVER_CORE" "$BIN/portcullis-loadgen" engine-cost \
        --review "$REVIEW" --policy "$POLICY" --duration 3s | tee "$TMP/engine" >&2
fi

if [[ " $PARTS " == *" real "* ]]; then
    log "real service: portcullis up"
    export RUST_LOG=${RUST_LOG:-warn}
    # shellcheck disable=SC2086 # UP_FLAGS is a list of flags
    start up "$ADMISSION_READY" "$BIN/portcullis" up \
        --data-dir "$TMP/data" --listen 127.0.0.1:0 $UP_FLAGS
    UP_PID=$STARTED_PID
    STORE_URL=$(url_of up "$STORE_READY")
    ADMISSION_URL=$(url_of up "$ADMISSION_READY")
    log "portcullis up pid $UP_PID: store $STORE_URL, admission $ADMISSION_URL"
    export PORTCULLIS_SERVER=$STORE_URL
    PORTCULLIS_API_KEY=$(cat "$TMP/data/bootstrap-admin.key")
    export PORTCULLIS_API_KEY
    "$BIN/portcullis" policy apply -f "$POLICY" >&2
    CONNECTOR_KEY=$("$BIN/portcullis" cluster create bench-1 --policy "$POLICY_NAME")
    unset PORTCULLIS_API_KEY
    sweep real "$ADMISSION_URL" "$CONNECTOR_KEY" "$UP_PID" "$RATES"
    stop "$UP_PID"
fi

# The table: from each `row | label | offered | achieved | p50 | p99 | p99.9 | errors |
# server | generator | watched | machine |` line.
echo
# "others" is the machine's CPU use less the server's and the generator's: other processes,
# which share both cores (a busy machine shows in the tail latencies).
echo "| server | load | achieved | p50 ms | p99 ms | p99.9 ms | errors | server CPU | generator CPU | others' CPU | machine CPU |"
echo "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"
awk -F' *\\| *' '
    function n(s) { gsub(/[^0-9.]/, "", s); return s + 0 }
    {
        others = n($12) - n($9) - n($10)
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %.0f%% | %s |\n", $2, $3, $4, $5, $6, $7, $8, $9, $10, (others > 0 ? others : 0), $12
    }' "$TMP/rows"
echo

# The verdicts.
# (Only when the no-op part ran: it measures the engine too.)
ENGINE_US=0
if [[ -r $TMP/engine ]]; then
    ENGINE_US=$(sed -n 's/^engine_us \([0-9.]*\).*/\1/p' "$TMP/engine" | head -1)
fi
awk -F' *\\| *' -v engine_us="${ENGINE_US:-0}" '
    function n(s) { gsub(/[^0-9.]/, "", s); return s + 0 }
    $3 ~ /closed loop/ && $2 == "noop" && n($4) > noop { noop = n($4); noop_srv = n($9); noop_gen = n($10) }
    $3 ~ /closed loop/ && $2 == "real" && n($4) > real { real = n($4); real_srv = n($9); real_gen = n($10) }
    $2 == "real" && $3 == "10000/s" { p99 = n($6); errs = $8; seen = 1 }
    $2 == "noop" && $3 == "10000/s" { floor = n($6); floor_seen = 1 }
    END {
        if (floor_seen) printf "p99 of the no-op baseline at 10,000 reviews/s (the floor): %.2f ms\n", floor
        if (seen) printf "p99 at 10,000 reviews/s: %.2f ms (target: at most 2 ms): %s%s\n", p99, (p99 <= 2 && errs == "0") ? "met" : "MISSED", (errs == "0") ? "" : " (errors: " errs ")"
        if (noop > 0) printf "closed-loop maximum of the no-op baseline: %d/s (server CPU %d%%, generator CPU %d%%)\n", noop, noop_srv, noop_gen
        if (real > 0) printf "closed-loop maximum of the real service: %d/s (server CPU %d%%, generator CPU %d%%)\n", real, real_srv, real_gen
        # A generator near a full core while the server has headroom measured itself.
        if (noop > 0 && noop_gen >= 90 && noop_srv < 90) print "WARNING: the no-op baseline was limited by the generator (its core was busy, the server'\''s was not): the baseline, and so the ratio below, understate the server stack'\''s maximum"
        if (real > 0 && real_gen >= 90 && real_srv < 90) print "WARNING: the real service'\''s maximum was limited by the generator, not the server"
        if (noop > 0 && real > 0) printf "real / no-op: %.0f%% (target: at least 80%%): %s\n", 100 * real / noop, (real >= 0.8 * noop) ? "met" : "MISSED"
        # The bound: a no-op call'\''s server CPU, and the engine'\''s own cost on top of it.
        if (noop > 0 && noop_srv > 0 && engine_us > 0) {
            call_us = noop_srv / 100 / noop * 1e6
            printf "bound: a no-op call costs the server %.1f us of CPU and the engine alone %.1f us a review (hot loop), so the real service can reach at most %.0f%% of the no-op'\''s maximum (80%% needs the engine under %.1f us)\n", call_us, engine_us, 100 * call_us / (call_us + engine_us), call_us / 4
        }
    }' "$TMP/rows"
