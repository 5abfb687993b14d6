# morag-gpu. `make run` starts the stack, `make test` runs every test.
# Both install what they need first (scripts/setup, idempotent).

GO       ?= go
PKGS     := ./...
BIN      := bin

.PHONY: all setup build run test test-unit bench lint gpu-check worker-whisper test-whisper clean

all: build

setup:
	@scripts/setup

build:
	$(GO) build -o $(BIN)/ ./gateway ./worker

run: setup build
	@scripts/run

lint:
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

test: setup lint
	@scripts/gotest $(PKGS)

bench: setup
	@scripts/bench

clean:
	rm -rf $(BIN) .run
