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
}

// NewMux returns an empty Mux.
func NewMux() *Mux { return &Mux{handlers: map[string]Handler{}} }

// Handle registers h for the task name. Like net/http, registering an empty
// name, a nil handler or a name twice is a programming error and panics.
func (m *Mux) Handle(name string, h Handler) {
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
	m.handlers[name] = h
}

// HandleFunc registers f for the task name.
func (m *Mux) HandleFunc(name string, f func(ctx context.Context, t *Task) (any, error)) {
	m.Handle(name, HandlerFunc(f))
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
