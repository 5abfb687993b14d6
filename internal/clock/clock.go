// Package clock lets code that reads the time or waits for it take both
// from a field instead of calling time.Now and time.NewTimer, so tests can
// move time exactly instead of sleeping past a margin (asynq's
// rdb.SetClock and clockwork are the models). It holds no package-level
// state: each user owns its Clock.
package clock

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"
)

// Clock says what time it is and waits for it. Lease scores in
// unacked_index are written and compared with the same Clock, so a fake one
// moves both sides at once.
type Clock interface {
	Now() time.Time
	// NewTimer is time.NewTimer.
	NewTimer(d time.Duration) Timer
	// NewTicker is time.NewTicker; d must be positive.
	NewTicker(d time.Duration) Ticker
	// AfterFunc is time.AfterFunc: f runs in its own goroutine. The
	// returned Timer's C is nil.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is the part of *time.Timer that code uses. As with Go 1.23+
// timers, no stale value is received after Stop or Reset returns.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
	Reset(d time.Duration) bool
}

// Ticker is the part of *time.Ticker that code uses.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// Real is the wall clock.
type Real struct{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// NewTimer returns a time.Timer.
func (Real) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

// NewTicker returns a time.Ticker.
func (Real) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

// AfterFunc is time.AfterFunc.
func (Real) AfterFunc(d time.Duration, f func()) Timer { return realTimer{time.AfterFunc(d, f)} }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time        { return t.t.C }
func (t realTimer) Stop() bool                 { return t.t.Stop() }
func (t realTimer) Reset(d time.Duration) bool { return t.t.Reset(d) }

type realTicker struct{ t *time.Ticker }

func (t realTicker) C() <-chan time.Time { return t.t.C }
func (t realTicker) Stop()               { t.t.Stop() }

// Fake is a clock that only moves when told to. Its timers, tickers and
// AfterFuncs fire only in Advance, so a test decides to the nanosecond
// when a wait ends; BlockUntil and BlockUntilTimer let it advance only
// once the code under test is waiting. It is safe for concurrent use,
// since the code under test reads it from its own goroutines.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	seq     uint64
	pending []*fakeTimer  // armed timers, tickers and AfterFuncs
	changed chan struct{} // closed and replaced whenever pending changes
}

// NewFake returns a clock stopped at start. Tests talking to a real Redis
// should start it at time.Now() so that scores stay plausible next to
// anything Redis itself timestamps.
func NewFake(start time.Time) *Fake { return &Fake{now: start, changed: make(chan struct{})} }

// Now returns the clock's current time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// fakeTimer is one timer, ticker or AfterFunc of a Fake.
type fakeTimer struct {
	f      *Fake
	c      chan time.Time // capacity 1; nil for an AfterFunc
	fn     func()         // AfterFunc's function
	period time.Duration  // > 0 for a ticker
	at     time.Time      // next firing, while armed
	seq    uint64         // creation order, to fire equal deadlines in order
	armed  bool
}

// NewTimer returns a timer that fires when the clock reaches Now()+d; d <= 0
// fires at the next Advance (even Advance(0)).
func (f *Fake) NewTimer(d time.Duration) Timer {
	t := &fakeTimer{f: f, c: make(chan time.Time, 1)}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.armLocked(t, d)
	return t
}

// NewTicker returns a ticker that fires every d. Within one Advance a
// ticker delivers at most one tick, the latest one due, which stands for
// all of them (a real ticker drops ticks for a receiver that has not kept
// up, too); its next tick is the first one after the new time. Unlike a
// real ticker's, a tick still unreceived when the next comes due is
// replaced by it, so that however slow the receiver, the last Advance's
// tick is the one it gets.
func (f *Fake) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive interval for NewTicker")
	}
	t := &fakeTimer{f: f, c: make(chan time.Time, 1), period: d}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.armLocked(t, d)
	return fakeTicker{t}
}

// fakeTicker is a ticker's view of its fakeTimer.
type fakeTicker struct{ t *fakeTimer }

func (t fakeTicker) C() <-chan time.Time { return t.t.c }
func (t fakeTicker) Stop()               { t.t.Stop() }

// AfterFunc runs fn in its own goroutine when the clock reaches Now()+d.
func (f *Fake) AfterFunc(d time.Duration, fn func()) Timer {
	t := &fakeTimer{f: f, fn: fn}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.armLocked(t, d)
	return t
}

func (f *Fake) armLocked(t *fakeTimer, d time.Duration) {
	f.seq++
	t.seq, t.at, t.armed = f.seq, f.now.Add(d), true
	f.pending = append(f.pending, t)
	f.changedLocked()
}

