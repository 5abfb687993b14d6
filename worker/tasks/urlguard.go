package tasks

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// BlockedAddressError is why a connection to a URL's host was refused: the
// address it resolved to is loopback, private, link-local or otherwise not
// on the public internet.
type BlockedAddressError struct {
	Addr  netip.Addr
	Class string // "loopback", "private", "link-local", ...
}

func (e *BlockedAddressError) Error() string {
	return fmt.Sprintf("address %s is %s; the worker refuses to fetch URLs on non-public addresses (start it with -allow-private-urls to allow them)", e.Addr, e.Class)
}

// nonPublic lists ranges that netip's predicates do not cover but that
// still reach something other than the public internet.
var nonPublic = []struct {
	prefix netip.Prefix
	class  string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "\"this network\""},
	{netip.MustParsePrefix("100.64.0.0/10"), "carrier-grade NAT (shared)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignment"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "local-use NAT64"},
}

// IPv6 forms that carry an IPv4 address: what they reach is decided by that
// IPv4 address, so they are classified by it (a guard that looked only at
// the IPv6 predicates would let 2002:7f00:1:: through to 127.0.0.1).
var (
	nat64      = netip.MustParsePrefix("64:ff9b::/96")    // RFC 6052, v4 in the last 32 bits
	v4compat   = netip.MustParsePrefix("::/96")           // deprecated IPv4-compatible ::a.b.c.d
	v4translat = netip.MustParsePrefix("::ffff:0:0:0/96") // SIIT IPv4-translated
	sixToFour  = netip.MustParsePrefix("2002::/16")       // 6to4, v4 in bits 16..47
	teredo     = netip.MustParsePrefix("2001::/32")       // server v4 in bits 32..63, client v4 inverted in the last 32
)

// embeddedIPv4 returns the IPv4 addresses an IPv6 address carries (none for
// a plain IPv6 address). IPv4-mapped addresses are unmapped before this.
func embeddedIPv4(a netip.Addr) []netip.Addr {
	b := a.As16()
	last := netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	switch {
	case nat64.Contains(a), v4translat.Contains(a):
		return []netip.Addr{last}
	case v4compat.Contains(a):
		// :: and ::1 are the IPv6 unspecified and loopback addresses, not
		// 0.0.0.0 and 0.0.0.1; the predicates below classify them.
		if a == netip.IPv6Unspecified() || a == netip.IPv6Loopback() {
			return nil
		}
		return []netip.Addr{last}
	case sixToFour.Contains(a):
		return []netip.Addr{netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})}
	case teredo.Contains(a):
		return []netip.Addr{
			netip.AddrFrom4([4]byte{b[4], b[5], b[6], b[7]}),
			netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]}),
		}
	case b[8]&^0x02 == 0 && b[9] == 0 && b[10] == 0x5e && b[11] == 0xfe:
		// ISATAP interface identifier (::0:5efe:a.b.c.d, ::200:5efe:a.b.c.d).
		return []netip.Addr{last}
	}
	return nil
}

// addressClass returns why a is not a public address, or "" when it is.
func addressClass(a netip.Addr) string {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		for _, v4 := range embeddedIPv4(a) {
			if class := addressClass(v4); class != "" {
				return class + " (embedded in " + a.String() + ")"
			}
		}
	}
	switch {
	case !a.IsValid():
		return "invalid"
	case a.IsLoopback():
		return "loopback"
	case a.IsPrivate():
		return "private"
	case a.IsLinkLocalUnicast():
		return "link-local"
	case a.IsUnspecified():
		return "unspecified"
	case a.IsMulticast(), a.IsLinkLocalMulticast(), a.IsInterfaceLocalMulticast():
		return "multicast"
	}
	if a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return "broadcast"
	}
	for _, r := range nonPublic {
		if r.prefix.Contains(a) {
			return r.class
		}
	}
	return ""
}

// refuseNonPublic is a net.Dialer Control function. It runs after name
// resolution, on the address actually being dialled, so a host name that
// resolves to a public address when checked and to 127.0.0.1 when used
// (DNS rebinding) is still refused, and so is every redirect target.
func refuseNonPublic(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("refusing to dial %q: %w", address, err)
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("refusing to dial %q: not an IP address", address)
	}
	if class := addressClass(a); class != "" {
		return &BlockedAddressError{Addr: a.Unmap().WithZone(""), Class: class}
	}
	return nil
}

// blockedAddress digs a BlockedAddressError out of an HTTP client error.
func blockedAddress(err error) *BlockedAddressError {
	var b *BlockedAddressError
	if errors.As(err, &b) {
		return b
	}
	return nil
}
