package contract

import (
	"slices"
	"testing"

	"morag-gpu/internal/testenv"
)

// TestKeysMatchDoc: every MoRAG key pattern in docs/redis-keys.md has a
// builder here and every builder is in the document, so neither can drift.
// The builders get the document's placeholders as arguments.
func TestKeysMatchDoc(t *testing.T) {
	built := []string{
		APIKeyKey("<sha256 hex of key>"),
		UserKeysKey("<user_id>"),
		TaskOwnerKey("<task_id>"),
		ResultKey("<task_id>"),
		TransferKey("<transfer_id>"),
		RemoteWorkerKey("<node name>"),
		URLSecretKey,
	}
	slices.Sort(built)
	doc := testenv.RedisKeyDoc(t, "MoRAG's and ours")
	for _, k := range doc {
		if !slices.Contains(built, k) {
			t.Errorf("docs/redis-keys.md lists %q, which no builder in package contract makes", k)
		}
	}
	for _, k := range built {
		if !slices.Contains(doc, k) {
			t.Errorf("package contract builds %q, which docs/redis-keys.md does not list", k)
		}
	}
}
