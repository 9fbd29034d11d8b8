#!/usr/bin/env bash
# The scaling benchmark of issue 21: the real services as separate processes in distributed
# mode (`portcullis serve ...`, release build), on a fresh database of the machine's
# PostgreSQL and a nats-server of their own, with 1 and then 2 replicas of each stage:
#
#   admission   closed-loop reviews (the review, policy and generator of bench-admission.sh)
#               over every admission replica: reviews/s, the reviews each replica answered
#               (counted by the generator per endpoint, and by each replica at drain), the
#               CPU seconds of each replica process (/proc);
#   telemetry   the decision events the admission run left in JetStream, stored by 1 then 2
#               telemetry replicas sharing the work consumer: events/s stored, what each
#               replica stored (its drain line), rows in tm_events against events published;
#   signature   closed-loop reviews through one admission replica with an image
#               verification rule, answered by 1 then 2 signature replicas (the NATS queue
#               group): reviews/s and the verifications each replica answered (its drain
#               line); the images are pushed to a local docker-registry, unsigned, so every
#               answer after the first per image is the service's cached verdict;
#   continuous  TENANTS tenants of one cluster of PODS pods each (synced with `portcullis
#               inventory sync`), then a policy change in every tenant: the time until every
#               `policy.changed` is handled (the work consumer empty, from NATS monitoring),
#               and the clusters and pods each replica re-evaluated (its drain line).
#
# Every phase checks its totals: nothing lost, nothing counted twice when a second replica
# joins. On 2 cores the figures show how the work splits, not that throughput doubles: the
# replicas, the generator, PostgreSQL and NATS share the same two cores.
#
# Usage: crates/loadgen/bench-scaling.sh                       (~5 minutes after the build)
#        SKIP_BUILD=1 DURATION=10s STAGES="admission telemetry" crates/loadgen/bench-scaling.sh
# Needs: PostgreSQL on $PG_URL (psql on PATH), nats-server
# ($PORTCULLIS_NATS_SERVER or .venv/bin/nats-server), docker-registry (signature), curl,
# jq, python3. Everything it starts is stopped on exit and its database dropped; its files
# go to a temporary folder, kept when KEEP=1.
set -euo pipefail

# ---------------------------------------------------------------------------------------
# Settings (environment overrides).
DURATION=${DURATION:-20s}          # measured window of each admission / signature row
WARMUP=${WARMUP:-3s}               # unrecorded load before it
CONCURRENCY=${CONCURRENCY:-64}     # closed-loop callers
CONNECTIONS=${CONNECTIONS:-16}     # HTTP/2 connections, spread over the replicas
REPLICAS=${REPLICAS:-"1 2"}        # replica counts, one row each
STAGES=${STAGES:-"admission telemetry signature continuous"}
TENANTS=${TENANTS:-20}             # continuous: tenants (one policy.changed each)
PODS=${PODS:-2000}                 # continuous: pods of each tenant's cluster
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
SKIP_BUILD=${SKIP_BUILD:-0}        # 1: use the binaries already in $BIN
REVIEW=${REVIEW:-crates/engine/benches/data/review-8k.json}
POLICY=${POLICY:-crates/loadgen/data/policy-15-rules.yaml}
POLICY_NAME=${POLICY_NAME:-bench.admission15}
# The generator sleeps while it waits (no --spin): a spinning generator would take a whole
# core from the replicas it measures on a 2-core machine.
LOAD_FLAGS=${LOAD_FLAGS:-}
# ---------------------------------------------------------------------------------------

cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
NATS_SERVER=${PORTCULLIS_NATS_SERVER:-$ROOT/.venv/bin/nats-server}
DB=pc_scaling_$$
DB_CREATED=0
# shellcheck source=crates/loadgen/bench-lib.sh
. "$ROOT/crates/loadgen/bench-lib.sh"
bench_init bench-scaling
bench_cleanup() {
    if [[ $DB_CREATED == 1 ]]; then
        psql -X -q -d "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    fi
}
die() { log "$*"; exit 1; }

