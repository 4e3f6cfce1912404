# syntax=docker/dockerfile:1
#
# The orgadmin image: `orgadmin-service` and `orgadmin-worker`, built from the
# locked dependencies, on a distroless runtime (glibc and libgcc only: no
# shell, no package manager, no compiler) as a numeric non-root user, so
# Kubernetes' runAsNonRoot can check it.
#
#   docker build -t orgadmin:0.1.0 .
#   docker run --rm -p 50051:50051 orgadmin:0.1.0 standalone    # a trial on SQLite
#
# protoc comes from the protoc-bin-vendored crate: no protobuf packages here.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the crate downloads and target/ between builds; the
# binaries are copied out of the cached target/ before the step ends.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p orgadmin-service -p orgadmin-worker \
    && install -D -m 0755 target/release/orgadmin-service /out/bin/orgadmin-service \
    && install -D -m 0755 target/release/orgadmin-worker /out/bin/orgadmin-worker \
    && install -d -m 0700 /out/var/lib/orgadmin

# Debian 12 with glibc, libgcc and CA certificates (bookworm, like the builder).
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=builder /out/bin/orgadmin-service /out/bin/orgadmin-worker /usr/local/bin/
# The data folder (SQLite file, generated keys, .eml outbox): the process
# makes data/ inside it itself, mode 0700, so it must own the parent.
COPY --from=builder --chown=65532:65532 /out/var/lib/orgadmin /var/lib/orgadmin
ENV ORGADMIN_LISTEN=0.0.0.0:50051 \
    ORGADMIN_WORKER_HEALTH_LISTEN=0.0.0.0:50052 \
    ORGADMIN_DATA_DIR=/var/lib/orgadmin/data \
    ORGADMIN_LOG_FORMAT=json
WORKDIR /var/lib/orgadmin
# nonroot in distroless; numeric so runAsNonRoot can verify it.
USER 65532:65532
# gRPC (service) and the worker's gRPC health.
EXPOSE 50051 50052
ENTRYPOINT ["/usr/local/bin/orgadmin-service"]
CMD ["serve"]
