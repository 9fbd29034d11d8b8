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
#   4. the HTTPS webhook (issue 21), for each of PROTOCOLS (h2: multiplexed over a few
#      connections; http1.1: a pool of keep-alive connections, one request in flight each,
#      as kube-apiserver's clients): `portcullis-loadgen noop-webhook` (a handler that judges
#      nothing, behind the same HTTPS transport) and `portcullis up --webhook-listen` with a
#      private CA from `portcullis certs init`, the same policy and review, pinned and loaded
#      as above;
#   5. the same webhook served by the admission service alone, as a distributed deployment
#      runs it (`webhook-service`): `portcullis serve admission --webhook-listen` pinned to
#      the server core, its policy store (`serve policy-store` on a fresh database of the
#      machine's PostgreSQL) and a nats-server of its own on the generator's core, and no
#      telemetry (the decision events wait in JetStream, as they do for a telemetry
#      replica elsewhere); the replica's drain line says it published every decision;
#   6. prints a markdown table and the verdicts: for gRPC, p99 at 10,000/s (target: at most
#      2 ms) and the real closed-loop maximum as a share of the baseline's (target: at least
#      80%), with the bound on that share: a no-op call's server CPU against it plus the
#      engine's; for the webhook, per protocol, p99 at 10,000/s (at most 2 ms) and real /
#      no-op against at least 90% of that bound.
#
# Usage: crates/loadgen/bench-admission.sh            (every part, ~25 minutes)
#        PARTS=noop crates/loadgen/bench-admission.sh (the gRPC baseline only)
#        PARTS="webhook-noop webhook-real" PROTOCOLS=h2 crates/loadgen/bench-admission.sh
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
# Open loop: the generator sleeps until each call is due (a high-resolution timer) and runs
# at real-time priority (OPEN_LOOP_WRAPPER), so that it wakes when a call is due even when
# its core is shared: the webhook-service part puts nats-server and the policy store there,
# and at normal priority they delayed the generator's sends by up to 5-30 ms, which counts in
# the latencies (they run from each call's due time). Its report gives the lateness it sent
# with ("sent late"). Where real-time priority is refused, the generator polls for each
# call's time instead (OPEN_LOOP_FLAGS=--spin, which spares it a wake-up per call but takes
# its whole core) and the run says so. Never --spin with chrt: a real-time task that never
# sleeps starves its core.
OPEN_LOOP_WRAPPER=${OPEN_LOOP_WRAPPER-"chrt --fifo 1"}
OPEN_LOOP_FLAGS=${OPEN_LOOP_FLAGS-""}
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
# webhook-service: the core of the rest of the deployment (nats-server, the policy store);
# the server's core instead puts the generator's core to itself (a diagnostic: the replica
# then shares its core with them).
DEPLOYMENT_CORE=${DEPLOYMENT_CORE:-$GENERATOR_CORE}
PARTS=${PARTS:-"noop real webhook-noop webhook-real webhook-service"}  # which parts to run
PROTOCOLS=${PROTOCOLS:-"h2 http1.1"} # the webhook parts' protocols
# The webhook's closed-loop rows: at most 64, the webhook's requests in flight per key
# (`[webhook] max_in_flight_per_key`); more would be answered 429 by design.
WEBHOOK_CONCURRENCIES=${WEBHOOK_CONCURRENCIES:-"16 32 64"}
WEBHOOK_H2_CONNECTIONS=${WEBHOOK_H2_CONNECTIONS:-4}      # HTTP/2: a few, multiplexed
WEBHOOK_HTTP1_CONNECTIONS=${WEBHOOK_HTTP1_CONNECTIONS:-64}  # HTTP/1.1 pool in open loop
                                     # (closed loop: one connection per caller)
