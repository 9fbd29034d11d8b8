# Process plumbing shared by the benchmark scripts (sourced, not run): a temporary folder,
# the processes started and their stop on exit, the wait for a server's ready line.
#
# bench_init NAME: makes $TMP (kept when KEEP=1) and stops every pid in PIDS on exit, after
# calling `bench_cleanup` when the script defines it.
# START_WRAPPER: words put before every command `start` runs (e.g. "taskset -c 0").
# free_port: a free loopback port. start_nats: a nats-server of the script's own.

log() { echo "== $*" >&2; }

bench_init() {
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    PIDS=()
    trap bench_exit EXIT
    trap 'exit 130' INT TERM
}

bench_exit() {
    local pid
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if declare -F bench_cleanup >/dev/null; then
        bench_cleanup
    fi
    if [[ ${KEEP:-0} == 1 ]]; then
        echo "files kept in $TMP" >&2
    else
        rm -rf "$TMP"
    fi
}

# start NAME PATTERN CMD...: starts CMD (after $START_WRAPPER) with stdout in $TMP/NAME.out,
# waits (60 s at most) for a stdout line starting with PATTERN; sets STARTED_PID.
start() {
    local name=$1 pattern=$2
    shift 2
    # shellcheck disable=SC2086 # START_WRAPPER is a list of words
    ${START_WRAPPER:-} "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    local waited=0
    until grep -q "^$pattern" "$TMP/$name.out" 2>/dev/null; do
        if ! kill -0 "$STARTED_PID" 2>/dev/null; then
            log "$name exited before it was ready:"
            cat "$TMP/$name.err" >&2
            exit 1
        fi
        if ((waited >= 600)); then
            log "$name not ready after 60 s"
            exit 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
}

# url_of NAME PATTERN: the rest of the first stdout line of NAME that starts with PATTERN.
url_of() {
    grep -m1 "^$2" "$TMP/$1.out" | sed "s|^$2||" | tr -d '[:space:]'
}

# stop PID...: SIGTERM to each, then wait for each to drain and exit.
stop() {
    local pid
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

# free_port: a TCP port free on 127.0.0.1 now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_nats SERVER [WRAPPER...]: nats-server SERVER (JetStream in $TMP/js) on free loopback
# ports, run after WRAPPER's words (e.g. taskset -c 1); waits for its health endpoint. Sets
# NATS_URL, NATS_MONITOR (the monitoring port) and NATS_PID.
start_nats() {
    local server=$1
    shift
    local port
    port=$(free_port)
    NATS_MONITOR=$(free_port)
    NATS_URL=nats://127.0.0.1:$port
    "$@" "$server" -a 127.0.0.1 -p "$port" -m "$NATS_MONITOR" -js -sd "$TMP/js" >"$TMP/nats.log" 2>&1 &
    NATS_PID=$!
    PIDS+=("$NATS_PID")
    local _
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$NATS_MONITOR/healthz" >/dev/null && return
        sleep 0.1
    done
    log "nats-server not healthy after 10 s:"
    cat "$TMP/nats.log" >&2
    exit 1
}
