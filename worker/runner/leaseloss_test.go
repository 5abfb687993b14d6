package runner

import (
	"testing"
	"time"
)

// The lease-loss decision on explicit times: a lease is lost only while
// refreshes fail, and only once it is strictly older than the visibility
// timeout, counted from the last good round or the fetch, whichever is later.
func TestLeaseLapsedExactly(t *testing.T) {
	const vt = 3 * time.Second
	t0 := time.Unix(1700000000, 0)
	w := newLeaseWatch(t0)
	r := &request{received: t0.Add(-time.Hour)} // fetched long before the watch began

	// Refreshes succeed: never lost, however old the last good round.
	if _, lost := w.lapsed(r, t0.Add(time.Hour), vt); lost {
		t.Fatal("lease lost while refreshes succeed")
	}
	// A good round at t0+1s, then a failing one: the lease dates from t0+1s.
	w.round(t0.Add(time.Second), true)
	w.round(t0.Add(2*time.Second), false)
	if since, lost := w.lapsed(r, t0.Add(time.Second+vt), vt); lost || !since.Equal(t0.Add(time.Second)) {
		t.Fatalf("exactly vt after the last good round: since %v lost %v; want since t0+1s, kept", since.Sub(t0), lost)
	}
	if _, lost := w.lapsed(r, t0.Add(time.Second+vt+time.Nanosecond), vt); !lost {
		t.Fatal("1 ns past vt after the last good round: kept; want lost")
	}
	// A message fetched after that round is dated by its fetch (received
	// less one blocking fetch, when its score may have been written).
	late := &request{received: t0.Add(5 * time.Second)}
	from := late.received.Add(-fetchTimeout)
	if since, lost := w.lapsed(late, from.Add(vt), vt); lost || !since.Equal(from) {
		t.Fatalf("late fetch at vt: since %v lost %v; want since its fetch, kept", since.Sub(t0), lost)
	}
	if _, lost := w.lapsed(late, from.Add(vt+time.Nanosecond), vt); !lost {
		t.Fatal("late fetch 1 ns past vt: kept; want lost")
	}
	// A good round again: nothing is lost.
	w.round(t0.Add(time.Minute), true)
	if _, lost := w.lapsed(r, t0.Add(time.Hour), vt); lost {
		t.Fatal("lease lost after refreshes recovered")
	}
}
