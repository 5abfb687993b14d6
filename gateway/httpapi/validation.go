package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
)

// MoRAG's server is FastAPI 0.115 on pydantic 2.10 (bb0da91's
// requirements.txt). A malformed request there is answered 422 with
// pydantic's error list, and pydantic's lax mode accepts more than the
// declared types ("true" for a bool, "5" for an int). This file reproduces
// both; unprocessable is the one answer every handler gives.

// fieldError is one entry of FastAPI's 422 detail list.
type fieldError struct {
	Type  string         `json:"type"`
	Loc   []any          `json:"loc"`
	Msg   string         `json:"msg"`
	Input any            `json:"input"`
	Ctx   map[string]any `json:"ctx,omitempty"`
}

// unprocessable answers 422 {"detail": [{type, loc, msg, input}, ...]},
// FastAPI's RequestValidationError body.
func unprocessable(c echo.Context, errs ...fieldError) error {
	return c.JSON(http.StatusUnprocessableEntity, map[string]any{"detail": errs})
}

// errNoFile is a multipart request without its required "file" part;
// clientError answers it as FastAPI does: 422, missing body.file.
var errNoFile = errors.New("a file is required: send it in the multipart field 'file'")

// errMissing is pydantic's "missing" error.
func errMissing(loc []any, input any) fieldError {
	return fieldError{Type: "missing", Loc: loc, Msg: "Field required", Input: input}
}

// validator collects every error of a request, as pydantic reports them
// all at once.
type validator struct{ errs []fieldError }

func (v *validator) add(e fieldError) { v.errs = append(v.errs, e) }

func (v *validator) failed() bool { return len(v.errs) > 0 }

// readJSONBody reads a request body the way FastAPI does for a pydantic
// model parameter: an empty body is "missing", bad JSON is "json_invalid",
// and anything but an object is "model_attributes_type".
func readJSONBody(r *http.Request) (map[string]any, *fieldError) {
	raw, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, 16<<20))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, &fieldError{Type: "json_invalid", Loc: []any{"body", 0}, Msg: "JSON decode error",
				Input: map[string]any{}, Ctx: map[string]any{"error": "body larger than 16 MiB"}}
		}
		return nil, &fieldError{Type: "json_invalid", Loc: []any{"body", 0}, Msg: "JSON decode error",
			Input: map[string]any{}, Ctx: map[string]any{"error": err.Error()}}
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		e := errMissing([]any{"body"}, nil)
		return nil, &e
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	err = dec.Decode(&v)
	if err == nil && dec.More() {
		err = errors.New("Extra data")
	}
	if err != nil {
		// Python's json reports where it stopped: the end for a cut-off
		// document.
		pos := dec.InputOffset()
		var se *json.SyntaxError
		if errors.As(err, &se) {
			pos = se.Offset
		} else if errors.Is(err, io.ErrUnexpectedEOF) {
			pos = int64(len(raw))
		}
		return nil, &fieldError{Type: "json_invalid", Loc: []any{"body", pos}, Msg: "JSON decode error",
			Input: map[string]any{}, Ctx: map[string]any{"error": err.Error()}}
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, &fieldError{Type: "model_attributes_type", Loc: []any{"body"},
			Msg: "Input should be a valid dictionary or object to extract fields from", Input: v}
	}
	return m, nil
}

// bodyField reads one field of a JSON body model: loc is ["body", name],
// a missing required field reports the whole body as its input (as FastAPI
// does), and null is "not set" for Optional fields.
type bodyField struct {
	v    *validator
	body map[string]any
}

func (b bodyField) get(name string, required bool) (any, bool) {
	val, ok := b.body[name]
	if !ok {
		if required {
			b.v.add(errMissing([]any{"body", name}, b.body))
		}
		return nil, false
	}
	return val, true
}

// str is a str (required) or Optional[str] field.
func (b bodyField) str(name string, required bool) (string, bool) {
	val, ok := b.get(name, required)
	if !ok || (val == nil && !required) {
		return "", false
	}
	return b.v.str([]any{"body", name}, val)
}

// boolean is an Optional[bool] field.
func (b bodyField) boolean(name string, def bool) bool {
	val, ok := b.get(name, false)
	if !ok || val == nil {
		return def
	}
	out, _ := b.v.boolean([]any{"body", name}, val)
	return out
}

// integer is an int field with a default (null is an error, as for `int`).
func (b bodyField) integer(name string, def int64) int64 {
	val, ok := b.get(name, false)
	if !ok {
		return def
	}
	n, ok := b.v.integer([]any{"body", name}, val)
	if !ok {
		return def
	}
	return n
}