func (f *Fake) disarmLocked(t *fakeTimer) bool {
	if !t.armed {
		return false
	}
	t.armed = false
	f.pending = slices.DeleteFunc(f.pending, func(p *fakeTimer) bool { return p == t })
	f.changedLocked()
	return true
}

func (f *Fake) changedLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// C returns the channel the timer or ticker delivers on (nil for an
// AfterFunc).
func (t *fakeTimer) C() <-chan time.Time { return t.c }

// Stop disarms the timer and drops a tick not yet received; it reports
// whether the timer was armed.
func (t *fakeTimer) Stop() bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	t.drainLocked()
	return t.f.disarmLocked(t)
}

// Reset re-arms the timer to fire at Now()+d, dropping a tick not yet
// received; it reports whether the timer was armed.
func (t *fakeTimer) Reset(d time.Duration) bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	t.drainLocked()
	was := t.f.disarmLocked(t)
	t.f.armLocked(t, d)
	return was
}

func (t *fakeTimer) drainLocked() {
	if t.c == nil {
		return
	}
	select {
	case <-t.c:
	default:
	}
}

// Advance moves the clock by d and fires, in deadline order, every timer,
// ticker and AfterFunc due by the new time. A timer puts its deadline on
// its channel, a ticker its latest due tick (see NewTicker); an AfterFunc's function starts in a goroutine.
// Advance does not wait for the code that receives them: a test waits for
// what that code does. A negative d moves the clock back, which lets a
// test probe a boundary from just below it.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	due := make([]*fakeTimer, 0, len(f.pending))
	for _, t := range f.pending {
		if !t.at.After(f.now) {
			due = append(due, t)
		}
	}
	slices.SortFunc(due, func(a, b *fakeTimer) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return cmp.Compare(a.seq, b.seq)
	})
	for _, t := range due {
		at := t.at
		if t.period > 0 {
			// One tick stands for all that are due: the latest, as the
			// last one a receiver that kept up would have seen.
			at = at.Add(f.now.Sub(at) / t.period * t.period)
			t.at = at.Add(t.period)
		} else {
			f.disarmLocked(t)
		}
		if t.fn != nil {
			go t.fn()
			continue
		}
		// Only Advance sends, under f.mu, so after the drain there is room.
		t.drainLocked()
		t.c <- at
	}
	if len(due) > 0 {
		f.changedLocked()
	}
}

// Timers returns when each armed timer and AfterFunc fires, earliest
// first. Tickers are left out: background loops keep theirs armed all the
// time, at moments no test chooses, so they would only blur which wait a
// test is about.
func (f *Fake) Timers() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []time.Time
	for _, t := range f.pending {
		if t.period == 0 {
			out = append(out, t.at)
		}
	}
	slices.SortFunc(out, time.Time.Compare)
	return out
}

// BlockUntil blocks until at least n timers, tickers and AfterFuncs are
// armed: the code under test is waiting, so the test may Advance.
func (f *Fake) BlockUntil(n int) {
	_ = f.BlockUntilContext(context.Background(), n)
}

// BlockUntilContext is BlockUntil that gives up when ctx ends, returning
// ctx's error.
func (f *Fake) BlockUntilContext(ctx context.Context, n int) error {
	return f.waitFor(ctx, func() bool { return len(f.pending) >= n })
}

// BlockUntilTicker blocks until a ticker with period d is armed: a loop
// that ticks every d has started. It gives up when ctx ends, returning
// ctx's error.
func (f *Fake) BlockUntilTicker(ctx context.Context, d time.Duration) error {
	return f.waitFor(ctx, func() bool {
		return slices.ContainsFunc(f.pending, func(t *fakeTimer) bool { return t.period == d })
	})
}

// BlockUntilTimer blocks until a timer or AfterFunc (not a ticker; see
// Timers) is armed to fire exactly at: the code under test waits for that
// moment. It gives up when ctx ends, returning ctx's error. Where other
// code keeps timers of its own armed, it says which wait a test is about,
// where a count cannot.
func (f *Fake) BlockUntilTimer(ctx context.Context, at time.Time) error {
	return f.waitFor(ctx, func() bool {
		return slices.ContainsFunc(f.pending, func(t *fakeTimer) bool { return t.period == 0 && t.at.Equal(at) })
	})
}

// waitFor waits until cond, called with f.mu held, is true.
func (f *Fake) waitFor(ctx context.Context, cond func() bool) error {
	for {
		f.mu.Lock()
		ok, ch := cond(), f.changed
		f.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
