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
