package auth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/rs/zerolog"
)

// MiddlewareOptions configures Middleware.
type MiddlewareOptions struct {
	Logger zerolog.Logger
	// Guard checks the credentials; nil builds one from the fields below.
	// Share one Guard with every other credential check (validate-key) so
	// they all count against the same budget.
	Guard *Guard
	// AdminToken, FailuresPerMinute (default 10), Burst (default
	// FailuresPerMinute) and Limiter are NewGuard's options when Guard is nil.
	AdminToken        string
	FailuresPerMinute int
	Burst             int
	Limiter           *Limiter
}

type userCtxKey struct{}

// echoUserKey and echoAdminKey are where Middleware leaves the caller in
// the echo.Context.
const (
	echoUserKey  = "morag.auth.user"
	echoAdminKey = "morag.auth.admin"
)

// Middleware identifies the caller, as MoRAG's APIKeyAuth does for keys:
// "Authorization: Bearer <key>" first, then "X-API-Key". A missing, invalid,
// expired or revoked key, or a Redis failure, leaves the request anonymous
// and it continues; only the failure is logged. Handlers read the caller
// with UserFrom, or require one with RequireUser.
//
// The admin token is accepted as "X-Admin-Token: <token>" or as the Bearer
// value; IsAdmin reports it. Every credential goes through the Guard, so
// wrong admin tokens count against the same per-client budget as wrong API
// keys, and a client past its budget gets 429 with Retry-After for anything
// but a valid API key (see Guard). Requests without credentials are never
// limited. Redis failures do not count against the client.
//
// Unlike MoRAG, the "Bearer" scheme is matched case-insensitively (RFC 9110).
//
// The client is the echo IPExtractor's answer when the Echo has one (the
// gateway always sets one, trusting forwarding headers only from
// -trusted-proxies), else the TCP peer. IPv6 clients are grouped by /64,
// the block one host usually controls.
func Middleware(svc *KeyService, opts MiddlewareOptions) echo.MiddlewareFunc {
	guard := opts.Guard
	if guard == nil {
		guard = NewGuard(svc, GuardOptions{AdminToken: opts.AdminToken, Limiter: opts.Limiter,
			FailuresPerMinute: opts.FailuresPerMinute, Burst: opts.Burst, Logger: opts.Logger})
	}
	// Failed and refused credentials are logged per request; a guesser
	// makes many a second, so a few are logged, not each.
	log := opts.Logger.Sample(&zerolog.BurstSampler{Burst: 10, Period: time.Second})
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			adminHdr := strings.TrimSpace(req.Header.Get("X-Admin-Token"))
			key, source := credentials(req)
			if key == "" && adminHdr == "" {
				return next(c)
			}
			client := ClientKey(c)
			refuse := func(tm *TooManyFailures) error {
				log.Warn().Str("client_ip", client).Str("path", req.URL.Path).Int("retry_after_s", tm.Seconds()).
					Msg("too many failed credential attempts; refusing")
				c.Response().Header().Set("Retry-After", strconv.Itoa(tm.Seconds()))
				return c.JSON(http.StatusTooManyRequests, map[string]string{
					"detail": fmt.Sprintf("Too many invalid credentials from this client; retry after %d seconds", tm.Seconds()),
				})
			}
			if adminHdr != "" {
				ok, err := guard.CheckAdmin(client, adminHdr)
				var tm *TooManyFailures
				if errors.As(err, &tm) {
					return refuse(tm)
				}
				if ok {
					c.Set(echoAdminKey, true)
					return next(c)
				}
				if guard.AdminEnabled() {
					log.Warn().Str("client_ip", client).Str("path", req.URL.Path).Msg("wrong admin token (X-Admin-Token)")
				}
			}
			if key == "" {
				return next(c)
			}
			// A Bearer value may be the admin token; a blocked client's
			// Bearer is only tried as an API key (see Guard).
			if source == "authorization" && guard.AdminEnabled() {
				if _, blocked := guard.Limiter().Blocked(client); !blocked && guard.IsAdminToken(key) {
					c.Set(echoAdminKey, true)
					return next(c)
				}
			}
			user, err := guard.CheckKey(req.Context(), client, key)
			var tm *TooManyFailures
			switch {
			case errors.As(err, &tm):
				return refuse(tm)
			case err != nil:
				log.Error().Err(err).Str("client_ip", client).Str("path", req.URL.Path).
					Msg("API key check failed; continuing as anonymous")
			case user == nil:
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

// IsAdmin reports whether Middleware found the admin token on the request.
func IsAdmin(c echo.Context) bool {
	ok, _ := c.Get(echoAdminKey).(bool)
	return ok
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

// ClientKey is the rate-limit identity of the caller; see Middleware.
func ClientKey(c echo.Context) string {
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
