// The C half of the whisper.cpp binding (build tag whisper): the callbacks
// whisper_full calls, which must be C functions, and one call that fills
// whisper_full_params so Go never lays out that large struct itself.
#ifndef MORAG_WHISPER_SHIM_H
#define MORAG_WHISPER_SHIM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <whisper.h>

// One transcription. Allocated in C memory so that whisper.cpp's threads
// may read it while Go code runs; freed by the Go side when the call ends.
typedef struct morag_job {
	atomic_int cancelled;  // set by the Go goroutine watching the context
	uintptr_t handle;      // runtime/cgo.Handle of the Go-side job
	int n_threads;
	int beam_size;         // > 1: beam search with this many beams; else greedy
	bool progress;         // call goWhisperProgress
	bool segments;         // call goWhisperNewSegment
	bool tdrz;             // tinydiarize speaker turns
	const char *language;  // "auto" or an ISO 639-1 code
} morag_job;

morag_job *morag_job_new(void);
void morag_job_cancel(morag_job *job);

// morag_full runs whisper_full_with_state with greedy sampling and the
// job's settings and callbacks.
int morag_full(struct whisper_context *ctx, struct whisper_state *state, morag_job *job, const float *pcm, int n);

// morag_quiet_logs routes whisper.cpp and ggml logging through a filter
// that prints warnings and errors only (verbose = 0) or everything.
void morag_set_logging(int verbose);

// morag_gpu_devices writes the GPU devices ggml found ("CUDA0: NVIDIA H200")
// separated by newlines into buf; returns how many there are.
int morag_gpu_devices(char *buf, int len);

// morag_gpu_memory reports the free and total memory of the i-th GPU
// device (in morag_gpu_devices' order); returns 0 when there is no such
// device.
int morag_gpu_memory(int i, size_t *free_bytes, size_t *total_bytes);

#endif
