package files

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"morag-gpu/contract"
	"strconv"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Errors from Verify.
var (
	ErrBadSignature = errors.New("invalid download token")
	ErrExpired      = errors.New("download link expired")
)

// LoadSecret returns configured when set, else the secret stored in Redis,
// creating it once (SET NX) so that all gateways agree.
func LoadSecret(ctx context.Context, pool *redis.Pool, configured string) ([]byte, error) {
	if configured != "" {
		if len(configured) < 16 {
			return nil, errors.New("files: the URL signing secret must be at least 16 characters")
		}
		return []byte(configured), nil
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, err
	}
	c, err := pool.GetContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("files: redis: %w", err)
	}
	defer c.Close()
	if _, err := redis.DoContext(c, ctx, "SET", contract.URLSecretKey, base64.RawURLEncoding.EncodeToString(raw[:]), "NX"); err != nil {
		return nil, fmt.Errorf("files: store URL signing secret: %w", err)
	}
	s, err := redis.String(redis.DoContext(c, ctx, "GET", contract.URLSecretKey))
	if err != nil {
		return nil, fmt.Errorf("files: read URL signing secret: %w", err)
	}
	return []byte(s), nil
}

func (s *Store) sign(id string, expires int64) string {
	m := hmac.New(sha256.New, s.opts.Secret)
	fmt.Fprintf(m, "%s\n%d", id, expires)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// SignedPrefix starts the path of a signed file URL.
const SignedPrefix = "/api/v1/files/s/"

// SignedURL is the URL a worker downloads id from without an API key:
// <publicURL>/api/v1/files/s/<expires unix>/<hmac>/<id>. The signature is in
// the path, not the query, so the URL ends in the upload's own name and
// extension: MoRAG's remote task takes the temp file's suffix from
// Path(file_url).suffix, which a query string would turn into
// ".mp4?expires=…" and break its type detection.
func (s *Store) SignedURL(publicURL, id string, ttl time.Duration) string {
	exp := time.Now().Add(ttl).Unix()
	return strings.TrimRight(publicURL, "/") + SignedPrefix + strconv.FormatInt(exp, 10) + "/" + s.sign(id, exp) + "/" + id
}

// Token is the signature SignedURL puts in a URL for id valid until
// expires (unix seconds).
func (s *Store) Token(id string, expires int64) string { return s.sign(id, expires) }

// Verify checks a signed URL's token and expiry for id.
func (s *Store) Verify(id, expires, token string) error {
	exp, err := strconv.ParseInt(expires, 10, 64)
	if err != nil {
		return ErrBadSignature
	}
	if !hmac.Equal([]byte(s.sign(id, exp)), []byte(token)) {
		return ErrBadSignature
	}
	if time.Now().Unix() > exp {
		return ErrExpired
	}
	return nil
}
