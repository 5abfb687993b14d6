package httpapi

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/labstack/echo/v4"
)

// parseTrusted reads -trusted-proxies: addresses or CIDRs, each entry of
// the list possibly comma-separated itself.
func parseTrusted(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, item := range list {
		for _, s := range strings.Split(item, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			if !strings.Contains(s, "/") {
				a, err := netip.ParseAddr(s)
				if err != nil {
					return nil, fmt.Errorf("gateway: -trusted-proxies %q: not an address or CIDR", s)
				}
				out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
				continue
			}
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("gateway: -trusted-proxies %q: %v", s, err)
			}
			out = append(out, p.Masked())
		}
	}
	return out, nil
}

func (g *Gateway) isTrustedProxy(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range g.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ipExtractor is how the gateway finds the client's IP (logs, the
// credential limiter): the TCP peer, unless the peer is a trusted proxy,
// in which case X-Forwarded-For is walked from the right past trusted
// proxies. echo's own defaults trust every private and loopback address,
// which would let anyone on the LAN forge their IP; they are turned off.
func (g *Gateway) ipExtractor() echo.IPExtractor {
	if len(g.trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, p := range g.trusted {
		opts = append(opts, echo.TrustIPRange(&net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}
