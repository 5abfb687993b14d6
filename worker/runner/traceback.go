package runner

import (
	"errors"
	"fmt"
	"strings"

	"morag-gpu/protocol"
)

// The stored traceback is what Python's AsyncResult.traceback returns and
// Flower shows in a <pre>: a Go failure is rendered in the shape of a
// Python traceback, so the same eyes and tools read both. The last line is
// always Python's "module.Type: message" for the stored exception.

// errorTraceback renders a returned error: its wrap chain as Python's
// chained exceptions, innermost first ("The above exception was the
// direct cause of the following exception:"), each level named by its Go
// type; Go errors carry no stack, so each block names where the error
// came from instead of file and line.
func errorTraceback(te *protocol.TaskError, err error, task string) string {
	var chain []error
	for e := err; e != nil && len(chain) < 32; e = errors.Unwrap(e) {
		chain = append(chain, e)
	}
	var b strings.Builder
	for i := len(chain) - 1; i >= 1; i-- {
		e := chain[i]
		b.WriteString("Traceback (most recent call last):\n")
		fmt.Fprintf(&b, "  Go error %T wrapped by the handler of %s\n", e, task)
		fmt.Fprintf(&b, "%s: %s\n", goTypeName(e), e.Error())
		b.WriteString("\nThe above exception was the direct cause of the following exception:\n\n")
	}
	b.WriteString("Traceback (most recent call last):\n")
	if err != nil {
		fmt.Fprintf(&b, "  Go error %T returned by the handler of %s\n", err, task)
	}
	b.WriteString(pyExceptionLine(te))
	b.WriteByte('\n')
	return b.String()
}

// goTypeName is an error's Go type without the pointer star, in the
// dotted form Python prints exception classes ("fs.PathError").
func goTypeName(e error) string {
	return strings.TrimPrefix(fmt.Sprintf("%T", e), "*")
}

// panicTraceback renders a handler panic: the panicking goroutine's stack
// from runtime/debug.Stack, as Python frames, most recent call last.
func panicTraceback(te *protocol.TaskError, stack []byte) string {
	var b strings.Builder
	b.WriteString("Traceback (most recent call last):\n")
	for _, f := range panicFrames(stack) {
		fmt.Fprintf(&b, "  File %q, line %s, in %s\n", f.file, f.line, f.fn)
	}
	b.WriteString(pyExceptionLine(te))
	b.WriteByte('\n')
	return b.String()
}

type goFrame struct{ fn, file, line string }

// panicFrames parses debug.Stack output ("func(args)\n\tfile:line +0x..")
// and keeps the frames below the panic call, outermost first; the recover
// machinery (debug.Stack, the deferred func, panic itself) is dropped.
func panicFrames(stack []byte) []goFrame {
	lines := strings.Split(strings.TrimSpace(string(stack)), "\n")
	var frames []goFrame
	for i := 1; i+1 < len(lines); i += 2 { // line 0: "goroutine N [running]:"
		fn := lines[i]
		if j := strings.LastIndex(fn, "("); j > 0 {
			fn = fn[:j]
		}
		loc := strings.TrimSpace(lines[i+1])
		if j := strings.LastIndex(loc, " +0x"); j > 0 {
			loc = loc[:j]
		}
		file, line := loc, "0"
		if j := strings.LastIndex(loc, ":"); j > 0 {
			file, line = loc[:j], loc[j+1:]
		}
		frames = append(frames, goFrame{fn: fn, file: file, line: line})
	}
	for i, f := range frames {
		if f.fn == "panic" {
			frames = frames[i+1:]
			break
		}
	}
	// Drop the runtime's goroutine entry frame; reverse to Python's order.
	out := make([]goFrame, 0, len(frames))
	for i := len(frames) - 1; i >= 0; i-- {
		if frames[i].fn == "runtime.goexit" || strings.HasPrefix(frames[i].fn, "created by ") {
			continue
		}
		out = append(out, frames[i])
	}
	return out
}

// pyExceptionLine is the last line of a Python traceback:
// "module.Type: str(exc)", the module left out for builtins.
func pyExceptionLine(te *protocol.TaskError) string {
	name := te.ExcType
	if te.ExcModule != "" && te.ExcModule != modBuiltins && te.ExcModule != "__main__" {
		name = te.ExcModule + "." + name
	}
	msg := pyExcStr(te)
	if msg == "" {
		return name
	}
	return name + ": " + msg
}

// pyExcStr is str(exc): the lone argument's str, the args tuple's repr
// for several, and billiard's own __str__ for TimeLimitExceeded.
func pyExcStr(te *protocol.TaskError) string {
	if te.ExcType == "TimeLimitExceeded" && te.ExcModule == modBilliard {
		return "TimeLimitExceeded" + pyArgsRepr(te.ExcMessage)
	}
	switch len(te.ExcMessage) {
	case 0:
		return ""
	case 1:
		if s, ok := te.ExcMessage[0].(string); ok {
			return s
		}
		return pyRepr(te.ExcMessage[0], 1024)
	}
	return pyArgsRepr(te.ExcMessage)
}
