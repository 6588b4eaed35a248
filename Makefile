# The two commands: `make run` (the whole stack on loopback) and `make test`.
# Everything builds once, in release mode, into one target dir shared by the
# binaries, the tests and the benchmarks.
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: run test build lint bench bench-backend bench-gateway setup clean-run

build:
	bash scripts/setup.sh run
	$(CARGO) build --release --workspace --bins

run: build
	bash scripts/run-local.sh

test:
	bash scripts/setup.sh test
	$(CARGO) build --release --workspace --bins
	$(CARGO) test --release --workspace --no-fail-fast
	.venv/bin/pytest -q tests/python
	$(MAKE) --no-print-directory lint

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

bench: bench-backend bench-gateway

bench-backend:
	bash scripts/setup.sh bench
	$(CARGO) build --release --workspace --bins
	bash bench/backend.sh

bench-gateway:
	bash scripts/setup.sh bench
	$(CARGO) build --release --workspace --bins
	bash bench/gateway.sh

clean-run:
	rm -rf run
