# morag-gpu. `make run` starts the stack, `make test` runs every test.
# Both install what they need first (scripts/setup, idempotent).

GO       ?= go
PKGS     := ./...
BIN      := bin

.PHONY: all setup build run test test-unit bench lint gpu-check whisper worker-whisper test-whisper bundle clean

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

# whisper.cpp transcription (build tag `whisper`). `make whisper` builds
# libwhisper + ggml once into .deps/ (scripts/whisper-build: from
# WHISPER_CPP_SRC, the main checkout's .deps/whisper.cpp, or a clone of the
# pinned commit; CUDA when nvcc is found). worker-whisper and test-whisper
# use, in this order: WHISPER_CPP_DIR (an install prefix), that build,
# pkg-config `whisper`.
whisper:
	@scripts/whisper-build

worker-whisper:
	scripts/whisper-build go build -tags whisper -o $(BIN)/worker-whisper ./worker

test-whisper:
	@if scripts/whisper-build env >/dev/null; then \
	  scripts/whisper-build go test -tags whisper -count=1 -timeout 20m -v -run 'Whisper' ./media/... ./test/e2e/; \
	else echo "test-whisper: SKIPPED (see above)"; fi

# For a machine with an NVIDIA GPU: detection, NVDEC/NVENC vs CPU, whisper RTF.
gpu-check:
	@scripts/gpu-check

# The self-contained GPU worker bundle: dist/morag-gpu-bundle/ and its
# tarball (scripts/bundle; minimal ffmpeg from Debian 12's source, shared
# whisper.cpp). `make test` then tests it (test/bundle).
bundle:
	@scripts/bundle

clean:
	rm -rf $(BIN) .run
