package bench

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
)

// protect runs fn and turns a panic into an error. Packages that have not
// landed yet are stubs that panic("stub"); a row built on one must print
// "n/a (<what is missing>)", not abort the run.
func protect(fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = panicError(p)
		}
	}()
	return fn()
}

// panicError names the function that panicked, found just below
// runtime.gopanic on the stack of the recovering goroutine.
func panicError(p any) error {
	pcs := make([]uintptr, 64)
	n := runtime.Callers(3, pcs)
	frames := runtime.CallersFrames(pcs[:n])
	where, after := "", false
	for {
		f, more := frames.Next()
		if after {
			where = strings.TrimPrefix(f.Function, "morag-gpu/")
			break
		}
		if f.Function == "runtime.gopanic" {
			after = true
		}
		if !more {
			break
		}
	}
	if s, ok := p.(string); ok && s == "stub" {
		return fmt.Errorf("%s is still a stub", where)
	}
	return fmt.Errorf("panic in %s: %v", where, p)
}

// group runs goroutines that share a context: the first error (or panic)
// cancels the rest, and wait returns it. Like errgroup, which this module
// does not depend on.
type group struct {
	wg     sync.WaitGroup
	once   sync.Once
	err    error
	cancel context.CancelFunc
}

func newGroup(ctx context.Context) (*group, context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	return &group{cancel: cancel}, ctx
}

func (g *group) do(fn func() error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := protect(fn); err != nil {
			g.once.Do(func() {
				g.err = err
				g.cancel()
			})
		}
	}()
}

func (g *group) wait() error {
	g.wg.Wait()
	g.cancel()
	return g.err
}
