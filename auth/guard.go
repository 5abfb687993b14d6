package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"time"

	"github.com/rs/zerolog"
)

// Guard is the one place where credentials are checked: API keys (from a
// header or from validate-key's form) and the admin token (Bearer or
// X-Admin-Token). Every failed check of any kind takes a token from the same
// per-client Limiter, so a guesser cannot switch to an unlimited path.
//
// The two kinds of secret are treated differently on purpose:
//   - API keys are 256-bit random values: guessing one is hopeless, so a
//     valid key is always accepted, even from a blocked client (issue 15:
//     a client behind a busy NAT must not lose access because a neighbour
//     typed wrong keys). A blocked client's invalid keys get 429 instead of
//     anonymous service.
//   - The admin token is chosen by the operator and may be weak: a blocked
//     client's admin tokens are refused without being compared, so the
//     limiter really bounds how many can be tried.
type Guard struct {
	keys  *KeyService
	lim   *Limiter
	admin [32]byte // sha256 of the admin token: compared in constant time, length hidden
	has   bool     // an admin token is configured
	log   zerolog.Logger
}

// GuardOptions configure NewGuard.
type GuardOptions struct {
	// AdminToken enables admin checks; empty disables them (every admin
	// check fails without counting).
	AdminToken string
	// Limiter counts failures; nil builds one from FailuresPerMinute and Burst.
	Limiter           *Limiter
	FailuresPerMinute int
	Burst             int
	Logger            zerolog.Logger
}

// NewGuard checks API keys against keys (nil: every key is invalid).
func NewGuard(keys *KeyService, opts GuardOptions) *Guard {
	lim := opts.Limiter
	if lim == nil {
		lim = NewLimiter(opts.FailuresPerMinute, opts.Burst)
	}
	g := &Guard{keys: keys, lim: lim, log: opts.Logger}
	if opts.AdminToken != "" {
		g.admin, g.has = sha256.Sum256([]byte(opts.AdminToken)), true
	}
	return g
}

// TooManyFailures is the error of a check refused because the client used
// up its failed-attempt budget.
type TooManyFailures struct{ RetryAfter time.Duration }

func (e *TooManyFailures) Error() string {
	return fmt.Sprintf("too many failed credential attempts from this client; retry after %d seconds", e.Seconds())
}

// Seconds is RetryAfter rounded up, at least 1 (the Retry-After header).
func (e *TooManyFailures) Seconds() int {
	s := int((e.RetryAfter + time.Second - 1) / time.Second)
	return max(1, s)
}

// Limiter is the limiter every check counts against.
func (g *Guard) Limiter() *Limiter { return g.lim }

// AdminEnabled reports whether an admin token is configured.
func (g *Guard) AdminEnabled() bool { return g.has }

// CheckKey validates an API key presented by client. It returns the key's
// user; nil and no error for an invalid key (counted as a failure);
// *TooManyFailures for an invalid key from a blocked client; any other
// error is Redis failing, which is not the client's fault and not counted.
func (g *Guard) CheckKey(ctx context.Context, client, key string) (*KeyData, error) {
	if g.keys == nil {
		return nil, nil
	}
	user, err := g.keys.Validate(ctx, key)
	if err != nil || user != nil {
		return user, err
	}
	wait, blocked := g.lim.Blocked(client)
	g.lim.Fail(client)
	if blocked {
		return nil, &TooManyFailures{RetryAfter: wait}
	}
	return nil, nil
}

// CheckAdmin reports whether token is the admin token. A wrong token counts
// as a failure; a blocked client gets *TooManyFailures and its token is not
// compared at all.
func (g *Guard) CheckAdmin(client, token string) (bool, error) {
	if !g.has || token == "" {
		return false, nil
	}
	if wait, blocked := g.lim.Blocked(client); blocked {
		g.lim.Fail(client)
		return false, &TooManyFailures{RetryAfter: wait}
	}
	if g.IsAdminToken(token) {
		return true, nil
	}
	g.lim.Fail(client)
	return false, nil
}

// IsAdminToken compares token with the admin token in constant time (over
// their sha256, so neither content nor length leaks through timing). It
// does not count; callers go through CheckAdmin.
func (g *Guard) IsAdminToken(token string) bool {
	if !g.has {
		return false
	}
	sum := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(sum[:], g.admin[:]) == 1
}
