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

// nat64 is the well-known NAT64 prefix: its addresses carry an IPv4 address
// in the last 32 bits, which is what is really reached.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// addressClass returns why a is not a public address, or "" when it is.
func addressClass(a netip.Addr) string {
	a = a.Unmap().WithZone("")
	if a.Is6() && nat64.Contains(a) {
		b := a.As16()
		return addressClass(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
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
