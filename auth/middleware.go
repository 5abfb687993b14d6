package auth

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/rs/zerolog"
)

// MiddlewareOptions configures Middleware.
type MiddlewareOptions struct {
	Logger zerolog.Logger
	// FailuresPerMinute is how fast a client's failed-attempt budget refills
	// (default 10), and Burst how many failures it may make at once (default
	// FailuresPerMinute).
	FailuresPerMinute int
	Burst             int
	// Limiter, when set, is used instead of one built from the fields above,
	// for sharing one budget between several middlewares.
	Limiter *Limiter
}

type userCtxKey struct{}

// echoUserKey is where Middleware leaves the user in the echo.Context.
const echoUserKey = "morag.auth.user"

// Middleware identifies the caller by API key, as MoRAG's APIKeyAuth does:
// "Authorization: Bearer <key>" first, then "X-API-Key". A missing, invalid,
// expired or revoked key, or a Redis failure, leaves the request anonymous
// and it continues; only the failure is logged. Handlers read the caller
// with UserFrom, or require one with RequireUser.
//
// Unlike MoRAG, the "Bearer" scheme is matched case-insensitively (RFC 9110),
// and failed attempts are rate-limited per client: a client that presents
// keys after exhausting its budget gets 429 with Retry-After, without a
// Redis lookup. Requests without a key are never limited. Redis failures do
// not count against the client.
//
// The client is the echo IPExtractor's answer when the Echo has one (set it
// when behind a proxy), else the TCP peer: X-Forwarded-For is not trusted by
// default because a guesser would rotate it. IPv6 clients are grouped by /64,
// the block one host usually controls.
func Middleware(svc *KeyService, opts MiddlewareOptions) echo.MiddlewareFunc {
	lim := opts.Limiter
	if lim == nil {
		lim = NewLimiter(opts.FailuresPerMinute, opts.Burst)
	}
	log := opts.Logger
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			key, source := credentials(req)
			if key == "" {
				return next(c)
			}
			client := clientKey(c)
			if wait, blocked := lim.Blocked(client); blocked {
				secs := max(1, int(math.Ceil(wait.Seconds())))
				log.Warn().Str("client_ip", client).Str("path", req.URL.Path).Int("retry_after_s", secs).
					Msg("too many invalid API key attempts; refusing")
				c.Response().Header().Set("Retry-After", strconv.Itoa(secs))
				return c.JSON(http.StatusTooManyRequests, map[string]string{
					"detail": fmt.Sprintf("Too many invalid API key attempts; retry after %d seconds", secs),
				})
			}
			if svc == nil {
				return next(c)
			}
			user, err := svc.Validate(req.Context(), key)
			switch {
			case err != nil:
				log.Error().Err(err).Str("client_ip", client).Str("path", req.URL.Path).
					Msg("API key check failed; continuing as anonymous")
			case user == nil:
				lim.Fail(client)
				log.Warn().Str("client_ip", client).Str("source", source).Str("path", req.URL.Path).
					Msg("invalid API key provided; continuing as anonymous")
			default:
				c.Set(echoUserKey, user)
				c.SetRequest(req.WithContext(context.WithValue(req.Context(), userCtxKey{}, user)))
			}
			return next(c)
		}
	}
}

// credentials returns the presented key and the header it came from.
func credentials(r *http.Request) (key, source string) {
	const scheme = "bearer "
	if h := r.Header.Get("Authorization"); len(h) > len(scheme) && strings.EqualFold(h[:len(scheme)], scheme) {
		if k := strings.TrimSpace(h[len(scheme):]); k != "" {
			return k, "authorization"
		}
	}
	if k := strings.TrimSpace(r.Header.Get("X-API-Key")); k != "" {
		return k, "x-api-key"
	}
	return "", ""
}

// clientKey is the rate-limit identity of the caller; see Middleware.
func clientKey(c echo.Context) string {
	var host string
	if c.Echo() != nil && c.Echo().IPExtractor != nil {
		host = c.RealIP()
	} else {
		h, _, err := net.SplitHostPort(c.Request().RemoteAddr)
		if err != nil {
			h = c.Request().RemoteAddr
		}
		host = h
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return host
	}
	if ip.To4() == nil {
		return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
	}
	return ip.String()
}

// UserFrom returns the caller Middleware identified, or nil for anonymous.
func UserFrom(c echo.Context) *KeyData {
	u, _ := c.Get(echoUserKey).(*KeyData)
	return u
}

// FromContext is UserFrom for code that only has the request's context.
func FromContext(ctx context.Context) *KeyData {
	u, _ := ctx.Value(userCtxKey{}).(*KeyData)
	return u
}

// RequireUser answers 401 {"detail": "Valid API key required"} with
// WWW-Authenticate: Bearer, as MoRAG's require_authentication does, unless
// Middleware identified the caller.
func RequireUser(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if UserFrom(c) == nil {
			c.Response().Header().Set("WWW-Authenticate", "Bearer")
			return c.JSON(http.StatusUnauthorized, map[string]string{"detail": "Valid API key required"})
		}
		return next(c)
	}
}