# Command names whose CPU each row also reports (the watched column), e.g. a kernel thread
# that shares the server's core: DAMON's monitor (kdamond.0) took core 0 for 2-6 ms at a
# time here, in bursts of about 30 ms.
WATCH_COMMS=${WATCH_COMMS-"kdamond.0"}
SKIP_BUILD=${SKIP_BUILD:-0}          # 1: use the binaries already in target/release
REVIEW=${REVIEW:-crates/engine/benches/data/review-8k.json}
POLICY=${POLICY:-crates/loadgen/data/policy-15-rules.yaml}
POLICY_NAME=${POLICY_NAME:-bench.admission15}
NOOP_KEY=${NOOP_KEY:-pck_loadgen_noop_connector_key_0000}
# The webhook-service part: PostgreSQL for its policy store (a database of its own, dropped
# on exit) and the nats-server binary (at least 2.10).
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
NATS_SERVER=${PORTCULLIS_NATS_SERVER:-.venv/bin/nats-server}
REVIEW_PATH_N=${REVIEW_PATH_N:-100000}  # reviews of the in-process review path (its bound)
SERVICE_SETTINGS=${SERVICE_SETTINGS:-}   # a settings file for `serve admission` (--config)

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
# The webhook part adds `--webhook-listen 127.0.0.1:0` and the TLS files (which also put
# `up`'s gRPC listeners on TLS), and waits for this line:
WEBHOOK_READY=${WEBHOOK_READY:-"portcullis webhook listening on "}
# ---------------------------------------------------------------------------------------

cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=${BIN:-$ROOT/target/release}  # where the binaries are (the build step builds release)
# shellcheck source=crates/loadgen/bench-lib.sh
. "$ROOT/crates/loadgen/bench-lib.sh"
bench_init bench-admission
DB=pc_bench_admission_$$
DB_CREATED=0
bench_cleanup() {
    if [[ $DB_CREATED == 1 ]]; then
        psql -X -q -d "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    fi
}
# Servers run pinned to the server core; SERVER_WRAPPER: a command put before the server's,
# e.g. "env LD_PRELOAD=..." or "perf record -o F".
START_WRAPPER="taskset -c $SERVER_CORE ${SERVER_WRAPPER:-}"

# load LABEL PID WRAPPER ARGS...: one generator run from the generator core against the
# target (TARGET, an array: the subcommand and its server, key...), the server's CPU read
# from PID, the generator's command after WRAPPER (a command line, or ""); its report goes
# to stderr and its `row |` line to $TMP/rows.
load() {
    local label=$1 pid=$2 wrapper=$3
    shift 3
    local out comm watch=()
    for comm in $WATCH_COMMS; do watch+=(--watch-comm "$comm"); done
    # shellcheck disable=SC2086 # the wrapper is a command line
    out=$(taskset -c "$GENERATOR_CORE" $wrapper "$BIN/portcullis-loadgen" "${TARGET[@]}" "${watch[@]}" --review "$REVIEW" \
        --duration "$DURATION" --warmup "$WARMUP" \
        --server-pid "$pid" --label "$label" "$@")
    echo "$out" >&2
    echo "$out" | grep '^row |' >>"$TMP/rows"
    echo >&2
}

# sweep LABEL PID RATES CONCURRENCIES OPEN_CONNECTIONS CLOSED_CONNECTIONS: the open-loop runs
# at each of RATES, then the closed-loop runs at each of CONCURRENCIES, against one server
# (CLOSED_CONNECTIONS `caller`: one connection per caller).
sweep() {
    local label=$1 pid=$2 rates=$3 concurrencies=$4 open_conns=$5 closed_conns=$6 r c
    for r in $rates; do
        # shellcheck disable=SC2086 # a list of flags
        load "$label" "$pid" "$OPEN_LOOP_WRAPPER" --rate "$r" --connections "$open_conns" $OPEN_LOOP_FLAGS
    done
    for c in $concurrencies; do
        local conns=$closed_conns
        [[ $conns == caller ]] && conns=$c
        # shellcheck disable=SC2086 # a list of flags
        load "$label" "$pid" "" --closed-loop --concurrency "$c" --connections "$conns" $CLOSED_LOOP_FLAGS
    done
}

