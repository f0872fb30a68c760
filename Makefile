# emu: `make demo` deploys the default lab and checks it; `make test` runs
# every test (root needed for the integration tests).
GO      ?= go
BIN     := bin/emu
TOPO    ?= topologies/static.yaml

.PHONY: build test unit lint fuzz demo bench setup clean vmtest images

build:
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./cmd/emu

setup:
	scripts/setup.sh

lint:
	$(GO) vet ./...
	@test -z "$$(gofmt -l cmd internal nodes bench 2>/dev/null)" || { gofmt -l cmd internal nodes bench; echo "gofmt: files above need formatting"; exit 1; }

# Unit tests only: what runs without root (as root too), ending with how many
# tests were skipped and why.
unit:
	EMU_UNIT_ONLY=1 $(GO) test -count=1 -json ./... | $(GO) run ./internal/testenv/report

# Every test. A test that would skip for want of root, Docker or a witness
# tool fails instead (internal/testenv): run it as root after `make setup`.
test: setup lint build
	EMU_REQUIRE_ROOT_TESTS=1 $(GO) test -count=1 -timeout 20m ./...
	EMU_REQUIRE_ROOT_TESTS=1 $(MAKE) fuzz
	$(MAKE) vmtest

# Every go test -fuzz target in the tree (the parsers of bytes another host
# controls), each for FUZZTIME; their seed corpora (testdata/fuzz/) also run
# with the plain tests. A failure leaves the input in testdata/fuzz/.
FUZZTIME ?= 10s
fuzz:
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' cmd internal bench); do \
	  for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
	    echo "fuzz ./$$(dirname $$f) $$t for $(FUZZTIME)"; \
	    $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) ./$$(dirname $$f); \
	  done; \
	done

# The kernel ESP dataplane, proven under QEMU with Debian's cloud kernel.
vmtest:
	vmtest/setup.sh
	vmtest/suite.sh

# Deploy the default lab, run its checks, destroy it (also on failure).
demo: build
	@trap '$(BIN) destroy -t $(TOPO) --cleanup' EXIT; \
	$(BIN) deploy -t $(TOPO) --reconfigure && $(BIN) check -t $(TOPO)

# Deploy vs an ip script; failover outage per method (100 pps probe stream);
# TCP throughput plain vs wireguard-go vs the userspace ESP tunnel (every
# algorithm), and 1/16/64/256 connections on one VPN gateway; deploy of the
# FRR on-prem scenario vs the stock method 2 (same run).
bench: build
	$(GO) run ./bench/deploy
	$(GO) run ./bench/software -emu $(BIN)
	$(GO) test -run '^$$' -bench Failover -benchtime 1x ./bench/failover
	$(GO) run ./bench/throughput
	$(GO) test -run '^$$' -bench . -benchtime 5x ./bench/ike

# The node image for `runtime: docker` nodes (FROM scratch, built through the
# Docker API; no registry needed).
images:
	$(GO) run ./images/build

clean:
	rm -rf bin
