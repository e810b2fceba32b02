# Gantry — make help lists the targets.
GO ?= go
BIN := bin
PROTO_FILES := $(wildcard proto/gantry/v1/*.proto)

.PHONY: help deps web build run test test-short proto proto-check bench fmt vet clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

web: ## fetch front-end libraries from npm (lockfile) and copy them into the portal's embedded assets
	npm ci --no-audit --no-fund
	cp node_modules/htmx.org/dist/htmx.min.js controlplane/portal/static/vendor/htmx.min.js
	rm -rf controlplane/portal/static/vendor/novnc && mkdir -p controlplane/portal/static/vendor/novnc
	cp -R node_modules/@novnc/novnc/core node_modules/@novnc/novnc/vendor node_modules/@novnc/novnc/LICENSE.txt controlplane/portal/static/vendor/novnc/

build: web ## build gantry-controlplane, gantry-agent and gantryctl into bin/
	$(GO) build -o $(BIN)/ ./controlplane/cmd/... ./agent/cmd/... ./testbed/opcuasim/cmd/opcuasim ./testbed/rfbserver/cmd/rfbserver ./testbed/tcpecho/cmd/tcpecho

run: deps build ## run the control plane in dev mode (SQLite, embedded MQTT broker, demo data in .gantry-dev/) plus a simulated agent
	bash deploy/dev/run.sh

# The machine's PostgreSQL and Mosquitto, unless the caller points elsewhere.
GANTRY_TEST_POSTGRES ?= postgres://postgres@127.0.0.1:5432/test?sslmode=disable
GANTRY_TEST_MQTT ?= tcp://127.0.0.1:1883
export GANTRY_TEST_POSTGRES GANTRY_TEST_MQTT

deps: ## install what builds and tests need (Debian packages as root, Go modules)
	bash .ci/deps

test: deps ## run all tests with -race against the local PostgreSQL and Mosquitto
	$(GO) test -race -count=1 -timeout 25m ./...

proto: ## regenerate Go code from proto/ (protoc from Debian's protobuf-compiler, plugins pinned in go.mod)
	protoc -I proto -I /usr/include \
	  --plugin=protoc-gen-go="$$($(GO) tool -n protoc-gen-go)" --go_out=paths=source_relative:proto \
	  --plugin=protoc-gen-go-grpc="$$($(GO) tool -n protoc-gen-go-grpc)" --go-grpc_out=paths=source_relative:proto \
	  --plugin=protoc-gen-connect-go="$$($(GO) tool -n protoc-gen-connect-go)" --connect-go_out=paths=source_relative:proto \
	  --plugin=protoc-gen-openapiv2="$$($(GO) tool -n protoc-gen-openapiv2)" \
	  --openapiv2_out=generate_unbound_methods=true,allow_merge=true,merge_file_name=gantry,disable_default_errors=true:controlplane/api/openapi \
	  $(PROTO_FILES)

proto-check: proto ## fail if the committed generated code is stale
	@git diff --exit-code -- proto controlplane/api/openapi || (echo "generated code is stale: run 'make proto' and commit" && exit 1)

bench: ## run benchmarks and latency/load reports (not part of make test); figures go to docs/benchmarks.md
	GANTRY_BENCH=1 $(GO) test -count=1 -run 'Latency|Load' -bench . -benchmem -v ./... | grep -E '^(Benchmark|ok|FAIL|---|\s+\S+_test.go)'


fmt: ## gofmt all Go files
	gofmt -w $$(git ls-files '*.go')

vet: ## go vet
	$(GO) vet ./...

clean: ## remove build output
	rm -rf $(BIN)