# engine_cost: the engine alone on the same review and policy, on the server's core (once a
# run): the real service does all the no-op does plus at least this, which bounds the ratio.
engine_cost() {
    [[ -s $TMP/engine ]] && return
    log "the engine alone: parse + evaluate of the review in a hot loop"
    taskset -c "$SERVER_CORE" "$BIN/portcullis-loadgen" engine-cost \
        --review "$REVIEW" --policy "$POLICY" --duration 3s | tee "$TMP/engine" >&2
}

# webhook_sweep LABEL PID URL CA KEY CLUSTER RATES: each of PROTOCOLS against one webhook,
# rows labelled LABEL-PROTOCOL; every answer must allow (the benchmark review under its
# policy is allowed, its log-only violation a warning).
webhook_sweep() {
    local label=$1 pid=$2 url=$3 ca=$4 key=$5 cluster=$6 rates=$7 protocol
    for protocol in $PROTOCOLS; do
        TARGET=(webhook --server "$url" --ca-cert "$ca" --key "$key" --cluster "$cluster"
            --protocol "$protocol" --expect allowed)
        case $protocol in
            h2) sweep "$label-$protocol" "$pid" "$rates" "$WEBHOOK_CONCURRENCIES" \
                "$WEBHOOK_H2_CONNECTIONS" "$WEBHOOK_H2_CONNECTIONS" ;;
            http1.1) sweep "$label-$protocol" "$pid" "$rates" "$WEBHOOK_CONCURRENCIES" \
                "$WEBHOOK_HTTP1_CONNECTIONS" caller ;;
            *) log "unknown protocol $protocol (h2 or http1.1)"; exit 1 ;;
        esac
    done
}

# certs: a private CA and a certificate for 127.0.0.1 in $TMP/certs (once a run).
certs() {
    [[ -s $TMP/certs/webhook.crt ]] && return
    "$BIN/portcullis" certs init "$TMP/certs" --name webhook >/dev/null
}

if [[ $SKIP_BUILD != 1 ]]; then
    log "building (release)"
    if [[ " $PARTS " == *" real "* || " $PARTS " == *" webhook-"* ]]; then
        cargo build --release -p portcullis-cli -p portcullis-loadgen
        if [[ " $PARTS " == *" webhook-service "* ]]; then
            cargo build --release -p portcullis-admission --example review_path
        fi
    else
        cargo build --release -p portcullis-loadgen
    fi
fi
[[ -r $REVIEW ]] || { log "no review at $REVIEW"; exit 1; }
if [[ -n $OPEN_LOOP_WRAPPER ]] && ! $OPEN_LOOP_WRAPPER true 2>/dev/null; then
    log "open loop: '$OPEN_LOOP_WRAPPER' is refused here; the generator polls instead (--spin), at normal priority"
    OPEN_LOOP_WRAPPER="" OPEN_LOOP_FLAGS="--spin"
fi
if [[ $OPEN_LOOP_WRAPPER == *chrt* && " $OPEN_LOOP_FLAGS " == *" --spin "* ]]; then
    log "OPEN_LOOP_FLAGS=--spin with a real-time OPEN_LOOP_WRAPPER would starve the generator's core"
    exit 1
fi
: >"$TMP/rows"

log "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, kernel $(uname -r)," \
    "$(rustc -V 2>/dev/null || echo 'rustc ?'); load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
log "each row: warm-up $WARMUP, then $DURATION measured; server on core $SERVER_CORE, generator on core $GENERATOR_CORE;" \
    "open loop: '${OPEN_LOOP_WRAPPER:-normal priority}' ${OPEN_LOOP_FLAGS:-(sleeping)}; closed loop: $CLOSED_LOOP_FLAGS"

