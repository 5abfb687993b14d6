package runner

import (
	"context"
	"reflect"
	"testing"
)

func TestMux(t *testing.T) {
	m := NewMux()
	noop := func(context.Context, *Task) (any, error) { return nil, nil }
	m.HandleFunc("b.task", noop)
	m.HandleFunc("a.task", noop)
	if got := m.Names(); !reflect.DeepEqual(got, []string{"a.task", "b.task"}) {
		t.Errorf("Names = %v", got)
	}
	if m.Handler("a.task") == nil || m.Handler("nope") != nil {
		t.Error("Handler lookup wrong")
	}
	for name, f := range map[string]func(){
		"duplicate": func() { m.HandleFunc("a.task", noop) },
		"empty":     func() { m.HandleFunc("", noop) },
		"nil":       func() { m.Handle("c", nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s registration did not panic", name)
				}
			}()
			f()
		}()
	}
}
