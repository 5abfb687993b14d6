package clock

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

var start = time.Unix(1700000000, 0)

func TestFakeMovesOnlyWhenAdvanced(t *testing.T) {
	f := NewFake(start)
	if !f.Now().Equal(start) {
		t.Fatalf("Now = %v, want %v", f.Now(), start)
	}
	f.Advance(1500 * time.Millisecond)
	if got := f.Now().Sub(start); got != 1500*time.Millisecond {
		t.Fatalf("after Advance(1.5s) Now is %v past the start", got)
	}
	var _ Clock = Real{}
	var _ Clock = f
}

// received reports what c holds right now, without waiting: Advance puts
// a fired tick on the channel before it returns.
func received(c <-chan time.Time) (time.Time, bool) {
	select {
	case v := <-c:
		return v, true
	default:
		return time.Time{}, false
	}
}

func TestFakeTimerFiresAtItsDeadlineExactly(t *testing.T) {
	f := NewFake(start)
	tm := f.NewTimer(time.Second)
	f.Advance(time.Second - time.Nanosecond)
	if _, ok := received(tm.C()); ok {
		t.Fatal("timer fired 1ns before its deadline")
	}
	f.Advance(time.Nanosecond)
	if v, ok := received(tm.C()); !ok || !v.Equal(start.Add(time.Second)) {
		t.Fatalf("at its deadline the timer gave %v, %v; want its deadline", v, ok)
	}
	if tm.Stop() {
		t.Error("Stop of a fired timer reported it armed")
	}
	f.Advance(time.Hour)
	if _, ok := received(tm.C()); ok {
		t.Error("a fired timer fired again")
	}
}

func TestFakeTimerStopAndReset(t *testing.T) {
	f := NewFake(start)
	tm := f.NewTimer(time.Second)
	if !tm.Stop() {
		t.Error("Stop of an armed timer reported it idle")
	}
	f.Advance(time.Hour)
	if _, ok := received(tm.C()); ok {
		t.Fatal("a stopped timer fired")
	}
	if tm.Reset(time.Minute) {
		t.Error("Reset of a stopped timer reported it armed")
	}
	f.Advance(time.Minute)
	if v, ok := received(tm.C()); !ok || !v.Equal(start.Add(time.Hour+time.Minute)) {
		t.Fatalf("reset timer gave %v, %v; want a minute after the reset", v, ok)
	}
	// A tick not received is dropped by Reset and Stop, as with Go 1.23
	// timers: no stale value afterwards.
	tm.Reset(time.Second)
	f.Advance(time.Second)
	tm.Reset(time.Second)
	if _, ok := received(tm.C()); ok {
		t.Error("Reset left a stale tick on the channel")
	}
	f.Advance(time.Second)
	tm.Stop()
	if _, ok := received(tm.C()); ok {
		t.Error("Stop left a stale tick on the channel")
	}
}

func TestFakeTickerDropsTicksLikeARealOne(t *testing.T) {
	f := NewFake(start)
	tk := f.NewTicker(time.Second)
	defer tk.Stop()
	f.Advance(3500 * time.Millisecond) // ticks due at 1s, 2s and 3s
	if v, ok := received(tk.C()); !ok || !v.Equal(start.Add(3*time.Second)) {
		t.Fatalf("tick %v, %v; want the latest due one, at 3s", v, ok)
	}
	if _, ok := received(tk.C()); ok {
		t.Fatal("a ticker delivered two ticks in one Advance")
	}
	f.Advance(499 * time.Millisecond)
	if _, ok := received(tk.C()); ok {
		t.Fatal("tick before 4s")
	}
	f.Advance(time.Millisecond)
	if v, ok := received(tk.C()); !ok || !v.Equal(start.Add(4*time.Second)) {
		t.Fatalf("tick %v, %v; want the one at 4s", v, ok)
	}
	// A tick not received is replaced by the next one.
	f.Advance(time.Second)
	f.Advance(time.Second)
	if v, ok := received(tk.C()); !ok || !v.Equal(start.Add(6*time.Second)) {
		t.Fatalf("tick %v, %v; want the latest one, at 6s", v, ok)
	}
	if _, ok := received(tk.C()); ok {
		t.Fatal("a ticker queued two ticks")
	}
	tk.Stop()
	f.Advance(time.Hour)
	if _, ok := received(tk.C()); ok {
		t.Error("a stopped ticker ticked")
	}
}

func TestFakeAfterFunc(t *testing.T) {
	f := NewFake(start)
	ran := make(chan struct{})
	f.AfterFunc(time.Second, func() { close(ran) })
	stopped := f.AfterFunc(time.Second, func() { t.Error("a stopped AfterFunc ran") })
	if !stopped.Stop() {
		t.Error("Stop of a pending AfterFunc reported it idle")
	}
	f.Advance(time.Second - time.Nanosecond)
	select {
	case <-ran:
		t.Fatal("AfterFunc ran before its deadline")
	default:
	}
	f.Advance(time.Nanosecond)
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("AfterFunc did not run at its deadline")
	}
}

// BlockUntil and BlockUntilTimer return once the code under test waits,
// so a test advances neither too early nor after a guessed sleep.
func TestFakeBlockUntil(t *testing.T) {
	f := NewFake(start)
	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		tm := f.NewTimer(time.Minute)
		v := <-tm.C()
		got.Store(int64(v.Sub(start)))
	}()
	tk := f.NewTicker(time.Minute) // a ticker is no timer to BlockUntilTimer and Timers
	defer tk.Stop()
	f.BlockUntil(2)
	if err := f.BlockUntilTicker(context.Background(), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := f.BlockUntilTimer(context.Background(), start.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if d := f.Timers(); len(d) != 1 || !d[0].Equal(start.Add(time.Minute)) {
		t.Fatalf("Timers = %v", d)
	}
	f.Advance(time.Minute)
	<-done
	if time.Duration(got.Load()) != time.Minute {
		t.Errorf("the waiter got %v", time.Duration(got.Load()))
	}
	if n := len(f.Timers()); n != 0 {
		t.Errorf("%d timers armed after the only one fired", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.BlockUntilContext(ctx, 2); err != context.Canceled {
		t.Errorf("BlockUntilContext(2) with one ticker armed and ctx done = %v", err)
	}
	if err := f.BlockUntilTimer(ctx, start.Add(2*time.Minute)); err != context.Canceled {
		t.Errorf("BlockUntilTimer for a ticker's tick, ctx done = %v", err)
	}
	if err := f.BlockUntilTicker(ctx, time.Second); err != context.Canceled {
		t.Errorf("BlockUntilTicker for a period nothing ticks at, ctx done = %v", err)
	}
}

func TestRealTimers(t *testing.T) {
	var c Clock = Real{}
	tm := c.NewTimer(time.Millisecond)
	<-tm.C()
	tk := c.NewTicker(time.Millisecond)
	<-tk.C()
	tk.Stop()
	ran := make(chan struct{})
	c.AfterFunc(time.Millisecond, func() { close(ran) })
	<-ran
}
