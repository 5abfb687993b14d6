package runner

import (
	"context"
	"fmt"
	"sort"
	"sync"
)

// Handler runs one task. The returned value is stored as the task's result
// (it must be JSON-encodable); a returned error fails the task, unless it is
// a Retry or Forward error. ctx is cancelled on revoke(terminate=True), on
// the soft time limit and on forced shutdown; context.Cause(ctx) says which.
type Handler interface {
	ServeTask(ctx context.Context, t *Task) (any, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, t *Task) (any, error)

// ServeTask calls f.
func (f HandlerFunc) ServeTask(ctx context.Context, t *Task) (any, error) { return f(ctx, t) }

// Mux maps task names to handlers. It is safe for concurrent use; handlers
// registered while a server runs are used from the next message on.
type Mux struct {
	mu       sync.RWMutex
	handlers map[string]Handler
	attrs    map[string]taskAttrs // rate and time limits, changed by remote control
}

// NewMux returns an empty Mux.
func NewMux() *Mux { return &Mux{handlers: map[string]Handler{}, attrs: map[string]taskAttrs{}} }

// Handle registers h for the task name, with options such as RateLimit and
// TimeLimit. Like net/http, registering an empty name, a nil handler, a
// name twice or an invalid option is a programming error and panics.
func (m *Mux) Handle(name string, h Handler, opts ...TaskOption) {
	if name == "" {
		panic("runner: Handle with an empty task name")
	}
	if h == nil {
		panic(fmt.Sprintf("runner: Handle(%q) with a nil handler", name))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.handlers[name]; dup {
		panic(fmt.Sprintf("runner: task %q registered twice", name))
	}
	var a taskAttrs
	for _, o := range opts {
		if err := o(&a); err != nil {
			panic(fmt.Sprintf("runner: Handle(%q): %v", name, err))
		}
	}
	m.handlers[name] = h
	m.attrs[name] = a
}

// HandleFunc registers f for the task name.
func (m *Mux) HandleFunc(name string, f func(ctx context.Context, t *Task) (any, error), opts ...TaskOption) {
	m.Handle(name, HandlerFunc(f), opts...)
}

// taskAttrs returns the task's current limits and whether it is registered.
func (m *Mux) taskAttrs(name string) (taskAttrs, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	a, ok := m.attrs[name]
	return a, ok
}

// updateAttrs changes a registered task's limits; false when the name is
// not registered.
func (m *Mux) updateAttrs(name string, fn func(*taskAttrs)) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.attrs[name]
	if !ok {
		return false
	}
	fn(&a)
	m.attrs[name] = a
	return true
}

// Handler returns the handler for name, or nil.
func (m *Mux) Handler(name string) Handler {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.handlers[name]
}

// Names lists the registered task names, sorted (`inspect registered`).
func (m *Mux) Names() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	names := make([]string, 0, len(m.handlers))
	for n := range m.handlers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
