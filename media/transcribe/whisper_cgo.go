//go:build whisper

package transcribe

// The Go half of the whisper.cpp binding: one model (whisper_context
// without state) shared by every job, one whisper_state per job, so jobs
// run in parallel on one copy of the weights with no program-wide lock.
// Callbacks reach the job through a runtime/cgo.Handle passed as user data;
// nothing is kept in package-level tables.

/*
#cgo CFLAGS: -O2
#cgo LDFLAGS: -lwhisper -lggml -lggml-cpu -lggml-base -lstdc++ -lm -fopenmp
#include <stdlib.h>
#include <malloc.h>
#include "whisper_shim.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"runtime/cgo"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// model is a loaded ggml whisper model. Its methods are safe for
// concurrent use: whisper.cpp only reads the context once loaded.
type model struct {
	ctx          *C.struct_whisper_context
	multilingual bool
	eot          C.whisper_token
}

type modelParams struct {
	useGPU    bool
	flashAttn bool
	gpuDevice int
	verbose   bool
}

func loadModel(path string, p modelParams) (*model, error) {
	C.morag_set_logging(boolInt(p.verbose))
	cp := C.whisper_context_default_params()
	cp.use_gpu = C.bool(p.useGPU)
	cp.flash_attn = C.bool(p.flashAttn)
	cp.gpu_device = C.int(p.gpuDevice)
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	ctx := C.whisper_init_from_file_with_params_no_state(cpath, cp)
	if ctx == nil {
		return nil, fmt.Errorf("transcribe: whisper.cpp cannot load %s: not a ggml whisper model, or truncated (see its log above); download it again or pick another with -whisper-model", path)
	}
	return &model{ctx: ctx, multilingual: C.whisper_is_multilingual(ctx) != 0, eot: C.whisper_token_eot(ctx)}, nil
}

func (m *model) free() { C.whisper_free(m.ctx) }

// typeName is whisper.cpp's name for the model's size ("tiny", "base", …).
func (m *model) typeName() string { return C.GoString(C.whisper_model_type_readable(m.ctx)) }

// gpuDevices lists the GPUs ggml can use ("CUDA0: NVIDIA H200"); empty in
// a CPU build or on a host without a usable GPU.
func gpuDevices() []string {
	buf := make([]byte, 4096)
	n := C.morag_gpu_devices((*C.char)(unsafe.Pointer(&buf[0])), C.int(len(buf)))
	if n == 0 {
		return nil
	}
	return strings.Split(C.GoString((*C.char)(unsafe.Pointer(&buf[0]))), "\n")
}

// gpuMemory reports the used and total bytes of each GPU ggml can use,
// in gpuDevices' order; nil without one.
func gpuMemory() []DeviceMemory {
	var out []DeviceMemory
	for i := 0; ; i++ {
		var free, total C.size_t
		if C.morag_gpu_memory(C.int(i), &free, &total) == 0 {
			return out
		}
		out = append(out, DeviceMemory{Used: uint64(total - free), Total: uint64(total)})
	}
}

// knownLanguage reports whether whisper.cpp has a language code.
func knownLanguage(code string) bool {
	c := C.CString(code)
	defer C.free(unsafe.Pointer(c))
	return C.whisper_lang_id(c) >= 0
}

func systemInfo() string { return strings.TrimSpace(C.GoString(C.whisper_print_system_info())) }

// job is the Go side of one whisper_full call, reached from the C
// callbacks through its handle.
type job struct {
	m        *model
	state    *C.struct_whisper_state
	progress func(int)
	onSeg    func(rawSegment)
	tdrz     bool
	segs     []rawSegment
}

type fullParams struct {
	threads  int
	beam     int    // > 1: beam search
	language string // "auto" or a code
	tdrz     bool
}

// errAborted means whisper_full stopped because the context was cancelled.
var errAborted = errors.New("transcribe: whisper job aborted")

// full runs one transcription on its own whisper_state. Cancelling ctx
// raises the job's abort flag, which whisper.cpp checks before each
// encoder pass and decoder step, so the call returns within one encoder
// step; the state is freed before full returns, whatever happened.
func (m *model) full(ctx context.Context, pcm []float32, p fullParams, progress func(int)) ([]rawSegment, string, error) {
	if len(pcm) == 0 {
		return nil, "", nil
	}
	state := C.whisper_init_state(m.ctx)
	if state == nil {
		return nil, "", errors.New("transcribe: whisper.cpp could not allocate a state (out of memory? lower -concurrency or use a smaller model)")
	}
	defer func() {
		C.whisper_free_state(state)
		// A state is 100+ MB of buffers; glibc keeps freed memory in the
		// arena of the thread that freed it, and cgo calls run on many
		// threads, so without a trim RSS climbs towards one state per
		// arena (measured: +20 MiB per pair of jobs, then flat). Trimming
		// after every job costs a millisecond and gives it back at once.
		mallocTrim()
	}()

	cj := C.morag_job_new()
	if cj == nil {
		return nil, "", errors.New("transcribe: out of memory")
	}
	defer C.free(unsafe.Pointer(cj))

	j := &job{m: m, state: state, progress: progress, tdrz: p.tdrz}
	h := cgo.NewHandle(j)
	defer h.Delete()
	lang := C.CString(p.language)
	defer C.free(unsafe.Pointer(lang))
	cj.handle = C.uintptr_t(h)
	cj.n_threads = C.int(max(1, p.threads))
	cj.beam_size = C.int(p.beam)
	cj.progress = C.bool(progress != nil)
	cj.segments = true
	cj.tdrz = C.bool(p.tdrz)
	cj.language = lang

	// The watcher is owned by this call: it ends when the call does.
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
			C.morag_job_cancel(cj)
		case <-done:
		}
	}()
	rc := C.morag_full(m.ctx, state, cj, (*C.float)(unsafe.Pointer(&pcm[0])), C.int(len(pcm)))
	close(done)
	wg.Wait()
	runtime.KeepAlive(pcm)

	if ctx.Err() != nil {
		return nil, "", ctx.Err()
	}
	if rc != 0 {
		return nil, "", fmt.Errorf("transcribe: whisper_full failed (code %d); the input may be unusable or the model damaged", int(rc))
	}
	language := C.GoString(C.whisper_lang_str(C.whisper_full_lang_id_from_state(state)))
	return j.segs, language, nil
}

// readSegment copies segment i out of the job's state.
func (j *job) readSegment(i C.int) rawSegment {
	s := rawSegment{
		start:       time.Duration(C.whisper_full_get_segment_t0_from_state(j.state, i)) * 10 * time.Millisecond,
		end:         time.Duration(C.whisper_full_get_segment_t1_from_state(j.state, i)) * 10 * time.Millisecond,
		text:        C.GoString(C.whisper_full_get_segment_text_from_state(j.state, i)),
		speakerTurn: j.tdrz && bool(C.whisper_full_get_segment_speaker_turn_next_from_state(j.state, i)),
	}
	var sum float64
	n := 0
	for t := range C.whisper_full_n_tokens_from_state(j.state, i) {
		td := C.whisper_full_get_token_data_from_state(j.state, i, t)
		if td.id < j.m.eot && td.p > 0 {
			sum += math.Log(float64(td.p))
			n++
		}
	}
	if n > 0 {
		s.logprob = sum / float64(n)
	}
	return s
}

//export goWhisperNewSegment
func goWhisperNewSegment(h C.uintptr_t, nNew C.int) {
	j := cgo.Handle(h).Value().(*job)
	total := C.whisper_full_n_segments_from_state(j.state)
	for i := total - nNew; i < total; i++ {
		j.segs = append(j.segs, j.readSegment(i))
	}
}

//export goWhisperProgress
func goWhisperProgress(h C.uintptr_t, p C.int) {
	j := cgo.Handle(h).Value().(*job)
	if j.progress != nil {
		j.progress(int(p))
	}
}

func boolInt(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// mallocTrim returns free heap memory to the system (glibc malloc_trim).
func mallocTrim() { C.malloc_trim(0) }
