# One image for every service: `portcullis serve <service>` (and the CLI, `certs init`,
# `health`). Build: docker build -t ghcr.io/portcullis/portcullis .
#
# The builder compiles the release binary with the lockfile as committed (protoc is vendored
# by protoc-bin-vendored: nothing to install). Builds target x86-64-v3 as the repository's
# .cargo/config.toml says; pass --build-arg RUSTFLAGS=-Ctarget-cpu=x86-64 for older CPUs.
FROM docker.io/library/rust:1.95-bookworm AS builder
# Unset unless given: an empty RUSTFLAGS would replace .cargo/config.toml's flags.
ARG RUSTFLAGS
ENV CARGO_INCREMENTAL=0
WORKDIR /src
COPY . .
# The mount points are made owned by the runtime user: a named volume mounted there starts
# with this owner, so `certs init` can write into it without root.
# (No BuildKit cache mounts: the file builds with the classic builder too, e.g. docker-compose v1.)
RUN cargo build --release --locked -p portcullis-cli \
    && install -D -m 0755 target/release/portcullis /out/portcullis \
    && install -d -m 0750 -o 65532 -g 65532 /out/certs /out/data

# distroless cc: glibc and libgcc only (the binary links TLS statically through rustls), no
# shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/portcullis /usr/local/bin/portcullis
COPY --from=builder --chown=65532:65532 /out/certs /certs
COPY --from=builder --chown=65532:65532 /out/data /data
# distroless's `nonroot` user, by number so that Kubernetes' runAsNonRoot can check it.
USER 65532:65532
WORKDIR /data
ENTRYPOINT ["portcullis"]
CMD ["--help"]
