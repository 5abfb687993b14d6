package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestAdminTokenOnCommandLineWarns: a token given as -admin-token is
// visible to every local user in ps; the gateway says so and names the
// alternatives. (Redis is unreachable here, so it stops right after.)
func TestAdminTokenOnCommandLineWarns(t *testing.T) {
	gw := build(t, t.TempDir(), "./gateway", "gateway")
	out, _ := exec.Command(gw, "-admin-token", "tok-on-the-command-line", "-redis", "redis://127.0.0.1:1/0", "-addr", "127.0.0.1:0").CombinedOutput()
	if !strings.Contains(string(out), "-admin-token-file") || !strings.Contains(string(out), "visible") {
		t.Fatalf("no warning about -admin-token on the command line:\n%s", out)
	}
	out, _ = exec.Command(gw, "-redis", "redis://127.0.0.1:1/0", "-addr", "127.0.0.1:0").CombinedOutput()
	if strings.Contains(string(out), "visible") {
		t.Fatalf("warned without -admin-token:\n%s", out)
	}
}
