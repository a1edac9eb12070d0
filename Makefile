# wsgateway — `make test` is the one command that proves everything (README).
GO       ?= go
PKGS     ?= ./...
STATICCHECK = $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all build test test-short lint fmt vet staticcheck fuzz bench run clean deps

all: lint test

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/gateway ./cmd/gateway

# The programs the tests run for real (Debian packages). `make deps` installs them (as root);
# .ci/run does the same.
DEPS_BIN = redis-server redis-cli redis-sentinel nginx chromium docker-compose
DEPS_PKG = redis-server redis-tools redis-sentinel nginx-light chromium docker-compose

deps:
	@missing=""; for b in $(DEPS_BIN); do command -v $$b >/dev/null || [ -x /usr/sbin/$$b ] || missing="$$missing $$b"; done; \
	if [ -z "$$missing" ]; then echo "deps: all present"; exit 0; fi; \
	echo "deps: installing for$$missing"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEPS_PKG) >/dev/null

# Every test, race detector on, nothing cached. Needs the programs of DEPS_BIN (make deps);
# locally, tests that need a missing one skip, and the last line says which; in CI they fail.
test:
	$(GO) test -race -count=1 -timeout 15m $(PKGS)
	# The portable connection path (a reader goroutine per connection, as off Linux).
	WSGATEWAY_NO_EPOLL=1 $(GO) test -race -count=1 -timeout 10m ./internal/ws/ ./internal/server/ ./internal/attack/
	@missing=""; for b in $(DEPS_BIN); do command -v $$b >/dev/null || [ -x /usr/sbin/$$b ] || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then echo "make test: passed, but the suites that need$$missing were SKIPPED; 'make deps' (as root) installs them"; fi

lint: fmt vet staticcheck

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

staticcheck:
	$(STATICCHECK) $(PKGS)

# Each fuzz target for a bounded time (the seed corpora already run in `make test`).
FUZZTIME ?= 30s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

run:
	$(GO) run ./cmd/gateway --dev

clean:
	rm -rf bin

# Benchmarks (BENCHMARKS.md): the Go benchmarks briefly, then a short run of every wsbench
# scenario (2,000 connections, 3 s each; the drops runs, v1 and raw, 10 s) against
# redis-server and gateway processes that wsbench spawns and pins with taskset. Needs
# redis-server, taskset and jq; a few minutes. Then the side-by-side comparison with
# Centrifugo's engine (bench/centrifuge-peer, its own module) and the calibration server, short:
# its ratio table is BENCHMARKS.md's "Side by side with Centrifugo".
# The full suite (10,000 connections, 3 runs each): cmd/wsbench/suite.sh; the full comparison:
# cmd/wsbench/compare.sh.
BENCHTIME ?= 200ms
bench: build
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) -timeout 10m ./internal/ws/ ./internal/api/ ./internal/auth/
	$(GO) build -o bin/wsbench ./cmd/wsbench
	$(GO) test -c -o bin/bare ./cmd/wsbench
	rm -rf bin/bench-results/short
	SHORT=1 OUT=bin/bench-results/short GW=bin/gateway WSBENCH=bin/wsbench BARE=bin/bare cmd/wsbench/suite.sh
	cd bench/centrifuge-peer && $(GO) build -o ../../bin/centrifuge-peer .
	rm -rf bin/bench-results/compare-short
	SHORT=1 OUT=bin/bench-results/compare-short GW=bin/gateway WSBENCH=bin/wsbench BARE=bin/bare PEER=bin/centrifuge-peer cmd/wsbench/compare.sh

# 100,000 connections across 6 gateway nodes and 6 client processes (BENCHMARKS.md), with one
# Redis and then a 3-master Cluster; 10k/50k/100k levels, ~15 minutes. Under flock: benchmark
# runs on a shared machine never overlap. Settings: see cmd/wsbench/scale.sh.
.PHONY: bench-scale
bench-scale: build
	$(GO) build -o bin/wsbench ./cmd/wsbench
	flock /tmp/bench.lock cmd/wsbench/scale.sh

# The soak test: minutes of churn on two nodes and one Redis, restarted in the middle (not part
# of `make test`; internal/soak). Tune with WSGATEWAY_SOAK_USERS, _DURATION and _RATE.
.PHONY: soak
soak:
	WSGATEWAY_SOAK=1 $(GO) test -race=false -count=1 -run Soak -timeout 20m -v ./internal/soak/
