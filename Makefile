# l2tpv3-netdev — see README.md. Targets that boot VMs install what they need.
SHELL  := /bin/bash
GO      ?= go
BIN     := bin/l2tpv3-netdev
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)

.PHONY: all build deps demo test unit e2e soak bench fmt vet clean

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/l2tpv3-netdev

deps:
	./test/install-deps.sh

# Two tiny VMs ping each other: one on the sidecar (-netdev stream), one on
# QEMU's own -netdev l2tpv3.
demo: deps build
	$(GO) run ./test/demo

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); [ -z "$$out" ] || { echo "gofmt needed:"; echo "$$out"; exit 1; }

vet:
	$(GO) vet ./...

# Unit tests under the race detector, the real-host tests in network
# namespaces (root: qdiscs, a route flap), then the real-VM end-to-end tests.
test: deps fmt vet build
	$(GO) test -race -count=1 ./...
	L2TPV3_NETNS=1 $(GO) test -count=1 -v -run 'Netns' ./test/load 2>&1 | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|\s+netns_test)' ; exit $${PIPESTATUS[0]}
	L2TPV3_E2E=1 $(GO) test -count=1 -timeout 40m -v ./test/e2e 2>&1 | tee test-e2e.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)' ; exit $${PIPESTATUS[0]}

unit:
	$(GO) test -race -count=1 ./...

e2e: deps build
	L2TPV3_E2E=1 $(GO) test -count=1 -timeout 40m -v ./test/e2e

# Long runs, not part of make test (about 13 minutes, every core busy): the
# hostile flood with 1,000,000 datagrams, the 10-minute soak of 64 ports and
# the daemon's memory with 1, 16 and 64 ports and with 1, 4 and 16 vhost-user
# queue pairs (README "Faults and load").
# L2TPV3_SOAK_DURATION / _PORTS change the soak.
soak:
	L2TPV3_SOAK=1 $(GO) test -count=1 -timeout 40m -v -run 'TestHostileNetworkFlood|TestSoak64Ports|TestMemoryPerPort|TestMemoryPerQueue' ./test/load

bench: deps build
	$(GO) run ./test/bench

clean:
	rm -rf bin test-e2e.log
