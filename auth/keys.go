package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"morag-gpu/contract"
	"sort"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Redis layout shared with MoRAG's APIKeyService.
const (
	// DefaultTTLDays is how long a key without expires_days stays in Redis.
	DefaultTTLDays = 365
	// MaxExpiresDays bounds expires_days; Python overflows its datetime a
	// little after year 9999, and no key should live a century anyway.
	MaxExpiresDays = 36500
	// MaxDescriptionLen bounds a key's description (bytes).
	MaxDescriptionLen = 1024
	// maxKeyLen bounds what Validate hashes and looks up; MoRAG keys are 43
	// characters, anything far longer is garbage and costs no Redis call.
	maxKeyLen = 512
)

// KeyData is the JSON stored at morag:api_keys:<sha256 hex>, byte-compatible
// with MoRAG.
type KeyData struct {
	UserID      string  `json:"user_id"`
	Description string  `json:"description"`
	CreatedAt   string  `json:"created_at"` // naive UTC isoformat, like Python
	ExpiresAt   *string `json:"expires_at"` // naive UTC isoformat or null
	Active      bool    `json:"active"`
}

// KeyInfo is one listed key: its hash and data, never the plaintext, which
// is not stored anywhere.
type KeyInfo struct {
	KeyHash string `json:"key_hash"`
	KeyData
}

// KeyService creates, validates, revokes and lists API keys in Redis.
type KeyService struct {
	pool *redis.Pool

	create *redis.Script
	index  *redis.Script
	revoke *redis.Script
}

// indexLua adds a key hash to its user's index and makes sure the index
// lives at least as long as the key, so it neither outlives every key by
// much nor drops a live key. A key without TTL (revoked by Python, which
// drops the TTL) makes the index persistent.
//
// KEYS[1] api key, KEYS[2] user index; ARGV[1] key hash.
const indexLua = `
local ttl = redis.call('TTL', KEYS[1])
if ttl == -2 then return 0 end
local existed = redis.call('EXISTS', KEYS[2])
local ittl = redis.call('TTL', KEYS[2])
redis.call('SADD', KEYS[2], ARGV[1])
if ttl == -1 then
  redis.call('PERSIST', KEYS[2])
elseif existed == 0 or (ittl >= 0 and ittl < ttl) then
  redis.call('EXPIRE', KEYS[2], ttl)
end
return 1
`

// NewKeyService returns a service using pool for every Redis call.
func NewKeyService(pool *redis.Pool) *KeyService {
	return &KeyService{
		pool: pool,
		// The value and its index entry are written in one script so a
		// crash between them cannot leave a key that List does not show.
		// ARGV[1] key hash, ARGV[2] value, ARGV[3] TTL seconds.
		create: redis.NewScript(2, `
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
`+indexLua),
		index: redis.NewScript(2, indexLua),
		// Compare-and-set so a concurrent rewrite is never lost, and KEEPTTL
		// so a revoked key still expires (MoRAG's plain SET drops the TTL).
		// KEYS[1] api key; ARGV[1] expected value, ARGV[2] new value.
		revoke: redis.NewScript(1, `
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
if cur ~= ARGV[1] then return -1 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
`),
	}
}

// HashKey is the sha256 hex of the key's UTF-8 bytes, MoRAG's storage name.
func HashKey(apiKey string) string {
	sum := sha256.Sum256([]byte(apiKey))
	return hex.EncodeToString(sum[:])
}

func isKeyHash(s string) bool {
	if len(s) != sha256.Size*2 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !(s[i] >= '0' && s[i] <= '9' || s[i] >= 'a' && s[i] <= 'f') {
			return false
		}
	}
	return true
}