# CPU ticks (user + system, 1/100 s) of a process; 0 once it is gone.
ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

now() { date +%s.%N; }

# start_url NAME PATTERN CMD...: `start`, then the rest of the ready line in STARTED_URL.
start_url() {
    start "$@"
    STARTED_URL=$(url_of "$1" "$2")
}

# drained NAME KEY: KEY's count in the drain line NAME printed on stderr (`... drained: KEY=N ...`).
drained() {
    local value
    value=$(grep -m1 ' drained: ' "$TMP/$1.err" | grep -o "\b$2=[0-9]*" | cut -d= -f2 || true)
    echo "${value:-0}"
}

# serve NAME SERVICE ARGS...: `portcullis serve SERVICE` on a free loopback port, its
# address in ${URL[NAME]} and pid in ${PID[NAME]}.
declare -A URL PID
serve() {
    local name=$1 service=$2
    shift 2
    start_url "$name" "portcullis $service listening on " "$BIN/portcullis" serve "$service" \
        --listen 127.0.0.1:0 "$@"
    URL[$name]=$STARTED_URL
    PID[$name]=$STARTED_PID
}

remote_flags() { echo --policy-store-url "${URL[store]}" --nats-url "$NATS_URL"; }

# The JetStream work consumer NAME's state: `pending ack_pending delivered` (NATS monitoring).
consumer_state() {
    curl -sf "http://127.0.0.1:$NATS_MONITOR/jsz?consumers=true" | jq -r --arg name "$1" '
        [.account_details[]?.stream_detail[]?.consumer_detail[]? | select(.name == $name)][0]
        | if . == null then "0 0 0" else "\(.num_pending) \(.num_ack_pending) \(.delivered.consumer_seq)" end'
}

psql_value() { psql -X -q -t -A -d "$PG_URL/$DB" -c "$1"; }

# A row of the final table.
ROWS=()
row() { ROWS+=("$*"); }

# cpu_line LABEL PID... : "label: a s, b s" of the CPU ticks since $CPU0 (an associative
# array of start ticks by pid).
declare -A CPU0
cpu_mark() { local pid; for pid in "$@"; do CPU0[$pid]=$(ticks "$pid"); done; }
cpu_of() { printf '%.2f' "$(echo "scale=2; ($(ticks "$1") - ${CPU0[$1]:-0}) / 100" | bc)"; }

# ---------------------------------------------------------------------------------------
if [[ $SKIP_BUILD != 1 ]]; then
    log "building (release)"
    cargo build --release -p portcullis-cli -p portcullis-loadgen
fi
for tool in psql curl jq python3 bc; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
[[ -x $BIN/portcullis && -x $BIN/portcullis-loadgen ]] || die "no release binaries in $BIN"
[[ -x $NATS_SERVER ]] || die "no nats-server at $NATS_SERVER (set PORTCULLIS_NATS_SERVER)"

log "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, kernel $(uname -r);" \
    "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); load average now: $(cut -d' ' -f1-3 /proc/loadavg)"

psql -X -q -d "$PG_URL/postgres" -c "CREATE DATABASE $DB" >/dev/null
DB_CREATED=1
start_nats "$NATS_SERVER"

export RUST_LOG=${RUST_LOG:-warn}
PORTCULLIS_SERVICE_TOKEN=svc-bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
PORTCULLIS_OPERATOR_KEY=op-bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
export PORTCULLIS_SERVICE_TOKEN PORTCULLIS_OPERATOR_KEY
unset PORTCULLIS_API_KEY PORTCULLIS_SERVER

serve store policy-store --database-url "$PG_URL/$DB" --nats-url "$NATS_URL"
export PORTCULLIS_SERVER=${URL[store]}
log "database $DB, nats-server $NATS_URL (monitoring :$NATS_MONITOR), policy store ${URL[store]} (pid ${PID[store]})"

