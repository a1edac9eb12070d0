# wsgateway — `make test` is the one command that proves everything (README).
GO       ?= go
PKGS     ?= ./...
STATICCHECK = $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all build test test-short lint fmt vet staticcheck fuzz bench run clean

all: lint test

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/gateway ./cmd/gateway

# Every test, race detector on, nothing cached. Needs redis-server and nginx on PATH (.ci/run
# installs them); locally, tests that need them skip when missing, in CI they fail.
test:
	$(GO) test -race -count=1 -timeout 15m $(PKGS)
	# The portable connection path (a reader goroutine per connection, as off Linux).
	WSGATEWAY_NO_EPOLL=1 $(GO) test -race -count=1 -timeout 10m ./internal/ws/ ./internal/server/ ./internal/attack/

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
# redis-server, taskset and jq; a few minutes.
# The full suite (10,000 connections, 3 runs each): cmd/wsbench/suite.sh.
BENCHTIME ?= 200ms
bench: build
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) -timeout 10m ./internal/ws/ ./internal/api/ ./internal/auth/
	$(GO) build -o bin/wsbench ./cmd/wsbench
	$(GO) test -c -o bin/bare ./cmd/wsbench
	rm -rf bin/bench-results/short
	SHORT=1 OUT=bin/bench-results/short GW=bin/gateway WSBENCH=bin/wsbench BARE=bin/bare cmd/wsbench/suite.sh

# The soak test: minutes of churn on two nodes and one Redis, restarted in the middle (not part
# of `make test`; internal/soak). Tune with WSGATEWAY_SOAK_USERS, _DURATION and _RATE.
.PHONY: soak
soak:
	WSGATEWAY_SOAK=1 $(GO) test -race=false -count=1 -run Soak -timeout 20m -v ./internal/soak/
