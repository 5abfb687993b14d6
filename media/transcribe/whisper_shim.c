//go:build whisper

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ggml-backend.h>

#include "whisper_shim.h"
#include "_cgo_export.h"

morag_job *morag_job_new(void) {
	morag_job *job = calloc(1, sizeof(morag_job));
	if (job) atomic_init(&job->cancelled, 0);
	return job;
}

void morag_job_cancel(morag_job *job) { atomic_store(&job->cancelled, 1); }

// whisper.cpp asks this after each encoder pass and each decoder step
// (at the pinned commit it does not hand it to the backends, so a graph
// already computing runs to its end): a cancelled job stops within one
// encoder step, and the check costs no call into Go.
static bool abort_cb(void *data) {
	return atomic_load_explicit(&((morag_job *)data)->cancelled, memory_order_relaxed) != 0;
}

static bool encoder_begin_cb(struct whisper_context *ctx, struct whisper_state *state, void *data) {
	(void)ctx; (void)state;
	return !abort_cb(data);
}

static void progress_cb(struct whisper_context *ctx, struct whisper_state *state, int progress, void *data) {
	(void)ctx; (void)state;
	goWhisperProgress(((morag_job *)data)->handle, progress);
}

static void new_segment_cb(struct whisper_context *ctx, struct whisper_state *state, int n_new, void *data) {
	(void)ctx; (void)state;
	goWhisperNewSegment(((morag_job *)data)->handle, n_new);
}

int morag_full(struct whisper_context *ctx, struct whisper_state *state, morag_job *job, const float *pcm, int n) {
	struct whisper_full_params p = whisper_full_default_params(
		job->beam_size > 1 ? WHISPER_SAMPLING_BEAM_SEARCH : WHISPER_SAMPLING_GREEDY);
	if (job->beam_size > 1) p.beam_search.beam_size = job->beam_size;
	p.n_threads = job->n_threads;
	p.language = job->language;
	p.detect_language = false;
	p.translate = false;
	p.no_context = true;
	p.print_progress = false;
	p.print_realtime = false;
	p.print_special = false;
	p.print_timestamps = false;
	p.tdrz_enable = job->tdrz;
	p.abort_callback = abort_cb;
	p.abort_callback_user_data = job;
	p.encoder_begin_callback = encoder_begin_cb;
	p.encoder_begin_callback_user_data = job;
	if (job->progress) {
		p.progress_callback = progress_cb;
		p.progress_callback_user_data = job;
	}
	if (job->segments) {
		p.new_segment_callback = new_segment_cb;
		p.new_segment_callback_user_data = job;
	}
	return whisper_full_with_state(ctx, state, p, pcm, n);
}

static int log_verbose;
static int log_last_printed;

static void log_cb(enum ggml_log_level level, const char *text, void *data) {
	(void)data;
	int print = log_verbose || level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR ||
		(level == GGML_LOG_LEVEL_CONT && log_last_printed);
	if (level != GGML_LOG_LEVEL_CONT) log_last_printed = print;
	if (print) fputs(text, stderr);
}

void morag_set_logging(int verbose) {
	log_verbose = verbose;
	whisper_log_set(log_cb, NULL);
	ggml_log_set(log_cb, NULL);
}

static ggml_backend_dev_t gpu_device(int i) {
	for (size_t k = 0; k < ggml_backend_dev_count(); k++) {
		ggml_backend_dev_t dev = ggml_backend_dev_get(k);
		enum ggml_backend_dev_type t = ggml_backend_dev_type(dev);
		if (t != GGML_BACKEND_DEVICE_TYPE_GPU && t != GGML_BACKEND_DEVICE_TYPE_IGPU) continue;
		if (i-- == 0) return dev;
	}
	return NULL;
}

int morag_gpu_memory(int i, size_t *free_bytes, size_t *total_bytes) {
	ggml_backend_dev_t dev = gpu_device(i);
	if (!dev) return 0;
	ggml_backend_dev_memory(dev, free_bytes, total_bytes);
	return 1;
}

int morag_gpu_devices(char *buf, int len) {
	int n = 0, off = 0;
	if (len > 0) buf[0] = 0;
	for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
		ggml_backend_dev_t dev = ggml_backend_dev_get(i);
		enum ggml_backend_dev_type t = ggml_backend_dev_type(dev);
		if (t != GGML_BACKEND_DEVICE_TYPE_GPU && t != GGML_BACKEND_DEVICE_TYPE_IGPU) continue;
		if (off < len) {
			off += snprintf(buf + off, len - off, "%s%s: %s", n ? "\n" : "",
				ggml_backend_dev_name(dev), ggml_backend_dev_description(dev));
		}
		n++;
	}
	return n;
}