# tenant ID: creates a tenant; its admin key in ADMIN_KEY.
tenant() {
    ADMIN_KEY=$("$BIN/portcullis" tenant create "$1")
}

# cluster NAME POLICY_FILE POLICY_NAME: applies the policy (with $ADMIN_KEY) and creates a
# cluster with it; its connector key in CONNECTOR_KEY.
cluster() {
    PORTCULLIS_API_KEY=$ADMIN_KEY "$BIN/portcullis" policy apply -f "$2" >/dev/null
    CONNECTOR_KEY=$(PORTCULLIS_API_KEY=$ADMIN_KEY "$BIN/portcullis" cluster create "$1" --policy "$3")
}

# load LABEL KEY PIDS -- SERVERS...: the closed-loop admission run over SERVERS; the report
# in $TMP/LABEL.json, the CPU seconds of each of PIDS over the measured window in
# $TMP/LABEL.cpu (one "pid seconds" line each).
load() {
    local label=$1 key=$2 pids=$3 started
    shift 4
    local servers=()
    for url in "$@"; do servers+=(--server "$url"); done
    # shellcheck disable=SC2086 # LOAD_FLAGS is a list of flags
    "$BIN/portcullis-loadgen" admission "${servers[@]}" --key "$key" --review "$REVIEW" \
        --closed-loop --concurrency "$CONCURRENCY" --connections "$CONNECTIONS" \
        --duration "$DURATION" --warmup "$WARMUP" --label "$label" --json $LOAD_FLAGS \
        >"$TMP/$label.json" &
    local generator=$!
    # CPU over the measured window: from the end of the warm-up to the generator's exit.
    sleep "$(echo "$WARMUP" | sed 's/s$//')"
    # shellcheck disable=SC2086 # a list of pids
    cpu_mark $pids
    started=$(now)
    wait "$generator" || die "the generator failed in $label"
    : >"$TMP/$label.cpu"
    for pid in $pids; do echo "$pid $(cpu_of "$pid")" >>"$TMP/$label.cpu"; done
    echo "$(now) - $started" | bc >"$TMP/$label.window"
}

# split LABEL: "a / b" of the per-server ok counts (and their shares) of a run.
split() {
    jq -r '[.per_server[] | "\(.ok)"] | join(" / ")' "$TMP/$1.json"
}
calls_sent() { jq -r '.notes.calls' "$TMP/$1.json" | cut -d' ' -f1; }

CHECKS=()
check() { # check WHAT EXPECTED ACTUAL
    if [[ $2 == "$3" ]]; then CHECKS+=("ok    $1: $3"); else CHECKS+=("FAIL  $1: expected $2, got $3"); fi
}

