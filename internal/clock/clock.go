// Package clock lets code that compares against wall-clock time take its
// "now" from a field instead of calling time.Now, so tests can move time
// exactly instead of sleeping past a margin (asynq's rdb.SetClock is the
// model). It holds no package-level state: each user owns its Clock.
package clock

import (
	"sync"
	"time"
)

// Clock says what time it is. Lease scores in unacked_index are written
// and compared with the same Clock, so a fake one moves both sides at once.
type Clock interface {
	Now() time.Time
}

// Real is the wall clock.
type Real struct{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// Fake is a clock that only moves when told to. It is safe for concurrent
// use, since the code under test reads it from its own goroutines.
type Fake struct {
	mu  sync.Mutex
	now time.Time
}

// NewFake returns a clock stopped at start. Tests talking to a real Redis
// should start it at time.Now() so that scores stay plausible next to
// anything Redis itself timestamps.
func NewFake(start time.Time) *Fake { return &Fake{now: start} }

// Now returns the clock's current time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Advance moves the clock by d; a negative d moves it back, which lets a
// test probe a boundary from just below it.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}
