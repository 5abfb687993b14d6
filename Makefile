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

# whisper.cpp transcription: needs an installed libwhisper (not packaged in
# Debian 12). Found through pkg-config (`whisper`) or WHISPER_CPP_DIR (a
# whisper.cpp install prefix with include/ and lib/).
WHISPER_ENV = $(if $(WHISPER_CPP_DIR),CGO_CFLAGS="-I$(WHISPER_CPP_DIR)/include" CGO_LDFLAGS="-L$(WHISPER_CPP_DIR)/lib -lwhisper -lggml -lggml-base -lggml-cpu -lstdc++ -lm -fopenmp" LD_LIBRARY_PATH="$(WHISPER_CPP_DIR)/lib",CGO_CFLAGS="$$(pkg-config --cflags whisper 2>/dev/null)" CGO_LDFLAGS="$$(pkg-config --libs whisper 2>/dev/null)")

worker-whisper:
	@scripts/check-whisper
	$(WHISPER_ENV) $(GO) build -tags whisper -o $(BIN)/worker-whisper ./worker

test-whisper:
	@if scripts/check-whisper; then \
	  $(WHISPER_ENV) $(GO) test -tags whisper -count=1 -v -run 'Whisper' ./media/...; \
	else echo "test-whisper: SKIPPED (see above)"; fi

# For a machine with an NVIDIA GPU: detection, NVDEC/NVENC vs CPU, whisper RTF.
gpu-check:
	@scripts/gpu-check

clean:
	rm -rf $(BIN) .run
