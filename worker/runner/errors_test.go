package runner

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"morag-gpu/protocol"
)

func TestTaskErrorMapping(t *testing.T) {
	custom := protocol.NewTaskError("ValueError", "builtins", "bad")
	cases := []struct {
		err, cause error
		typ, mod   string
	}{
		{errors.New("plain"), nil, "RuntimeError", "builtins"},
		{fmt.Errorf("wrapped: %w", custom), nil, "ValueError", "builtins"},
		{ErrSoftTimeLimit, ErrSoftTimeLimit, "SoftTimeLimitExceeded", "billiard.exceptions"},
		{context.Canceled, ErrSoftTimeLimit, "SoftTimeLimitExceeded", "billiard.exceptions"},
		{context.Canceled, nil, "RuntimeError", "builtins"},
	}
	for _, c := range cases {
		te := taskError(c.err, c.cause)
		if te.ExcType != c.typ || te.ExcModule != c.mod {
			t.Errorf("taskError(%v, %v) = %s/%s, want %s/%s", c.err, c.cause, te.ExcModule, te.ExcType, c.mod, c.typ)
		}
	}
	if te := taskError(errors.New("boom"), nil); len(te.ExcMessage) != 1 || te.ExcMessage[0] != "boom" {
		t.Errorf("message not kept: %v", te.ExcMessage)
	}
}

func TestRetryAndForwardErrorsAreFound(t *testing.T) {
	err := fmt.Errorf("handler: %w", Retry(errors.New("x"), -5, 3))
	var re *RetryError
	if !errors.As(err, &re) || re.Countdown != 0 || re.MaxRetries != 3 {
		t.Fatalf("Retry not found or wrong: %#v", re)
	}
	var fe *ForwardError
	if !errors.As(fmt.Errorf("w: %w", Forward("q", "why")), &fe) || fe.Queue != "q" {
		t.Fatalf("Forward not found")
	}
}

func TestSignum(t *testing.T) {
	for in, want := range map[string]int{"": 15, "SIGTERM": 15, "TERM": 15, "KILL": 9, "sigkill": 9, "9": 9, "INT": 2} {
		if got := signum(in); got != want {
			t.Errorf("signum(%q) = %d, want %d", in, got, want)
		}
	}
	if got := argStrings([]any{"a", 1, "b"}); len(got) != 2 || got[1] != "b" {
		t.Errorf("argStrings = %v", got)
	}
	if !argBool("True") || argBool("false") || !argBool(true) {
		t.Error("argBool wrong")
	}
	if got := redactURL("redis://:secret@h:1/0"); got != "redis://:%2A%2A@h:1/0" && got != "redis://:**@h:1/0" {
		t.Errorf("redactURL = %s", got)
	}
}
