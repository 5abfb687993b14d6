package media

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"syscall"
	"testing"
	"time"
)

// A child runs in its own process group, under the limits asked for, and
// its wall-clock limit kills it and is named.
func TestChildBounds(t *testing.T) {
	lim := childLimits{Wall: 300 * time.Millisecond, CPU: 7 * time.Second, Memory: 512 << 20, FileSize: 0}
	c, _, err := startChild(context.Background(), "sleep", []string{"30"}, lim, nil, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	pid := c.cmd.Process.Pid
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"Max address space": fmt.Sprint(512 << 20),
		"Max cpu time":      "7",
		"Max file size":     "0",
	} {
		re := regexp.MustCompile(name + `\s+(\S+)`)
		if m := re.FindSubmatch(limits); m == nil || string(m[1]) != want {
			t.Errorf("%s: %q, want %s\n%s", name, m, want, limits)
		}
	}
	if pgid, err := syscall.Getpgid(pid); err != nil || pgid != pid {
		t.Errorf("process group %d (%v), want its own (%d)", pgid, err, pid)
	}
	start := time.Now()
	err = c.wait()
	if err == nil {
		t.Fatal("sleep 30 ended without error under a 300 ms limit")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the wall-clock limit took %v to end the child", d)
	}
	l := c.limitHit("")
	if l == nil || l.Limit != "time" {
		t.Fatalf("limitHit = %v, want the time limit", l)
	}
	if !errors.Is(&Error{Kind: ErrLimit, Err: l}, ErrLimit) {
		t.Error("a LimitError is not ErrLimit")
	}
}
