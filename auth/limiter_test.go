package auth

import (
	"strconv"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func newFakeLimiter(perMin, burst int) (*Limiter, *fakeClock) {
	c := &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	l := NewLimiter(perMin, burst)
	l.now = c.now
	return l, c
}

func TestLimiterBurstAndRefill(t *testing.T) {
	l, clk := newFakeLimiter(6, 2) // one token back every 10 s
	if _, blocked := l.Blocked("a"); blocked {
		t.Fatal("unknown client blocked")
	}
	l.Fail("a")
	if _, blocked := l.Blocked("a"); blocked {
		t.Fatal("blocked after 1 of 2 failures")
	}
	l.Fail("a")
	wait, blocked := l.Blocked("a")
	if !blocked || wait <= 0 || wait > 10*time.Second {
		t.Fatalf("after burst: blocked=%v wait=%v, want blocked for up to 10s", blocked, wait)
	}
	if _, blocked := l.Blocked("b"); blocked {
		t.Fatal("another client blocked")
	}
	clk.add(5 * time.Second)
	if wait, blocked := l.Blocked("a"); !blocked || wait > 5*time.Second+time.Millisecond {
		t.Fatalf("half refilled: blocked=%v wait=%v", blocked, wait)
	}
	clk.add(5 * time.Second)
	if _, blocked := l.Blocked("a"); blocked {
		t.Fatal("still blocked after a token came back")
	}
	l.Fail("a")
	if _, blocked := l.Blocked("a"); !blocked {
		t.Fatal("one refilled token allows exactly one more failure")
	}
}

func TestLimiterDefaults(t *testing.T) {
	l, _ := newFakeLimiter(0, 0)
	for i := 0; i < DefaultFailuresPerMinute; i++ {
		if _, blocked := l.Blocked("a"); blocked {
			t.Fatalf("blocked after %d failures; default burst is %d", i, DefaultFailuresPerMinute)
		}
		l.Fail("a")
	}
	if _, blocked := l.Blocked("a"); !blocked {
		t.Fatal("not blocked after the default burst")
	}
}

func TestLimiterForgetsIdleClients(t *testing.T) {
	l, clk := newFakeLimiter(60, 5)
	for i := 0; i < 100; i++ {
		l.Fail("10.0.0." + strconv.Itoa(i))
	}
	if l.Len() != 100 {
		t.Fatalf("Len = %d", l.Len())
	}
	clk.add(2 * time.Minute) // every bucket has refilled
	l.Blocked("someone")     // any call sweeps
	if l.Len() != 0 {
		t.Fatalf("idle clients kept: Len = %d", l.Len())
	}
}

func TestLimiterIsBounded(t *testing.T) {
	l, _ := newFakeLimiter(1, 1)
	l.maxEntries = 50
	for i := 0; i < 1000; i++ {
		l.Fail("c" + strconv.Itoa(i))
	}
	if l.Len() > 50 {
		t.Fatalf("Len = %d, want at most 50", l.Len())
	}
}