if [[ " $PARTS " == *" noop "* ]]; then
    log "baseline: no-op AdmissionService"
    start noop "noop-server listening on " "$BIN/portcullis-loadgen" noop-server \
        --listen 127.0.0.1:0 --key "$NOOP_KEY"
    NOOP_PID=$STARTED_PID
    NOOP_URL=$(url_of noop "noop-server listening on ")
    log "noop-server pid $NOOP_PID at $NOOP_URL"
    TARGET=(admission --server "$NOOP_URL" --key "$NOOP_KEY")
    sweep noop "$NOOP_PID" "$NOOP_RATES" "$CONCURRENCIES" "$CONNECTIONS" "$CONNECTIONS"
    stop "$NOOP_PID"
    engine_cost
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
    TARGET=(admission --server "$ADMISSION_URL" --key "$CONNECTOR_KEY")
    sweep real "$UP_PID" "$RATES" "$CONCURRENCIES" "$CONNECTIONS" "$CONNECTIONS"
    stop "$UP_PID"
fi

if [[ " $PARTS " == *" webhook-noop "* ]]; then
    log "webhook baseline: no-op webhook handler on the same HTTPS transport"
    certs
    start noop-webhook "noop-webhook listening on " "$BIN/portcullis-loadgen" noop-webhook \
        --listen 127.0.0.1:0 --tls-cert "$TMP/certs/webhook.crt" --tls-key "$TMP/certs/webhook.key" \
        --key "$NOOP_KEY" --review "$REVIEW"
    NOOP_WEBHOOK_PID=$STARTED_PID
    NOOP_WEBHOOK_URL=$(url_of noop-webhook "noop-webhook listening on ")
    log "noop-webhook pid $NOOP_WEBHOOK_PID at $NOOP_WEBHOOK_URL"
    webhook_sweep wh-noop "$NOOP_WEBHOOK_PID" "$NOOP_WEBHOOK_URL" "$TMP/certs/ca.crt" "$NOOP_KEY" \
        bench-webhook "$NOOP_RATES"
    stop "$NOOP_WEBHOOK_PID"
    engine_cost
fi

if [[ " $PARTS " == *" webhook-real "* ]]; then
    log "real webhook: portcullis up --webhook-listen"
    certs
    export RUST_LOG=${RUST_LOG:-warn}
    # shellcheck disable=SC2086 # UP_FLAGS is a list of flags
    start up-webhook "$WEBHOOK_READY" "$BIN/portcullis" up \
        --data-dir "$TMP/data-webhook" --listen 127.0.0.1:0 $UP_FLAGS \
        --webhook-listen 127.0.0.1:0 --tls-cert "$TMP/certs/webhook.crt" --tls-key "$TMP/certs/webhook.key"
    UP_WEBHOOK_PID=$STARTED_PID
    STORE_URL=$(url_of up-webhook "$STORE_READY")
    # `https://ADDR/validate/{cluster}`: the generator takes the origin.
    WEBHOOK_URL=$(url_of up-webhook "$WEBHOOK_READY" | sed 's|/validate/.*$||')
    log "portcullis up pid $UP_WEBHOOK_PID: store $STORE_URL, webhook $WEBHOOK_URL"
    export PORTCULLIS_SERVER=$STORE_URL PORTCULLIS_CA_CERT=$TMP/certs/ca.crt
    PORTCULLIS_API_KEY=$(cat "$TMP/data-webhook/bootstrap-admin.key")
    export PORTCULLIS_API_KEY
    "$BIN/portcullis" policy apply -f "$POLICY" >&2
    # The path names the cluster by id (the key's own cluster: the adapter's usual case).
    "$BIN/portcullis" cluster create bench-webhook --policy "$POLICY_NAME" -o json >"$TMP/webhook-cluster.json"
    unset PORTCULLIS_API_KEY
    WEBHOOK_KEY=$(jq -r .connectorKey "$TMP/webhook-cluster.json")
    WEBHOOK_CLUSTER=$(jq -r .cluster.id "$TMP/webhook-cluster.json")
    webhook_sweep wh-real "$UP_WEBHOOK_PID" "$WEBHOOK_URL" "$TMP/certs/ca.crt" "$WEBHOOK_KEY" \
        "$WEBHOOK_CLUSTER" "$RATES"
    stop "$UP_WEBHOOK_PID"