// object is an Optional[Dict[str, Any]] field; nil when absent or null.
func (b bodyField) object(name string) map[string]any {
	val, ok := b.get(name, false)
	if !ok || val == nil {
		return nil
	}
	m, ok := val.(map[string]any)
	if !ok {
		b.v.add(fieldError{Type: "dict_type", Loc: []any{"body", name}, Msg: "Input should be a valid dictionary", Input: val})
	}
	return m
}

// objects is a List[Dict[str, Any]] field (required).
func (b bodyField) objects(name string) []any {
	val, ok := b.get(name, true)
	if !ok {
		return nil
	}
	list, ok := val.([]any)
	if !ok {
		b.v.add(fieldError{Type: "list_type", Loc: []any{"body", name}, Msg: "Input should be a valid list", Input: val})
		return nil
	}
	for i, it := range list {
		if _, ok := it.(map[string]any); !ok {
			b.v.add(fieldError{Type: "dict_type", Loc: []any{"body", name, i}, Msg: "Input should be a valid dictionary", Input: it})
		}
	}
	return list
}

// str accepts only strings: pydantic 2 no longer turns numbers into str.
func (v *validator) str(loc []any, val any) (string, bool) {
	s, ok := val.(string)
	if !ok {
		v.add(fieldError{Type: "string_type", Loc: loc, Msg: "Input should be a valid string", Input: val})
	}
	return s, ok
}

// boolean is pydantic 2's lax bool: true/false, 0/1 (also as floats) and,
// case-insensitively, 0 off f false n no / 1 on t true y yes.
func (v *validator) boolean(loc []any, val any) (bool, bool) {
	parsing := fieldError{Type: "bool_parsing", Loc: loc, Msg: "Input should be a valid boolean, unable to interpret input", Input: val}
	switch x := val.(type) {
	case bool:
		return x, true
	case string:
		switch strings.ToLower(x) {
		case "0", "off", "f", "false", "n", "no":
			return false, true
		case "1", "on", "t", "true", "y", "yes":
			return true, true
		}
		v.add(parsing)
		return false, false
	case json.Number:
		if f, err := x.Float64(); err == nil && (f == 0 || f == 1) {
			return f == 1, true
		}
		v.add(parsing)
		return false, false
	}
	v.add(fieldError{Type: "bool_type", Loc: loc, Msg: "Input should be a valid boolean", Input: val})
	return false, false
}

// intString is what pydantic 2 parses as an int from a string: optional
// sign, digits (underscores between them), surrounding whitespace, and a
// fraction of zeros only.
var intString = regexp.MustCompile(`^\s*[+-]?[0-9](_?[0-9])*(\.0*)?\s*$`)

// integer is pydantic 2's lax int: integers, floats without a fraction,
// bools, and integer strings.
func (v *validator) integer(loc []any, val any) (int64, bool) {
	switch x := val.(type) {
	case bool:
		if x {
			return 1, true
		}
		return 0, true
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n, true
		}
		f, err := x.Float64()
		if err == nil && f == math.Trunc(f) && math.Abs(f) < 1<<63 {
			return int64(f), true
		}
		v.add(fieldError{Type: "int_from_float", Loc: loc, Msg: "Input should be a valid integer, got a number with a fractional part", Input: val})
		return 0, false
	case string:
		if intString.MatchString(x) {
			s := strings.TrimSpace(strings.ReplaceAll(x, "_", ""))
			if i := strings.IndexByte(s, '.'); i >= 0 {
				s = s[:i]
			}
			if n, err := strconv.ParseInt(s, 10, 64); err == nil {
				return n, true
			}
		}
		v.add(fieldError{Type: "int_parsing", Loc: loc, Msg: "Input should be a valid integer, unable to parse string as an integer", Input: val})
		return 0, false
	}
	v.add(fieldError{Type: "int_type", Loc: loc, Msg: "Input should be a valid integer", Input: val})
	return 0, false
}

// Form fields: FastAPI reads an empty value as "not sent" (the default
// applies), and every value is a string.

// formBool is an Optional[bool] = Form(default) field.
func (v *validator) formBool(f *form, name string, def bool) bool {
	s := f.value(name)
	if s == "" {
		return def
	}
	b, _ := v.boolean([]any{"body", name}, s)
	return b
}

// formInt is an Optional[int] = Form(None) field; nil when not sent.
func (v *validator) formInt(f *form, name string) any {
	s := f.value(name)
	if s == "" {
		return nil
	}
	n, ok := v.integer([]any{"body", name}, s)
	if !ok {
		return nil
	}
	return n
}

// queryBool is an optional boolean query parameter.
func (v *validator) queryBool(r *http.Request, name string, def bool) bool {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def
	}
	b, _ := v.boolean([]any{"query", name}, s)
	return b
}
