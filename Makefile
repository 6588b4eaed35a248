# The two commands: `make run` (the whole stack on loopback) and `make test`.
# Everything builds once, in release mode, into one target dir shared by the
# binaries, the tests and the benchmarks.
SHELL := /bin/bash
# rustup's cargo first, also when this shell has not sourced ~/.cargo/env or Debian's older
# cargo is on PATH too (scripts/setup.sh checks the toolchain and says how to install one).
ifneq ($(wildcard $(HOME)/.cargo/bin/cargo),)
export PATH := $(HOME)/.cargo/bin:$(PATH)
endif
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: run test test-containers build image compose-up compose-down lint bench bench-backend bench-gateway bench-store bench-containers bench-cost bench-connections bench-heap bench-streams bench-design setup clean-run

build:
	bash scripts/setup.sh run
	$(CARGO) build --release --workspace --bins

# CONFIG=FILE runs the gateway with another config on the same addresses (conf/examples/
# canary.toml, blue-green.toml); NEW_BACKEND=BIN runs another backend binary on :3002.
run: build
	bash scripts/run-local.sh

test:
	bash scripts/setup.sh test
	$(CARGO) build --release --workspace --bins
	$(CARGO) test --release --workspace --no-fail-fast
	bash scripts/test-vendored.sh
	.venv/bin/pytest -q tests/python
	$(MAKE) --no-print-directory test-containers
	$(MAKE) --no-print-directory lint

# The image and docker-compose.yml for real, with podman and podman-compose (Docker where an
# engine runs): up, SDK over HTTPS, Prometheus, scaling, canary reload, stop, backup/restore.
test-containers:
	bash scripts/setup.sh compose
	$(CARGO) build --release --workspace --bins
	.venv/bin/pytest -q -p no:cacheprovider tests/containers

# The image from the host's release binaries (no registry needed): localhost/mcp-gateway:latest.
image:
	bash scripts/setup.sh compose
	$(CARGO) build --release --workspace --bins
	bash tests/containers/images.sh

# The compose stack on the standard ports (80, 443; Prometheus on 127.0.0.1:9090). Needs .env
# with AUTH_TOKENS (cp .env.example .env). compose-down keeps the volumes (V=1 removes them).
compose-up:
	bash scripts/setup.sh compose
	$(CARGO) build --release --workspace --bins
	bash scripts/compose.sh up

compose-down:
	bash scripts/compose.sh down $(if $(V),-v)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

bench: bench-backend bench-gateway bench-store

bench-backend:
	bash scripts/setup.sh bench
	$(CARGO) build --release --workspace --bins
	bash bench/backend.sh

bench-gateway:
	bash scripts/setup.sh bench
	$(CARGO) build --release --workspace --bins
	bash bench/gateway.sh

bench-store:
	bash scripts/setup.sh bench
	$(CARGO) build --release --workspace --bins
	bash bench/store.sh

# Instructions per request under callgrind: gateway vs bare Pingora vs nginx (bench/cost.py).
bench-cost:
	bash scripts/setup.sh bench
	$(CARGO) build --release --workspace --bins
	bash bench/cost.sh

# Memory per connection: 10,000 idle / half-sent / TLS connections, gateway vs nginx.
bench-connections:
	bash scripts/setup.sh bench
	$(CARGO) build --release --workspace --bins
	python3 bench/connections.py

# What a connection's memory is: heap bytes per connection by allocation site, the gateway under
# valgrind's DHAT with the system allocator (bench/heap.py; its own build in target/heap).
bench-heap:
	bash scripts/setup.sh bench
	$(CARGO) build --release --workspace --bins
	python3 bench/heap.py

# 8,000 open SSE streams with 1 s heartbeats while tool calls run: gateway vs nginx (bench/streams.py).
bench-streams:
	bash scripts/setup.sh bench
	$(CARGO) build --release --workspace --bins
	python3 bench/streams.py

# Balancer design vs nginx's per-worker state: stream spread, a slowed and a stalled replica,
# upstream connections per 10k requests (bench/design.py).
bench-design:
	bash scripts/setup.sh bench
	$(CARGO) build --release --workspace --bins
	python3 bench/design.py

clean-run:
	rm -rf run

bench-containers:
	bash scripts/setup.sh compose
	$(CARGO) build --release --workspace --bins
	.venv/bin/python bench/containers.py
