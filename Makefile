# ovs-dns-forwarder — build, test, demo and benchmark entry points.
# The end-to-end tests, the demo and the benchmark need root: they start a
# userspace Open vSwitch inside network namespaces of their own.

SHELL       := /bin/bash
GO          ?= go
BIN         := bin/ovs-dns-forwarder
STATICCHECK := $(shell $(GO) env GOPATH)/bin/staticcheck
STATICCHECK_VERSION := v0.7.0
FUZZTIME    ?= 8s

# Fuzz targets run briefly by `make test`: package:target.
FUZZ_TARGETS := \
	./internal/frame:FuzzParseQuery \
	./internal/dnswire:FuzzParseQuery \
	./internal/dnswire:FuzzCheckReply \
	./internal/dnswire:FuzzFit \
	./internal/dnswire:FuzzAppendClientAnswer \
	./internal/dnswire:FuzzTTL \
	./internal/openflow:FuzzReadMessage \
	./internal/openflow:FuzzParsePacketIn \
	./internal/config:FuzzParse

.PHONY: all build test lint unit fuzz e2e demo bench clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/ovs-dns-forwarder

## test: everything CI runs — lint, unit tests, brief fuzzing, end-to-end tests on a real OVS.
test: lint unit fuzz e2e

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt: files above need formatting'; exit 1; }
	$(GO) vet ./...
	@test -x $(STATICCHECK) || GOFLAGS= $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(STATICCHECK) ./...

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /test/e2e)

fuzz:
	FUZZTIME=$(FUZZTIME) .ci/fuzz $(FUZZ_TARGETS)

e2e:
	$(GO) test -count=1 -timeout 30m -v ./test/e2e/

## demo: a sandbox OVS with two VMs and a local upstream; dig answers over IPv4 and IPv6.
demo: build
	$(GO) run ./cmd/ovs-dns-sandbox --daemon $(BIN)

## bench: dnsperf through the daemon and directly to the same upstream, in one run.
bench: build
	$(GO) run ./bench --daemon $(BIN)

clean:
	rm -rf bin
