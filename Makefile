# aigw — the two promises: `make run` starts a working gateway, `make test` runs everything CI runs.

CARGO ?= cargo
VENV  ?= .venv
PY    := $(VENV)/bin/python

.PHONY: run test test-rust test-conformance test-docker lint fmt bench build release venv clean-data

## Build and start `aigw serve` on embedded defaults (http://127.0.0.1:8080, data in ./data).
run:
	$(CARGO) run --release --bin aigw -- serve

## Everything CI runs: formatting, lints, Rust tests, the SDK conformance suite, and the Docker
## cluster fault test (skipped when Docker is not usable).
test: lint test-rust test-conformance test-docker

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

## Rust tests; the S3 blob-store tests run against moto_server from the venv.
test-rust: venv
	MOTO_SERVER_BIN=$(CURDIR)/$(VENV)/bin/moto_server S3_TESTS_REQUIRED=1 $(CARGO) test --workspace --all-targets

## Official openai / anthropic Python SDKs against aigw in front of the mock upstream.
test-conformance: venv
	$(CARGO) build --bin aigw --bin aigw-mock
	$(PY) -m pytest -q tests/conformance

## The 5-node cluster in Docker under traffic: kill, restart and partition shard leaders; no
## log record lost or duplicated. Builds a FROM-scratch image of target/debug/aigw (AIGW_BIN).
test-docker: venv
	$(CARGO) build --bin aigw --bin aigw-mock
	VENV=$(VENV) tests/docker/run.sh

venv: $(VENV)/.installed
$(VENV)/.installed: tests/conformance/requirements.txt tests/moto-requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r tests/conformance/requirements.txt -r tests/moto-requirements.txt
	touch $@

## Load bench: the same request mix straight to the mock and through aigw, in one run.
bench:
	$(CARGO) bench -p aigw-benches
	$(CARGO) build --release --bin aigw --bin aigw-mock
	$(CARGO) build --release -p aigw-benches --bin loadbench --bin wsbench --bin cachebench
	./target/release/loadbench
	./target/release/wsbench
	./target/release/cachebench
	$(CARGO) run --release -p aigw-benches --bin storebench
	$(CARGO) run --release -p aigw-benches --bin clusterbench

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release --bin aigw

fmt:
	$(CARGO) fmt --all

clean-data:
	rm -rf ./data
