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
		"64:ff9b::a00:1":    "private (embedded in 64:ff9b::a00:1)", // NAT64 of 10.0.0.1
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

// TestAddressClassEmbeddedIPv4: every IPv6 form that carries an IPv4
// address is judged by that address (the attack: 2002:7f00:1:: reached the
// worker's own loopback through a 6to4 relay-less host).
func TestAddressClassEmbeddedIPv4(t *testing.T) {
	for addr, want := range map[string]string{
		"::127.0.0.1":                          "loopback",   // IPv4-compatible
		"::10.0.0.1":                           "private",    // IPv4-compatible
		"::169.254.169.254":                    "link-local", // IPv4-compatible, cloud metadata
		"::ffff:0:127.0.0.1":                   "loopback",   // SIIT IPv4-translated
		"2002:7f00:1::":                        "loopback",   // 6to4 of 127.0.0.1
		"2002:a9fe:a9fe::1":                    "link-local", // 6to4 of 169.254.169.254
		"2002:c0a8:101:1::1":                   "private",    // 6to4 of 192.168.1.1
		"2001:0:4136:e378:8000:63bf:80ff:fffe": "loopback",   // Teredo, client 127.0.0.1 (inverted)
		"2001:0:a00:1::1":                      "private",    // Teredo, server 10.0.0.1
		"fe80::5efe:10.0.0.1":                  "private",    // ISATAP on a link-local prefix
		"2001:db8::5efe:127.0.0.1":             "loopback",   // ISATAP identifier
	} {
		got := addressClass(netip.MustParseAddr(addr))
		if !strings.HasPrefix(got, want) {
			t.Errorf("addressClass(%s) = %q, want %q...", addr, got, want)
		}
	}
	for _, addr := range []string{"::", "::1", "2002:808:808::1", "2001:0:4136:e378:8000:63bf:f7f7:f7f7", "::8.8.8.8"} {
		got := addressClass(netip.MustParseAddr(addr))
		if addr == "::" || addr == "::1" {
			if got != "unspecified" && got != "loopback" {
				t.Errorf("addressClass(%s) = %q", addr, got)
			}
			continue
		}
		if got != "" {
			t.Errorf("addressClass(%s) = %q, want public", addr, got)
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