fi

if [[ " $PARTS " == *" webhook-service "* ]]; then
    log "real webhook, the admission service alone: portcullis serve admission --webhook-listen"
    certs
    [[ -x $NATS_SERVER ]] || { log "no nats-server at $NATS_SERVER (set PORTCULLIS_NATS_SERVER)"; exit 1; }
    export RUST_LOG=${RUST_LOG:-warn}
    # The rest of the deployment runs on the generator's core: the admission replica keeps
    # its core to itself, as on a node of its own.
    start_nats "$NATS_SERVER" taskset -c "$DEPLOYMENT_CORE"
    psql -X -q -d "$PG_URL/postgres" -c "CREATE DATABASE $DB" >/dev/null
    DB_CREATED=1
    PORTCULLIS_SERVICE_TOKEN=svc-bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    PORTCULLIS_OPERATOR_KEY=op-bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    export PORTCULLIS_SERVICE_TOKEN PORTCULLIS_OPERATOR_KEY
    unset PORTCULLIS_API_KEY PORTCULLIS_SERVER PORTCULLIS_CA_CERT
    START_WRAPPER="taskset -c $DEPLOYMENT_CORE" start svc-store "portcullis policy-store listening on " \
        "$BIN/portcullis" serve policy-store --listen 127.0.0.1:0 --database-url "$PG_URL/$DB" \
        --nats-url "$NATS_URL"
    SVC_STORE_PID=$STARTED_PID
    SVC_STORE_URL=$(url_of svc-store "portcullis policy-store listening on ")
    export PORTCULLIS_SERVER=$SVC_STORE_URL
    ADMIN_KEY=$("$BIN/portcullis" tenant create bench)
    PORTCULLIS_API_KEY=$ADMIN_KEY "$BIN/portcullis" policy apply -f "$POLICY" >&2
    PORTCULLIS_API_KEY=$ADMIN_KEY "$BIN/portcullis" cluster create bench-webhook --policy "$POLICY_NAME" \
        -o json >"$TMP/svc-cluster.json"
    SVC_KEY=$(jq -r .connectorKey "$TMP/svc-cluster.json")
    SVC_CLUSTER=$(jq -r .cluster.id "$TMP/svc-cluster.json")
    SVC_CONFIG=()
    [[ -n $SERVICE_SETTINGS ]] && SVC_CONFIG=(--config "$SERVICE_SETTINGS")
    start svc-admission "$WEBHOOK_READY" "$BIN/portcullis" serve admission "${SVC_CONFIG[@]}" --listen 127.0.0.1:0 \
        --policy-store-url "$SVC_STORE_URL" --nats-url "$NATS_URL" --rate-limit 0 \
        --webhook-listen 127.0.0.1:0 --tls-cert "$TMP/certs/webhook.crt" --tls-key "$TMP/certs/webhook.key"
    SVC_PID=$STARTED_PID
    SVC_URL=$(url_of svc-admission "$WEBHOOK_READY" | sed 's|/validate/.*$||')
    log "admission pid $SVC_PID: webhook $SVC_URL; policy store pid $SVC_STORE_PID at $SVC_STORE_URL; nats-server pid $NATS_PID at $NATS_URL"
    webhook_sweep wh-svc "$SVC_PID" "$SVC_URL" "$TMP/certs/ca.crt" "$SVC_KEY" "$SVC_CLUSTER" "$RATES"
    stop "$SVC_PID"
    # Nothing judged went unrecorded: every decision's event reached JetStream.
    SVC_DRAINED=$(grep -m1 ' drained: ' "$TMP/svc-admission.err" || echo "no drain line")
    log "admission service: $SVC_DRAINED"
    # The review path without a transport, on the server core, its events to the same
    # nats-server: what the service does per review beyond the transport, and the cost of
    # publishing a decision event alone (see services/admission/examples/review_path.rs).
    log "the review path alone (no transport), and publishing its decision events alone"
    taskset -c "$SERVER_CORE" "$BIN/examples/review_path" --cpu --nats-url "$NATS_URL" "$REVIEW_PATH_N" \
        | tee "$TMP/review-path" >&2
    stop "$SVC_STORE_PID" "$NATS_PID"