// Create mints a key for userID like secrets.token_urlsafe(32) (43 URL-safe
// characters) and stores it the way MoRAG does. expiresDays 0 means no
// expiry: expires_at is null and the key still leaves Redis after 365 days.
// The plaintext key is returned once and stored nowhere.
func (s *KeyService) Create(ctx context.Context, userID, description string, expiresDays int) (string, KeyData, error) {
	if err := ValidateUserID(userID); err != nil {
		return "", KeyData{}, err
	}
	if expiresDays < 0 || expiresDays > MaxExpiresDays {
		return "", KeyData{}, fmt.Errorf("expires_days %d is out of range; use 1 to %d, or 0 for no expiry", expiresDays, MaxExpiresDays)
	}
	if len(description) > MaxDescriptionLen {
		return "", KeyData{}, fmt.Errorf("description is %d bytes; at most %d are allowed", len(description), MaxDescriptionLen)
	}

	var raw [32]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails; it aborts the process instead
	apiKey := base64.RawURLEncoding.EncodeToString(raw[:])
	hash := HashKey(apiKey)

	now := time.Now()
	data := KeyData{UserID: userID, Description: description, CreatedAt: pyISOFormat(now), Active: true}
	ttlDays := DefaultTTLDays
	if expiresDays > 0 {
		exp := pyISOFormat(now.Add(time.Duration(expiresDays) * 24 * time.Hour))
		data.ExpiresAt = &exp
		ttlDays = expiresDays
	}

	c, err := s.pool.GetContext(ctx)
	if err != nil {
		return "", KeyData{}, fmt.Errorf("create API key: connect to redis: %w", err)
	}
	defer c.Close()
	if _, err := s.create.DoContext(ctx, c, contract.APIKeyKey(hash), contract.UserKeysKey(userID),
		hash, encodeKeyData(data), ttlDays*86400); err != nil {
		return "", KeyData{}, fmt.Errorf("create API key: store in redis: %w", err)
	}
	return apiKey, data, nil
}

// Validate returns the key's data when it exists, is active and has not
// expired, and (nil, nil) otherwise. The error is only for Redis failures.
func (s *KeyService) Validate(ctx context.Context, apiKey string) (*KeyData, error) {
	if apiKey == "" || len(apiKey) > maxKeyLen {
		return nil, nil
	}
	c, err := s.pool.GetContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("validate API key: connect to redis: %w", err)
	}
	defer c.Close()
	raw, err := redis.Bytes(redis.DoContext(c, ctx, "GET", contract.APIKeyKey(HashKey(apiKey))))
	if errors.Is(err, redis.ErrNil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("validate API key: redis GET: %w", err)
	}
	d, err := decodeKeyData(raw)
	if err != nil || !d.Active || expired(d, time.Now()) {
		return nil, nil
	}
	return d, nil
}

// expired follows validate_api_key: an empty or null expires_at never
// expires; one that cannot be read counts as expired (Python raises there,
// which MoRAG turns into anonymous access).
func expired(d *KeyData, now time.Time) bool {
	if d.ExpiresAt == nil || *d.ExpiresAt == "" {
		return false
	}
	exp, err := parsePyISO(*d.ExpiresAt)
	if err != nil {
		return true
	}
	return now.After(exp)
}

// decodeKeyData reads a stored value. Field names are matched exactly (Go's
// struct decoding would also match "USER_ID"), and a field of the wrong type
// makes the value unusable rather than half-read.
func decodeKeyData(raw []byte) (*KeyData, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("stored key value is not a JSON object: %w", err)
	}
	var d KeyData
	field := func(name string, dst any, required bool) error {
		v, ok := m[name]
		if !ok {
			if required {
				return fmt.Errorf("stored key value has no %q", name)
			}
			return nil
		}
		if err := json.Unmarshal(v, dst); err != nil {
			return fmt.Errorf("stored key value has a bad %q: %w", name, err)
		}
		return nil
	}
	if err := errors.Join(
		field("user_id", &d.UserID, true),
		field("description", &d.Description, false),
		field("created_at", &d.CreatedAt, false),
		field("expires_at", &d.ExpiresAt, false),
		field("active", &d.Active, false),
	); err != nil {
		return nil, err
	}
	if d.UserID == "" {
		return nil, errors.New("stored key value has an empty user_id")
	}
	return &d, nil
}

// Revoke marks a key inactive. It accepts the plaintext key or its sha256
// hex (what List shows). Unlike MoRAG it keeps the TTL, so the revoked key
// still leaves Redis when it would have expired. It reports whether the key
// existed.
func (s *KeyService) Revoke(ctx context.Context, apiKeyOrHash string) (bool, error) {
	hash := apiKeyOrHash
	if !isKeyHash(hash) {
		hash = HashKey(apiKeyOrHash)
	}
	name := contract.APIKeyKey(hash)
	c, err := s.pool.GetContext(ctx)
	if err != nil {
		return false, fmt.Errorf("revoke API key: connect to redis: %w", err)
	}
	defer c.Close()
	for attempt := 0; attempt < 10; attempt++ {
		cur, err := redis.Bytes(redis.DoContext(c, ctx, "GET", name))
		if errors.Is(err, redis.ErrNil) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("revoke API key: redis GET: %w", err)
		}
		next, err := setInactive(cur)
		if err != nil {
			return false, fmt.Errorf("revoke API key %s…: %w; delete it with DEL %s", hash[:8], err, name)
		}
		res, err := redis.Int(s.revoke.DoContext(ctx, c, name, cur, next))
		if err != nil {
			return false, fmt.Errorf("revoke API key: redis: %w", err)
		}
		switch res {
		case 1:
			return true, nil
		case 0:
			return false, nil // expired between GET and the script
		}
		// -1: changed concurrently; read it again.
	}
	return false, fmt.Errorf("revoke API key %s…: the value kept changing while revoking; try again", hash[:8])
}

