package contract

import "testing"

// The wire values are spelled out on purpose: deployed gateways recognise
// Go workers by this sw_ident, and operators know the node names.
func TestWorkerIdentity(t *testing.T) {
	if WorkerSWIdent != "morag-gpu" || WorkerHostname != "gpu@%h" || WorkerNodeName != "gpu" {
		t.Fatalf("worker identity %q %q %q differs from the deployed fleet's", WorkerSWIdent, WorkerHostname, WorkerNodeName)
	}
}