fi

# The table: from each `row | label | offered | achieved | p50 | p99 | p99.9 | errors |
# server | generator | watched | machine |` line.
echo
# "others" is the machine's CPU use less the server's and the generator's: other processes,
# which share both cores (a busy machine shows in the tail latencies).
# "watched" is the CPU of WATCH_COMMS (a kernel thread sharing the server's core shows there;
# it counts among the others too).
echo "| server | load | achieved | p50 ms | p99 ms | p99.9 ms | errors | server CPU | generator CPU | watched CPU ($WATCH_COMMS) | others' CPU | machine CPU |"
echo "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"
awk -F' *\\| *' '
    function n(s) { gsub(/[^0-9.]/, "", s); return s + 0 }
    {
        others = n($12) - n($9) - n($10)
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %.0f%% | %s |\n", $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, (others > 0 ? others : 0), $12
    }' "$TMP/rows"
echo

# The verdicts.
# (The bound needs the engine's cost, measured when a no-op part ran.)
ENGINE_US=0
if [[ -r $TMP/engine ]]; then
    ENGINE_US=$(sed -n 's/^engine_us \([0-9.]*\).*/\1/p' "$TMP/engine" | head -1)
fi
# (The service's bounds need the review path's cost, measured when webhook-service ran.)
REVIEW_US=0 PUBLISH_US=0
if [[ -r $TMP/review-path ]]; then
    REVIEW_US=$(sed -n 's/^review_us \([0-9.]*\).*/\1/p' "$TMP/review-path" | head -1)
    PUBLISH_US=$(sed -n 's/^publish_us \([0-9.]*\).*/\1/p' "$TMP/review-path" | head -1)
fi