// List returns userID's keys, active or not, oldest first, from the per-user
// index. Hashes whose key has expired are removed from the index on the way.
// Keys created by Python MoRAG are not indexed until Reindex has run.
func (s *KeyService) List(ctx context.Context, userID string) ([]KeyInfo, error) {
	if err := ValidateUserID(userID); err != nil {
		return nil, err
	}
	c, err := s.pool.GetContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("list API keys: connect to redis: %w", err)
	}
	defer c.Close()
	idx := contract.UserKeysKey(userID)
	hashes, err := redis.Strings(redis.DoContext(c, ctx, "SMEMBERS", idx))
	if err != nil {
		return nil, fmt.Errorf("list API keys: redis SMEMBERS %s: %w", idx, err)
	}
	out := []KeyInfo{}
	var stale []any
	const chunk = 256
	for len(hashes) > 0 {
		n := min(chunk, len(hashes))
		batch := hashes[:n]
		hashes = hashes[n:]
		args := make([]any, len(batch))
		for i, h := range batch {
			args[i] = contract.APIKeyKey(h)
		}
		vals, err := redis.ByteSlices(redis.DoContext(c, ctx, "MGET", args...))
		if err != nil {
			return nil, fmt.Errorf("list API keys: redis MGET: %w", err)
		}
		for i, v := range vals {
			if v == nil {
				stale = append(stale, batch[i])
				continue
			}
			d, err := decodeKeyData(v)
			if err != nil {
				continue // unreadable; Validate refuses it too
			}
			if d.UserID != userID {
				stale = append(stale, batch[i]) // not this user's key: the index is wrong
				continue
			}
			out = append(out, KeyInfo{KeyHash: batch[i], KeyData: *d})
		}
	}
	if len(stale) > 0 {
		if _, err := redis.DoContext(c, ctx, "SREM", append([]any{idx}, stale...)...); err != nil {
			return nil, fmt.Errorf("list API keys: prune index %s: %w", idx, err)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].CreatedAt != out[j].CreatedAt {
			return out[i].CreatedAt < out[j].CreatedAt
		}
		return out[i].KeyHash < out[j].KeyHash
	})
	return out, nil
}

// Reindex adds keys that Python MoRAG created (it keeps no index) to their
// users' indexes, so List shows them. It SCANs morag:api_keys:*, so run it
// once at startup or from an admin command, not per request. Keys whose
// user_id fails ValidateUserID are skipped. It returns how many keys it
// indexed.
func (s *KeyService) Reindex(ctx context.Context) (int, error) {
	c, err := s.pool.GetContext(ctx)
	if err != nil {
		return 0, fmt.Errorf("reindex API keys: connect to redis: %w", err)
	}
	defer c.Close()
	indexed := 0
	cursor := "0"
	for {
		reply, err := redis.Values(redis.DoContext(c, ctx, "SCAN", cursor, "MATCH", contract.APIKeyPrefix+"*", "COUNT", 500))
		if err != nil {
			return indexed, fmt.Errorf("reindex API keys: redis SCAN: %w", err)
		}
		var names []string
		if _, err := redis.Scan(reply, &cursor, &names); err != nil {
			return indexed, fmt.Errorf("reindex API keys: redis SCAN reply: %w", err)
		}
		for _, name := range names {
			hash := name[len(contract.APIKeyPrefix):]
			if !isKeyHash(hash) {
				continue
			}
			raw, err := redis.Bytes(redis.DoContext(c, ctx, "GET", name))
			if errors.Is(err, redis.ErrNil) {
				continue
			}
			if err != nil {
				return indexed, fmt.Errorf("reindex API keys: redis GET: %w", err)
			}
			d, err := decodeKeyData(raw)
			if err != nil || ValidateUserID(d.UserID) != nil {
				continue
			}
			n, err := redis.Int(s.index.DoContext(ctx, c, name, contract.UserKeysKey(d.UserID), hash))
			if err != nil {
				return indexed, fmt.Errorf("reindex API keys: redis: %w", err)
			}
			indexed += n
		}
		if cursor == "0" {
			return indexed, nil
		}
	}
}