ADMISSION_RAN=0
# ---------------------------------------------------------------------------------------
if [[ " $STAGES " == *" admission "* || " $STAGES " == *" telemetry "* ]]; then
    tenant bench
    cluster bench-1 "$POLICY" "$POLICY_NAME"
    BENCH_ADMIN=$ADMIN_KEY
    BENCH_KEY=$CONNECTOR_KEY
    # Telemetry's work consumer is created with its first replica and takes the stream
    # from its start: the first admission run's events are its first backlog.
    for n in $REPLICAS; do
        log "admission: $n replica(s), closed loop x$CONCURRENCY over $CONNECTIONS connections, $WARMUP + $DURATION"
        names=() urls=() pids=""
        for i in $(seq "$n"); do
            # shellcheck disable=SC2046 # a list of flags
            serve "adm$n-$i" admission $(remote_flags) --rate-limit 0
            names+=("adm$n-$i") urls+=("${URL[adm$n-$i]}") pids+="${PID[adm$n-$i]} "
        done
        load "admission-$n" "$BENCH_KEY" "$pids" -- "${urls[@]}"
        # shellcheck disable=SC2086 # a list of pids
        stop $pids
        decisions=0 published=0 dropped=0 cpus=() answered=()
        for name in "${names[@]}"; do
            decisions=$((decisions + $(drained "$name" decisions)))
            published=$((published + $(drained "$name" published)))
            dropped=$((dropped + $(drained "$name" dropped)))
            answered+=("$(drained "$name" decisions)")
            cpus+=("$(awk -v p="${PID[$name]}" '$1 == p { print $2 }' "$TMP/admission-$n.cpu") s")
        done
        report=$TMP/admission-$n.json
        row "| admission | $n | $(jq -r '.achieved_per_s | floor' "$report") reviews/s | $(jq -r '.latency_ms.p99' "$report") ms |" \
            "$(split "admission-$n") | $(IFS=/; echo "${answered[*]}") | $(IFS=/; echo "${cpus[*]}") |" \
            "$(jq -r '(.errors | add // 0) + .dropped' "$report") |"
        check "admission x$n: reviews answered by the replicas = reviews sent" "$(calls_sent "admission-$n")" "$decisions"
        check "admission x$n: decision events published = decisions (dropped $dropped)" "$decisions" "$published"
        check "admission x$n: per-server ok add up to the total" "$(jq -r '.ok' "$report")" "$(jq -r '[.per_server[].ok] | add' "$report")"
        ADMISSION_RAN=1

        if [[ " $STAGES " == *" telemetry "* ]]; then
            log "telemetry: $n consumer(s) storing the $published decision events of that run"
            before=$(psql_value "SELECT count(*) FROM tm_events" 2>/dev/null || echo 0)
            names=() pids=""
            t0=$(now)
            for i in $(seq "$n"); do
                # shellcheck disable=SC2046 # a list of flags
                serve "tm$n-$i" telemetry $(remote_flags) --database-url "$PG_URL/$DB"
                names+=("tm$n-$i") pids+="${PID[tm$n-$i]} "
            done
            # shellcheck disable=SC2086 # a list of pids
            cpu_mark $pids
            target=$((before + published)) stored=$before waited=0
            until ((stored >= target)) || ((waited > 3000)); do
                sleep 0.2
                waited=$((waited + 1))
                stored=$(psql_value "SELECT count(*) FROM tm_events" 2>/dev/null || echo "$before")
            done
            seconds=$(echo "$(now) - $t0" | bc)
            cpus=()
            for name in "${names[@]}"; do cpus+=("$(cpu_of "${PID[$name]}") s"); done
            # shellcheck disable=SC2086 # a list of pids
            stop $pids
            per=() sum=0 dups=0
            for name in "${names[@]}"; do
                per+=("$(drained "$name" stored)")
                sum=$((sum + $(drained "$name" stored)))
                dups=$((dups + $(drained "$name" duplicates)))
            done
            rows_now=$(psql_value "SELECT count(*) FROM tm_events")
            row "| telemetry | $n | $(echo "scale=0; $published / $seconds" | bc) events/s stored ($published in $(printf %.1f "$seconds") s, start-up included) | - | - |" \
                "$(IFS=/; echo "${per[*]}") stored | $(IFS=/; echo "${cpus[*]}") | duplicates $dups |"
            check "telemetry x$n: rows added = events published" "$published" "$((rows_now - before))"
            check "telemetry x$n: stored by the replicas = events published" "$published" "$sum"
        fi
    done
fi

# ---------------------------------------------------------------------------------------
if [[ " $STAGES " == *" signature "* ]]; then
    command -v docker-registry >/dev/null || die "docker-registry not found (signature stage)"
    REGISTRY_PORT=$(free_port)
    REGISTRY=127.0.0.1:$REGISTRY_PORT
    cat >"$TMP/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $TMP/registry
http:
  addr: $REGISTRY
  secret: portcullis-bench-secret