# verdicts NOOP REAL TITLE RULE [PATH]: the verdicts from the rows labelled NOOP and REAL. RULE
# `share`: real / no-op at least 80% (gRPC, issue 4); `bound`: real / no-op at least 90% of
# the bound noop / (noop + engine) (the webhook, issue 21). Both print the bound. PATH 1: also
# the bounds from the review path's own cost (the admission service alone).
verdicts() {
    awk -F' *\\| *' -v engine_us="${ENGINE_US:-0}" -v noop_label="$1" -v real_label="$2" \
        -v title="$3" -v rule="$4" -v review_us="${REVIEW_US:-0}" -v publish_us="${PUBLISH_US:-0}" -v with_path="${5:-0}" '
    function n(s) { gsub(/[^0-9.]/, "", s); return s + 0 }
    $3 ~ /closed loop/ && $2 == noop_label && n($4) > noop { noop = n($4); noop_srv = n($9); noop_gen = n($10) }
    $3 ~ /closed loop/ && $2 == real_label && n($4) > real { real = n($4); real_srv = n($9); real_gen = n($10) }
    $2 == real_label && $3 == "10000/s" { p99 = n($6); errs = $8; seen = 1 }
    $2 == noop_label && $3 == "10000/s" { floor = n($6); floor_seen = 1 }
    END {
        if (!(seen || floor_seen || noop > 0 || real > 0)) exit
        print title ":"
        if (floor_seen) printf "p99 of the no-op baseline at 10,000 reviews/s (the floor): %.2f ms\n", floor
        if (seen) printf "p99 at 10,000 reviews/s: %.2f ms (target: at most 2 ms): %s%s\n", p99, (p99 <= 2 && errs == "0") ? "met" : "MISSED", (errs == "0") ? "" : " (errors: " errs ")"
        if (noop > 0) printf "closed-loop maximum of the no-op baseline: %d/s (server CPU %d%%, generator CPU %d%%)\n", noop, noop_srv, noop_gen
        if (real > 0) printf "closed-loop maximum of the real service: %d/s (server CPU %d%%, generator CPU %d%%)\n", real, real_srv, real_gen
        # A generator near a full core while the server has headroom measured itself.
        if (noop > 0 && noop_gen >= 90 && noop_srv < 90) print "WARNING: the no-op baseline was limited by the generator (its core was busy, the server'\''s was not): the baseline, and so the ratio below, understate the server stack'\''s maximum"
        if (real > 0 && real_gen >= 90 && real_srv < 90) print "WARNING: the real service'\''s maximum was limited by the generator, not the server"
        # The bound: a no-op call'\''s server CPU, and the engine'\''s own cost on top of it.
        bound = 0
        if (noop > 0 && noop_srv > 0 && engine_us > 0) {
            call_us = noop_srv / 100 / noop * 1e6
            bound = call_us / (call_us + engine_us)
        }
        if (rule == "share" && noop > 0 && real > 0) printf "real / no-op: %.0f%% (target: at least 80%%): %s\n", 100 * real / noop, (real >= 0.8 * noop) ? "met" : "MISSED"
        if (rule == "share" && bound > 0) printf "bound: a no-op call costs the server %.1f us of CPU and the engine alone %.1f us a review (hot loop), so the real service can reach at most %.0f%% of the no-op'\''s maximum (80%% needs the engine under %.1f us)\n", call_us, engine_us, 100 * bound, call_us / 4
        if (rule == "bound" && bound > 0) printf "bound: a no-op call costs the server %.1f us of CPU and the engine alone %.1f us a review (hot loop), so the real webhook can reach at most %.0f%% of the no-op'\''s maximum\n", call_us, engine_us, 100 * bound
        if (rule == "bound" && noop > 0 && real > 0 && bound > 0) printf "real / no-op: %.0f%%, %.0f%% of the bound (target: at least 90%% of it): %s\n", 100 * real / noop, 100 * real / noop / bound, (real / noop >= 0.9 * bound) ? "met" : "MISSED"
        if (rule == "bound" && noop > 0 && real > 0 && bound == 0) printf "real / no-op: %.0f%% (no bound: the engine'\''s cost was not measured)\n", 100 * real / noop
        # The service alone: its whole review path (no transport) in place of the engine,
        # and what the target leaves for everything but the engine.
        if (rule == "bound" && bound > 0 && review_us > 0 && with_path == 1) {
            path_bound = call_us / (call_us + review_us)
            printf "review-path bound: the review path alone (parse, policy, engine, answer, its decision event published) costs %.1f us a review, so the service can reach at most %.0f%% of the no-op'\''s maximum", review_us, 100 * path_bound
            if (real > 0 && noop > 0) printf "; it reached %.0f%% of that", 100 * real / noop / path_bound
            printf "\n"
            slack = (call_us + engine_us) / 0.9 - call_us - engine_us
            printf "the target leaves %.1f us a review beyond the no-op and the engine ((%.1f + %.1f) / 0.9 - both); the review path spends %.1f us beyond the engine", slack, call_us, engine_us, review_us - engine_us
            if (publish_us > 0) printf ", and publishing its decision event alone costs %.1f us: %s", publish_us, (publish_us > slack) ? "the target is out of reach by construction while every decision is published" : "within the slack"
            printf "\n"
        }
        print ""
    }' "$TMP/rows"
}

verdicts noop real "gRPC (AdmissionService.Review)" share
for protocol in $PROTOCOLS; do
    verdicts "wh-noop-$protocol" "wh-real-$protocol" "webhook (HTTPS, $protocol), portcullis up" bound
    verdicts "wh-noop-$protocol" "wh-svc-$protocol" "webhook (HTTPS, $protocol), the admission service alone" bound 1
done
if [[ -n ${SVC_DRAINED:-} ]]; then
    echo "the admission service alone, at its drain: $SVC_DRAINED"
fi
