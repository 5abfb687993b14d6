package transcribe

import (
	"context"
	"sync"
)

// Gate admits at most a fixed number of transcriptions at once. It is
// separate from a worker's task slots so that a task downloading, probing
// or cutting thumbnails holds no share of the transcriber: the worker may
// run more tasks than the transcriber has streams, and each task takes the
// gate only around its transcription. A nil *Gate admits everything
// (the transcriber's own slots are then the only limit).
type Gate struct {
	slots chan struct{}

	mu      sync.Mutex
	waiting int
}

// NewGate returns a gate admitting n transcriptions at once; n < 1 is 1.
func NewGate(n int) *Gate {
	return &Gate{slots: make(chan struct{}, max(1, n))}
}

// Size is how many transcriptions the gate admits at once (0 for nil).
func (g *Gate) Size() int {
	if g == nil {
		return 0
	}
	return cap(g.slots)
}

// TryAcquire takes a stream if one is free now, without waiting.
func (g *Gate) TryAcquire() bool {
	if g == nil {
		return true
	}
	select {
	case g.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

// Acquire waits for a free stream, or for ctx to end (then it returns
// context.Cause(ctx) and holds nothing). Every successful Acquire must be
// matched by one Release.
func (g *Gate) Acquire(ctx context.Context) error {
	if g == nil {
		return nil
	}
	if g.TryAcquire() {
		return nil
	}
	g.mu.Lock()
	g.waiting++
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.waiting--
		g.mu.Unlock()
	}()
	select {
	case g.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// Release frees the stream an Acquire or TryAcquire took.
func (g *Gate) Release() {
	if g == nil {
		return
	}
	select {
	case <-g.slots:
	default:
		panic("transcribe: Gate.Release without a matching Acquire")
	}
}

// InUse is how many streams are held now; Waiting how many callers wait
// for one. Both are for health output and tests.
func (g *Gate) InUse() int {
	if g == nil {
		return 0
	}
	return len(g.slots)
}

// Waiting is how many callers are blocked in Acquire.
func (g *Gate) Waiting() int {
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiting
}
