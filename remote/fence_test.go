package remote

import (
	"testing"
	"time"
)

// The gateway's clock is estimated from the answer with the shortest
// round trip, never later than it can be: a lease bound computed from it
// must not outlive the lease.
func TestGatewayClockKeepsTheTightestSample(t *testing.T) {
	var g gatewayClock
	if _, ok := g.earliest(time.Now()); ok {
		t.Fatal("a clock with no sample claims to know the gateway's time")
	}
	local := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	ahead := 5 * time.Second // the gateway's clock runs 5 s ahead
	at := func(sent time.Time, rtt time.Duration) {
		g.sample(sent, sent.Add(rtt), sent.Add(rtt/2).Add(ahead).UnixMilli())
	}
	at(local, 200*time.Millisecond)
	got, _ := g.earliest(local)
	if want := local.Add(ahead - 101*time.Millisecond); !got.Equal(want) {
		t.Errorf("earliest %v; want %v (offset less half the round trip and the header's millisecond)", got, want)
	}
	at(local.Add(time.Second), 20*time.Millisecond) // tighter: replaces
	got, _ = g.earliest(local)
	if want := local.Add(ahead - 11*time.Millisecond); !got.Equal(want) {
		t.Errorf("after a tighter sample, earliest %v; want %v", got, want)
	}
	at(local.Add(2*time.Second), 400*time.Millisecond) // looser and recent: ignored
	if again, _ := g.earliest(local); !again.Equal(got) {
		t.Errorf("a looser sample replaced a tighter one: %v, was %v", again, got)
	}
	at(local.Add(clockSampleTTL+2*time.Second), 400*time.Millisecond) // the tight one is too old now
	got, _ = g.earliest(local)
	if want := local.Add(ahead - 201*time.Millisecond); !got.Equal(want) {
		t.Errorf("after the best sample aged out, earliest %v; want %v", got, want)
	}
}
