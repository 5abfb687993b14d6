// Package pyfmt writes values the way CPython writes them: repr() and str()
// of the types a JSON round trip makes (str, float, int, bool, None, list,
// tuple, dict), json.dumps with its defaults (", " and ": " separators,
// ensure_ascii, NaN and Infinity allowed), and datetime.isoformat(); and
// it reads what datetime.fromisoformat and time.fromisoformat read.
//
// Celery's peers are Python programs, and several of the strings they show
// or store are Python's formatting of a value: the repr of a task's args in
// events, a Python exception's repr, a stored API key's json.dumps, MoRAG's
// f-string markdown. A Go component that writes the same string must write
// it byte for byte, so this is the one place that knows how; the tests
// compare it with a real CPython on generated cases.
//
// Go values are taken as what Python would hold after the value crossed
// JSON: a map[string]any is a dict (keys sorted, since Go maps keep no
// order; use Dict for an ordered one), any slice is a list (Tuple for a
// tuple), json.Number is an int or a float as json.loads would read it,
// structs are marshalled with encoding/json first. Invalid UTF-8 is read as
// U+FFFD per bad byte, the replacement Python makes when decoding with
// errors="replace".
//
// The package knows nothing of Celery or MoRAG.
package pyfmt