EOF
    docker-registry serve "$TMP/registry.yml" >"$TMP/registry.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do curl -sf "http://$REGISTRY/v2/" >/dev/null && break; sleep 0.1; done

    # push REPO TAG: an image of one small layer (unsigned); prints its manifest digest.
    push() {
        local repo=$1 tag=$2 dir=$TMP/push location blob digest
        mkdir -p "$dir"
        printf '%s' "layer of $repo:$tag" >"$dir/layer"
        printf '%s' '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$dir/config"
        for blob in layer config; do
            digest=sha256:$(sha256sum "$dir/$blob" | cut -d' ' -f1)
            location=$(curl -sf -X POST -D - -o /dev/null "http://$REGISTRY/v2/$repo/blobs/uploads/" |
                tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
            [[ $location == http* ]] || location=http://$REGISTRY$location
            [[ $location == *\?* ]] && location="$location&digest=$digest" || location="$location?digest=$digest"
            curl -sf -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$dir/$blob" "$location" >/dev/null
            eval "${blob}_digest=$digest ${blob}_size=$(stat -c %s "$dir/$blob")"
        done
        # shellcheck disable=SC2154 # set by the eval above
        printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%s}]}' \
            "$config_digest" "$config_size" "$layer_digest" "$layer_size" >"$dir/manifest"
        curl -sf -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
            --data-binary "@$dir/manifest" "http://$REGISTRY/v2/$repo/manifests/$tag" >/dev/null
        echo "sha256:$(sha256sum "$dir/manifest" | cut -d' ' -f1)"
    }

    # The review with its images on the local registry, each pushed there, by digest.
    cp "$REVIEW" "$TMP/review-signed.json"
    images=0
    while read -r image; do
        path=${image#registry.example.com/}
        repo=${path%%:*}
        rest=${path#*:}
        tag=${rest%%@*}
        digest=$(push "$repo" "$tag")
        sed -i "s|$image|$REGISTRY/$repo:$tag@$digest|g" "$TMP/review-signed.json"
        images=$((images + 1))
    done < <(grep -o '"image": *"[^"]*"' "$REVIEW" | sed 's/.*"\(registry[^"]*\)"/\1/' | sort -u)
    # The same policy on the local registry, and a verification rule on every image of it
    # (log only: the answer stays the review's; the verdict is "not verified", no signature).
    sed -e "s|registry.example.com|$REGISTRY|g" -e "s|^name: .*|name: bench.signature|" "$POLICY" >"$TMP/policy-signed.yaml"
    cat >>"$TMP/policy-signed.yaml" <<EOF
  imageVerification:
    - name: bench-signed
      action: log
      attestors: {any: [bench-signer]}
      conditions:
        - {type: match, resourceFilter: registry, operator: equals, value: "$REGISTRY"}
EOF
    python3 - "$TMP/attestor.yaml" <<'EOF'
import subprocess, sys
# A P-256 public key for the attestor (no image is signed with it).
key = subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout"], capture_output=True, check=True).stdout
pem = subprocess.run(["openssl", "ec", "-pubout"], input=key, capture_output=True, check=True).stdout.decode()
with open(sys.argv[1], "w") as f:
    f.write("name: bench-signer\ntype: cosignPublicKey\npublicKey: |\n" + "".join("  " + l + "\n" for l in pem.strip().splitlines()))
EOF
    # No per-tenant limit on the signature replicas (its default, 5,000 verifications/s a
    # tenant, would refuse most of this load: the row would measure the limit, not the split).
    printf '[signature.rate_limit.default]\nper_second = 0.0\nburst = 0\n' >"$TMP/signature-unlimited.toml"
    tenant bench-sig
    PORTCULLIS_API_KEY=$ADMIN_KEY "$BIN/portcullis" attestor apply -f "$TMP/attestor.yaml" >/dev/null
    cluster sig-1 "$TMP/policy-signed.yaml" bench.signature
    SIG_KEY=$CONNECTOR_KEY
    log "signature: $images images pushed to $REGISTRY (unsigned); one admission replica"
    for n in $REPLICAS; do
        log "signature: $n replica(s)"
        names=() pids=""
        for i in $(seq "$n"); do
            # shellcheck disable=SC2046 # a list of flags
            serve "sig$n-$i" signature $(remote_flags) --config "$TMP/signature-unlimited.toml"
            names+=("sig$n-$i") pids+="${PID[sig$n-$i]} "
        done
        # shellcheck disable=SC2046 # a list of flags
        serve "sigadm$n" admission $(remote_flags) --rate-limit 0
        REVIEW_SAVED=$REVIEW
        REVIEW=$TMP/review-signed.json
        load "signature-$n" "$SIG_KEY" "$pids ${PID[sigadm$n]}" -- "${URL[sigadm$n]}"
        REVIEW=$REVIEW_SAVED
        stop "${PID[sigadm$n]}"
        # shellcheck disable=SC2086 # a list of pids
        stop $pids
        per=() sum=0 errors=0 cpus=()
        for name in "${names[@]}"; do
            per+=("$(drained "$name" verifications)")
            sum=$((sum + $(drained "$name" verifications)))
            errors=$((errors + $(drained "$name" verify_errors)))
            cpus+=("$(awk -v p="${PID[$name]}" '$1 == p { print $2 }' "$TMP/signature-$n.cpu") s")
        done
        report=$TMP/signature-$n.json
        decisions=$(drained "sigadm$n" decisions)
        row "| signature (through 1 admission) | $n | $(jq -r '.achieved_per_s | floor' "$report") reviews/s | $(jq -r '.latency_ms.p99' "$report") ms |" \
            "- | $(IFS=/; echo "${per[*]}") verifications | $(IFS=/; echo "${cpus[*]}") | $(jq -r '(.errors | add // 0) + .dropped' "$report") (verify errors $errors) |"
        check "signature x$n: reviews answered = reviews sent" "$(calls_sent "signature-$n")" "$decisions"
        check "signature x$n: verifications answered = $images per review" "$((decisions * images))" "$sum"
    done
fi

# ---------------------------------------------------------------------------------------
if [[ " $STAGES " == *" continuous "* ]]; then
    log "continuous: $TENANTS tenants, one cluster of $PODS pods each"
    # The pods: the review's pod template (3 containers, an init container) as a running pod.
    python3 - "$REVIEW" "$PODS" "$TMP/pods.jsonl" <<'EOF'
import json, sys
review, count, out = json.load(open(sys.argv[1])), int(sys.argv[2]), sys.argv[3]
template = review["request"]["object"]["spec"]["template"]
with open(out, "w") as f:
    for i in range(count):
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": f"bench-{i:06d}", "namespace": f"ns-{i % 20}", "uid": f"00000000-0000-4000-8000-{i:012d}",
                "labels": dict(template["metadata"].get("labels", {}), pod=str(i)),
            },
            "spec": dict(template["spec"], nodeName=f"node-{i % 50}"),
            "status": {"phase": "Running"},
        }
        f.write(json.dumps(pod, separators=(",", ":")) + "\n")
