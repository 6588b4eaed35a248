# One image, both binaries. Build: docker build -t mcp-gateway .
# Run the gateway:  docker run mcp-gateway gateway -c /etc/gateway/gateway.toml
# Run a backend:    docker run mcp-gateway backend
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY gateway gateway
COPY backend backend
COPY tests tests
RUN cargo build --release --locked -p gateway -p backend \
    && strip target/release/gateway target/release/backend

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates tini curl libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd -g 1001 app && useradd -u 1001 -g app -d /app -s /usr/sbin/nologin app \
    && mkdir -p /app/openspec /etc/gateway/tls /run/gateway && chown -R app:app /app /run/gateway
COPY --from=build /src/target/release/gateway /src/target/release/backend /usr/local/bin/
COPY conf/gateway.toml /etc/gateway/gateway.toml
COPY examples/workspace /app/example-workspace
USER app
WORKDIR /app
ENV PORT=3000 HOST=0.0.0.0 WORKING_DIRECTORY=/app/openspec LOG_LEVEL=info
EXPOSE 80 443 3000 9464
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["backend"]
