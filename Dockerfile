# One image, both binaries: the gateway (ingress) and the backend (tool server), run as
# uid/gid 1001 under tini. docker-compose.yml is the deployment; see the README.
#
#   docker build -t mcp-gateway .                          compile in the Rust stage (needs a registry)
#   podman build --format docker --build-arg BINARIES=prebuilt --build-arg BASE_IMAGE=... -t mcp-gateway .
#                                                          take target/image/{gateway,backend} from a
#                                                          host build instead (`make image` does this)
#   docker run mcp-gateway gateway                         the ingress (/etc/gateway/gateway.toml)
#   docker run -e SEED_WORKSPACE=example mcp-gateway backend
ARG BASE_IMAGE=debian:bookworm-slim
ARG BINARIES=build

FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY gateway gateway
COPY backend backend
COPY otlp otlp
COPY tests tests
# Pingora's proxy crate with the workspace's patch, and the benchmarks' baseline (a workspace
# member, so the manifest must find it).
COPY vendor vendor
COPY bench/bare-pingora bench/bare-pingora
RUN cargo build --release --locked -p gateway -p backend \
    && mkdir -p target/image \
    && strip -o target/image/gateway target/release/gateway \
    && strip -o target/image/backend target/release/backend

# The same two files from a release build on the host (stripped into target/image/).
FROM scratch AS prebuilt
COPY target/image/gateway target/image/backend /src/target/image/

FROM ${BINARIES} AS binaries

FROM ${BASE_IMAGE} AS runtime
# ca-certificates (upstream TLS), tini (pid 1), curl (health checks), libssl3 (Pingora's TLS),
# openssl (the self-signed certificate of a first start). Skipped when the base has them.
RUN pkgs="ca-certificates tini curl libssl3 openssl"; \
    if ! dpkg-query -W $pkgs >/dev/null 2>&1; then \
      apt-get update && apt-get install -y --no-install-recommends $pkgs && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd -g 1001 app && useradd -u 1001 -g app -d /app -M -s /usr/sbin/nologin app \
    && mkdir -p /app/workspace /etc/gateway /var/lib/gateway/tls /run/gateway /usr/share/mcp-gateway \
    && chown app:app /app /app/workspace /var/lib/gateway /var/lib/gateway/tls /run/gateway
COPY --from=binaries /src/target/image/gateway /src/target/image/backend /usr/local/bin/
COPY scripts/entrypoint.sh /usr/local/bin/entrypoint
COPY conf/gateway/gateway.toml /etc/gateway/gateway.toml
COPY examples/workspace /usr/share/mcp-gateway/example-workspace
USER 1001:1001
WORKDIR /app
ENV PORT=3000 HOST=0.0.0.0 WORKING_DIRECTORY=/app/workspace LOG_LEVEL=info
# The OpenSpec workspace, shared by every backend replica. An empty volume stops the backend
# with a message, unless SEED_WORKSPACE=example.
VOLUME ["/app/workspace"]
EXPOSE 80 443 3000 9464
HEALTHCHECK --interval=10s --timeout=4s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/entrypoint", "healthcheck"]
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/entrypoint"]
CMD ["backend"]
