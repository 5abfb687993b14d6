// libmorag-ggml-load.so: part of the GPU worker bundle (scripts/bundle).
//
// The bundle's ggml is built with GGML_BACKEND_DL=ON: no backend is linked
// in, the program must load them (whisper-cli calls ggml_backend_load_all()
// first thing; media/transcribe's binding does not, because its static
// build links the CPU backend in). The bundled worker links this library,
// whose constructor loads every backend found next to it (lib/: the best
// libggml-cpu-<variant>.so for this CPU, and libggml-cuda.so once
// bin/build-cuda-backend has built it) before main runs.
// MORAG_GGML_BACKEND_DIR overrides the directory.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>

#include "ggml-backend.h"

__attribute__((constructor)) static void morag_ggml_load(void) {
	const char *dir = getenv("MORAG_GGML_BACKEND_DIR");
	char buf[4096];
	if (dir == NULL || *dir == '\0') {
		Dl_info info;
		if (dladdr((void *)morag_ggml_load, &info) == 0 || info.dli_fname == NULL ||
		    strlen(info.dli_fname) >= sizeof buf) {
			ggml_backend_load_all();
			return;
		}
		strcpy(buf, info.dli_fname);
		dir = dirname(buf);
	}
	ggml_backend_load_all_from_path(dir);
}
