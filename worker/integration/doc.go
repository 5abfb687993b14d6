// Package integration holds the end-to-end tests of the MoRAG Go worker
// binary (morag-gpu/worker, built once per run) against a real
// redis-server and Debian's Python Celery: clients, Python workers, the
// celery CLI and event receivers. They live here, not in worker/runner,
// because they need MoRAG's worker (its flags, diag tasks, metrics), and
// worker/runner is a Celery worker library that knows nothing of MoRAG.
package integration
