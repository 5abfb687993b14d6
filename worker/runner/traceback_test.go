package runner

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime/debug"
	"strings"
	"testing"
)

func TestErrorTracebackShowsTheChain(t *testing.T) {
	_, inner := os.Open("/nonexistent/x")
	err := fmt.Errorf("load config: %w", inner)
	te := taskError(err, nil)
	tb := errorTraceback(te, err, "proj.load")
	want := "Traceback (most recent call last):\n" +
		"  Go error syscall.Errno wrapped by the handler of proj.load\n" +
		"syscall.Errno: no such file or directory\n" +
		"\nThe above exception was the direct cause of the following exception:\n\n" +
		"Traceback (most recent call last):\n" +
		"  Go error *fs.PathError wrapped by the handler of proj.load\n" +
		"fs.PathError: open /nonexistent/x: no such file or directory\n" +
		"\nThe above exception was the direct cause of the following exception:\n\n" +
		"Traceback (most recent call last):\n" +
		"  Go error *fmt.wrapError returned by the handler of proj.load\n" +
		"RuntimeError: load config: open /nonexistent/x: no such file or directory\n"
	if tb != want {
		t.Errorf("traceback:\n%s\nwant:\n%s", tb, want)
	}
	var pe *fs.PathError
	if !errors.As(err, &pe) {
		t.Fatal("test setup")
	}
}

func panicky() (stack []byte) {
	defer func() {
		recover()
		stack = debug.Stack()
	}()
	panic("boom")
}

func TestPanicTracebackFrames(t *testing.T) {
	te := taskError(errors.New("panic: boom"), nil)
	tb := panicTraceback(te, panicky())
	lines := strings.Split(strings.TrimSpace(tb), "\n")
	if lines[0] != "Traceback (most recent call last):" || lines[len(lines)-1] != "RuntimeError: panic: boom" {
		t.Fatalf("traceback shape:\n%s", tb)
	}
	last := lines[len(lines)-2]
	if !strings.HasPrefix(last, `  File "`) || !strings.Contains(last, `traceback_test.go", line `) || !strings.HasSuffix(last, "in morag-gpu/worker/runner.panicky") {
		t.Errorf("the panicking function should be the last frame, got %q in\n%s", last, tb)
	}
	if strings.Contains(tb, "runtime/debug.Stack") || strings.Contains(tb, "gopanic") {
		t.Errorf("recover machinery left in the traceback:\n%s", tb)
	}
}

func TestMissingArgumentsText(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{MissingArguments("f", "a"), "f() missing 1 required positional argument: 'a'"},
		{MissingArguments("f", "a", "b"), "f() missing 2 required positional arguments: 'a' and 'b'"},
		{MissingArguments("f", "a", "b", "c"), "f() missing 3 required positional arguments: 'a', 'b', and 'c'"},
		{TooManyArguments("f", 2, 3), "f() takes 2 positional arguments but 3 were given"},
	} {
		te := taskError(c.err, nil)
		if te.ExcType != "TypeError" || te.ExcModule != "builtins" || te.ExcMessage[0] != c.want {
			t.Errorf("got %s %v; want TypeError %q", te.ExcType, te.ExcMessage, c.want)
		}
	}
}

func TestTaskRetrySeesMaxRetriesExceeded(t *testing.T) {
	task := &Task{ID: "id1", Name: "proj.x", Args: []any{1}, Kwargs: map[string]any{}, Retries: 2}
	task.Message = nil
	err := task.Retry(nil, 0, 2)
	var mre *MaxRetriesExceededError
	if !errors.As(err, &mre) {
		t.Fatalf("Retry after 2 of 2 retries = %v; want MaxRetriesExceededError", err)
	}
	te := taskError(err, nil)
	if te.ExcType != "MaxRetriesExceededError" || te.ExcModule != "celery.exceptions" || te.ExcMessage[0] != "Can't retry proj.x[id1] args:(1,) kwargs:{}" {
		t.Errorf("stored as %s.%s %v", te.ExcModule, te.ExcType, te.ExcMessage)
	}
	// With an exc, Python re-raises it.
	err = task.Retry(errors.New("upstream down"), 0, 2)
	if te := taskError(err, nil); !errors.As(err, &mre) || te.ExcType != "RuntimeError" || te.ExcMessage[0] != "upstream down" {
		t.Errorf("Retry(exc) out of retries stored as %v", te)
	}
	task.Retries = 1
	var re *RetryError
	if err := task.Retry(nil, 0, 2); !errors.As(err, &re) {
		t.Errorf("Retry with retries left = %v; want a RetryError", err)
	}
}
