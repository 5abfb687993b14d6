// Package auth is MoRAG's API-key authentication and GPU routing decision,
// kept byte-compatible with MoRAG's Python APIKeyService so that keys
// written by either side validate on the other.
//
// Redis layout (shared with Python MoRAG):
//
//	morag:api_keys:<sha256 hex of key>  JSON {user_id, description, created_at, expires_at, active}
//	                                    written exactly as Python's json.dumps writes it;
//	                                    TTL expires_days days, 365 days when none
//	morag:users:<user_id>:keys          SET of key hashes (added here; MoRAG defines the
//	                                    prefix but never uses it), so keys can be listed
//	                                    without a SCAN
//
// Differences from upstream, all deliberate fixes:
//   - Revoke keeps the key's TTL (Python's plain SET drops it, so revoked keys
//     never leave Redis).
//   - user_id must match ^[A-Za-z0-9_.-]{1,64}$ because it becomes a queue name
//     and a Redis key part.
//   - Failed credentials (API keys and the admin token) are rate-limited per
//     client through one Guard; a valid key is never refused (see Guard).
//   - Stored data that Python would accept only by accident (non-boolean
//     "active", an expires_at Python cannot parse or compare) is treated as an
//     invalid key, never as a valid one.
package auth
