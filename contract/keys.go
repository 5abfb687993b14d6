package contract

// MoRAG's own Redis keys (docs/redis-keys.md, last table). They are never
// prefixed by -key-prefix: MoRAG's Python does not prefix them either.
const (
	// APIKeyPrefix precedes the sha256 hex of an API key (MoRAG's
	// APIKeyService); exported for the reindex SCAN pattern.
	APIKeyPrefix = "morag:api_keys:"
	// userPrefix is MoRAG's user_prefix; the per-user key index lives
	// under it.
	userPrefix      = "morag:users:"
	taskOwnerPrefix = "morag:tasks:owner:"
	resultPrefix    = "morag:results:"
	transferPrefix  = "morag:transfers:"
	// remoteWorkerPrefix precedes the node name of a gateway-mediated
	// worker; the key holds the user id of the key that registered it.
	remoteWorkerPrefix = "morag:remote_workers:"
	// URLSecretKey holds the HMAC secret every gateway replica signs file
	// URLs with.
	URLSecretKey = "morag:gateway:url_secret"
)

// APIKeyKey is where an API key's record lives, by the key's sha256 hex.
func APIKeyKey(hash string) string { return APIKeyPrefix + hash }

// UserKeysKey is the set of a user's key hashes.
func UserKeysKey(userID string) string { return userPrefix + userID + ":keys" }

// TaskOwnerKey records which user submitted a task ("" for none).
func TaskOwnerKey(taskID string) string { return taskOwnerPrefix + taskID }

// ResultKey holds a result a remote worker uploaded for a task.
func ResultKey(taskID string) string { return resultPrefix + taskID }

// TransferKey holds an upload's metadata in the gateway's file store.
func TransferKey(transferID string) string { return transferPrefix + transferID }

// RemoteWorkerKey records which user's key registered a gateway-mediated
// worker's node name, so that no other key can speak for it.
func RemoteWorkerKey(hostname string) string { return remoteWorkerPrefix + hostname }
