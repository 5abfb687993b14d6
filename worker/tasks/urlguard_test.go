package tasks

import (
	"net/netip"
	"strings"
	"testing"
)

func TestAddressClass(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1":         "loopback",
		"127.8.9.10":        "loopback",
		"::1":               "loopback",
		"10.1.2.3":          "private",
		"172.16.0.1":        "private",
		"192.168.1.1":       "private",
		"fd00::1":           "private",
		"169.254.169.254":   "link-local", // cloud metadata
		"fe80::1":           "link-local",
		"0.0.0.0":           "unspecified",
		"::":                "unspecified",
		"::ffff:127.0.0.1":  "loopback", // IPv4-mapped
		"::ffff:10.0.0.1":   "private",
		"64:ff9b::a00:1":    "private", // NAT64 of 10.0.0.1
		"100.64.0.1":        "carrier-grade NAT (shared)",
		"224.0.0.1":         "multicast",
		"255.255.255.255":   "broadcast",
		"8.8.8.8":           "",
		"93.184.216.34":     "",
		"2606:4700::6810:1": "",
		"64:ff9b::808:808":  "", // NAT64 of 8.8.8.8
	} {
		if got := addressClass(netip.MustParseAddr(addr)); got != want {
			t.Errorf("addressClass(%s) = %q, want %q", addr, got, want)
		}
	}
}

func TestRefuseNonPublicDial(t *testing.T) {
	err := refuseNonPublic("tcp", "127.0.0.1:80", nil)
	b := blockedAddress(err)
	if b == nil || b.Class != "loopback" {
		t.Fatalf("refuseNonPublic(127.0.0.1) = %v, want a loopback BlockedAddressError", err)
	}
	if !strings.Contains(err.Error(), "-allow-private-urls") {
		t.Errorf("error %q should say how to allow it", err)
	}
	if err := refuseNonPublic("tcp", "[2606:4700::6810:1]:443", nil); err != nil {
		t.Errorf("public IPv6 refused: %v", err)
	}
	if err := refuseNonPublic("tcp", "not-an-address", nil); err == nil {
		t.Error("a malformed address was let through")
	}
}
