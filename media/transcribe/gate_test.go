package transcribe

import (
	"context"
	"errors"
	"runtime"
	"testing"
)

func TestGateAdmitsAtMostN(t *testing.T) {
	g := NewGate(2)
	ctx := context.Background()
	if err := g.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if !g.TryAcquire() {
		t.Fatal("second stream refused")
	}
	if g.TryAcquire() {
		t.Fatal("a third stream was admitted by a gate of 2")
	}
	if g.InUse() != 2 || g.Size() != 2 {
		t.Fatalf("InUse %d Size %d, want 2 2", g.InUse(), g.Size())
	}
	g.Release()
	if !g.TryAcquire() {
		t.Fatal("a released stream was not admitted again")
	}
}

func TestGateAcquireEndsWithContext(t *testing.T) {
	g := NewGate(1)
	if err := g.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	cause := errors.New("revoked")
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Acquire(ctx) }() // owner: this test; ends with ctx
	for g.Waiting() == 0 {
		// Wait until the goroutine is blocked in Acquire, so the cancel
		// below is what ends it (not a race with the first check).
		select {
		case err := <-done:
			t.Fatalf("Acquire returned %v with the only stream held", err)
		default:
			runtime.Gosched()
		}
	}
	cancel(cause)
	if err := <-done; !errors.Is(err, cause) {
		t.Fatalf("Acquire = %v, want the context's cause", err)
	}
	if g.InUse() != 1 || g.Waiting() != 0 {
		t.Fatalf("after a cancelled Acquire: InUse %d Waiting %d, want 1 0", g.InUse(), g.Waiting())
	}
	var nilGate *Gate
	if err := nilGate.Acquire(ctx); err != nil || !nilGate.TryAcquire() {
		t.Fatal("a nil gate admits everything")
	}
	nilGate.Release()
}
