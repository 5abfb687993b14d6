package contract

// The Go MoRAG worker's identity. worker/main.go hands these to the
// generic runner; the fleet directory recognises a Go worker by
// WorkerSWIdent in its heartbeats and `inspect stats`, and results say
// which implementation made them in "processed_by".
const (
	// WorkerSWIdent is the sw_ident of the Go worker's events and stats
	// (Python sends "py-celery").
	WorkerSWIdent = "morag-gpu"
	// WorkerSWVersion is its sw_ver.
	WorkerSWVersion = "0.1.0"
	// WorkerNodeName is the name part of the Go worker's node name, where
	// Celery has "celery": a -hostname without "@" gets it.
	WorkerNodeName = "gpu"
	// WorkerHostname is the Go worker's default node name pattern (%h as
	// in Celery's -n).
	WorkerHostname = WorkerNodeName + "@%h"
)