EOF
    # Two revisions of one policy: each change of rule actions re-evaluates every pod.
    sed -e "s|^name: .*|name: bench.continuous|" "$POLICY" >"$TMP/policy-c1.yaml"
    sed -e "s|^name: .*|name: bench.continuous|" -e "s|action: log|action: block|" "$POLICY" >"$TMP/policy-c2.yaml"
    # shellcheck disable=SC2046 # a list of flags
    serve cont-setup continuous $(remote_flags) --database-url "$PG_URL/$DB"
    declare -a CONT_ADMIN
    t0=$(now)
    for t in $(seq "$TENANTS"); do
        tenant "cont-$t"
        CONT_ADMIN[t]=$ADMIN_KEY
        cluster "c-$t" "$TMP/policy-c1.yaml" bench.continuous
        PORTCULLIS_API_KEY=$CONNECTOR_KEY "$BIN/portcullis" inventory sync -f "$TMP/pods.jsonl" \
            --continuous-server "${URL[cont-setup]}" >/dev/null
    done
    log "continuous: inventories synced in $(printf %.1f "$(echo "$(now) - $t0" | bc)") s"
    # The set-up's own events (clusters created) handled before the measured replicas start,
    # so that their counts hold only the measured changes.
    until [[ $(consumer_state continuous | cut -d' ' -f1,2) == "0 0" ]]; do sleep 0.2; done
    stop "${PID[cont-setup]}"
    revision=2
    for n in $REPLICAS; do
        log "continuous: $n replica(s), a policy change in each of the $TENANTS tenants"
        names=() pids=""
        for i in $(seq "$n"); do
            # shellcheck disable=SC2046 # a list of flags
            serve "cont$n-$i" continuous $(remote_flags) --database-url "$PG_URL/$DB"
            names+=("cont$n-$i") pids+="${PID[cont$n-$i]} "
        done
        # Wait for the consumer to be idle (start-up events handled), then change.
        until [[ $(consumer_state continuous | cut -d' ' -f1,2) == "0 0" ]]; do sleep 0.2; done
        base=$(consumer_state continuous | cut -d' ' -f3)
        # shellcheck disable=SC2086 # a list of pids
        cpu_mark $pids
        t0=$(now)
        for t in $(seq "$TENANTS"); do
            PORTCULLIS_API_KEY=${CONT_ADMIN[t]} "$BIN/portcullis" policy apply -f "$TMP/policy-c$revision.yaml" >/dev/null
        done
        applied=$(echo "$(now) - $t0" | bc)
        # Done: every change delivered and acked (each handler re-evaluated its tenant's cluster).
        waited=0
        while true; do
            read -r pending acking delivered < <(consumer_state continuous)
            ((delivered - base >= TENANTS && pending == 0 && acking == 0)) && break
            ((waited < 6000)) || { log "continuous: not idle after 20 minutes"; break; }
            sleep 0.05
            waited=$((waited + 1))
        done
        seconds=$(echo "$(now) - $t0" | bc)
        cpus=()
        for name in "${names[@]}"; do cpus+=("$(cpu_of "${PID[$name]}") s"); done
        # shellcheck disable=SC2086 # a list of pids
        stop $pids
        clusters=() pods=() csum=0 psum=0
        for name in "${names[@]}"; do
            clusters+=("$(drained "$name" clusters_reevaluated)")
            pods+=("$(drained "$name" pods_judged)")
            csum=$((csum + $(drained "$name" clusters_reevaluated)))
            psum=$((psum + $(drained "$name" pods_judged)))
        done
        row "| continuous | $n | $TENANTS clusters x $PODS pods re-evaluated in $(printf %.2f "$seconds") s (changes applied in $(printf %.2f "$applied") s) | - | - |" \
            "$(IFS=/; echo "${clusters[*]}") clusters, $(IFS=/; echo "${pods[*]}") pods | $(IFS=/; echo "${cpus[*]}") | - |"
        check "continuous x$n: clusters re-evaluated = tenants changed" "$TENANTS" "$csum"
        check "continuous x$n: pods judged = pods of those clusters" "$((TENANTS * PODS))" "$psum"
        revision=$((3 - revision))
    done
fi

# ---------------------------------------------------------------------------------------
echo
echo "| stage | replicas | throughput | p99 | split by the generator (ok per replica) | split by the replicas (drain lines) | CPU per replica | errors |"
echo "|---|---:|---|---:|---|---|---|---|"
for r in "${ROWS[@]}"; do echo "$r"; done
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%s\n' "${CHECKS[@]}"
if printf '%s\n' "${CHECKS[@]}" | grep -q '^FAIL'; then
    exit 1
fi
