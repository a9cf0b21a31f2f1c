# One entry point for building, running, testing and benchmarking raftwasm.
# The README's two commands are `make run` and `make test`; .ci/run calls `make test`.

CARGO ?= cargo
WASM_TARGETS := wasm32-unknown-unknown wasm32-wasip2
# Node started by `make run`.
RUN_ID ?= node1
RUN_ADDR ?= localhost:10001
RUN_HTTP ?= localhost:9000

# Every build `make test` and `make lint` do uses this one feature set, so wasmtime compiles once.
# `failpoints` arms crash-test hooks; `make build` (the binary you run) leaves it out.
TEST_FEATURES := --features host/failpoints

# Fault-injection runs (chaos/run.sh, needs root): `make chaos` is the long one.
CHAOS_DURATION ?= 600
CHAOS_SEED ?=
CHAOS_ARGS ?=
# The bounded run inside `make test`: about two minutes in all.
CHAOS_TEST_DURATION ?= 75

.PHONY: setup build polyglot run test chaos chaos-polyglot fmt-check lint bench bench-compare bench-quick ci

## Install the wasm targets the guests are built for (wasm-component-ld comes with wasm32-wasip2).
setup:
	rustup target add $(WASM_TARGETS)

## Build the host and every guest (host/build.rs builds the guests into target/wasm/).
build: setup
	$(CARGO) build --release --workspace --bins

## The Python and JavaScript example guests (examples/py-kv, examples/js-ratelimit) into
## target/wasm/, with componentize-py and componentize-js installed under target/polyglot/.
polyglot:
	scripts/polyglot.sh

## Build, then start one bootstrapped node running the embedded guest-kv.
run: build
	./target/release/host --id $(RUN_ID) --address $(RUN_ADDR) --http $(RUN_HTTP) --bs

## Unit, guest-runtime and cluster tests, all in the release profile so wasmtime compiles once,
## then a short fault-injection run (partitions, kills, pauses, membership, and a live guest
## upgrade to guest-kv v2 in the middle of it; checked by adya) with TLS and authentication on.
test: setup polyglot
	scripts/test-tools.sh
	$(CARGO) test --release --workspace $(TEST_FEATURES)
	CARGO_FEATURES="$(TEST_FEATURES)" chaos/run.sh --duration $(CHAOS_TEST_DURATION) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED),) \
	  --upgrade-module target/wasm/guest_kv_v2.wasm --upgrade-at 25 --secure --retry session

## A long fault-injection run: make chaos CHAOS_DURATION=1800 CHAOS_SEED=42 CHAOS_ARGS="--faults kill,split"
chaos: setup
	chaos/run.sh --duration $(CHAOS_DURATION) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED),) $(CHAOS_ARGS)

## The fault-injection run with the Python guest (examples/py-kv) on every node, upgraded live to
## its version 2 halfway: the same checks (adya, every node's change feed) as make test's run.
chaos-polyglot: setup polyglot
	CARGO_FEATURES="$(TEST_FEATURES)" chaos/run.sh --duration $(CHAOS_TEST_DURATION) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED),) \
	  --node-args "--fsm=$(CURDIR)/target/wasm/py_kv.wasm --snapshot-every=400 --snapshot-keep-logs=50 --watch-history-bytes=268435456" \
	  --upgrade-module target/wasm/py_kv_v2.wasm --upgrade-at 25 --retry session

fmt-check:
	$(CARGO) fmt --all -- --check

lint: setup
	$(CARGO) clippy --release --workspace --all-targets $(TEST_FEATURES) -- -D warnings

## Guest apply (raw component vs its SDK twin vs native, ns/op); snapshot build/install and restart for 1M keys; memory
## and time per client session.
bench: setup
	$(CARGO) bench --bench fsm
	$(CARGO) bench --bench snapshot
	$(CARGO) bench --bench sessions

## raftwasm vs etcd (and vs guest-kv compiled natively) on this machine; writes BENCHMARKS.md.
bench-compare: setup
	bench/compare.sh

## The write path's regression guard (under 2 minutes once built): raftwasm over etcd with
## h2load, put x1 and x64 (ops/s, p50, p99, node CPU per put) and memory per node. Prints only.
bench-quick: setup
	bench/quick.sh

ci: test fmt-check lint
