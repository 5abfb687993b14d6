package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"morag-gpu/gateway/files"
)

const (
	maxFieldBytes = 1 << 20 // one form field (options, metadata)
	maxFields     = 64
)

// form is a multipart request read as a stream: the file part goes straight
// to the upload store, the other fields are kept in memory (bounded).
type form struct {
	fields map[string]string
	upload *files.Upload
}

func (f *form) value(name string) string { return f.fields[name] }

// errBadForm is a client error in the form (400).
type errBadForm struct{ msg string }

func (e *errBadForm) Error() string { return e.msg }

// readForm streams a multipart/form-data body. The upload, when one was
// saved, is deleted again on error, so a refused request leaves no file.
func (g *Gateway) readForm(ctx context.Context, r *http.Request, userID string, fileRequired bool) (f *form, err error) {
	f = &form{fields: map[string]string{}}
	defer func() {
		if err != nil && f.upload != nil {
			_ = g.files.Delete(context.WithoutCancel(ctx), f.upload.ID)
			f.upload = nil
		}
	}()
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch ct {
	case "multipart/form-data":
	case "application/x-www-form-urlencoded":
		if fileRequired {
			return f, errNoFile
		}
		r.Body = http.MaxBytesReader(nil, r.Body, maxFieldBytes*4)
		if err := r.ParseForm(); err != nil {
			return f, &errBadForm{"invalid form: " + err.Error()}
		}
		for k, v := range r.PostForm {
			f.fields[k] = v[0]
		}
		return f, nil
	default:
		if fileRequired {
			return f, errNoFile // FastAPI reads no form from such a body: file is missing
		}
		return f, &errBadForm{fmt.Sprintf("expected multipart/form-data, got %q", ct)}
	}
	// The body may hold the file plus fields: allow the upload limit and
	// generous room for the rest. The store enforces the file's own limit.
	r.Body = http.MaxBytesReader(nil, r.Body, g.cfg.MaxUpload+maxFieldBytes*maxFields)
	mr, err := r.MultipartReader()
	if err != nil {
		return f, &errBadForm{"invalid multipart body: " + err.Error()}
	}
	for n := 0; ; n++ {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return f, fmt.Errorf("%w of %d bytes", files.ErrTooLarge, g.cfg.MaxUpload)
			}
			return f, &errBadForm{"invalid multipart body: " + err.Error()}
		}
		if n >= maxFields {
			part.Close()
			return f, &errBadForm{"too many form fields"}
		}
		name := part.FormName()
		if name == "file" {
			if f.upload != nil {
				part.Close()
				return f, &errBadForm{"only one 'file' may be sent"}
			}
			f.upload, err = g.files.Save(ctx, userID, part.FileName(), part)
			part.Close()
			if err != nil {
				var mbe *http.MaxBytesError
				if errors.As(err, &mbe) {
					return f, fmt.Errorf("%w of %d bytes", files.ErrTooLarge, g.cfg.MaxUpload)
				}
				return f, err
			}
			continue
		}
		var buf bytes.Buffer
		if _, err := io.Copy(&buf, io.LimitReader(part, maxFieldBytes+1)); err != nil {
			part.Close()
			return f, &errBadForm{"invalid multipart body: " + err.Error()}
		}
		part.Close()
		if buf.Len() > maxFieldBytes {
			return f, &errBadForm{fmt.Sprintf("form field %q is larger than %d bytes", name, maxFieldBytes)}
		}
		if _, dup := f.fields[name]; !dup {
			f.fields[name] = buf.String()
		}
	}
	if fileRequired && f.upload == nil {
		return f, errNoFile
	}
	return f, nil
}

// parseJSONObject parses an options/metadata string: empty or null is no
// object; anything but a JSON object is an error naming the field.
func parseJSONObject(field, s string) (map[string]any, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, &errBadForm{fmt.Sprintf("Invalid JSON in %s: %v", field, err)}
	}
	if dec.More() {
		return nil, &errBadForm{fmt.Sprintf("Invalid JSON in %s: extra data after the JSON value", field)}
	}
	if v == nil {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, &errBadForm{fmt.Sprintf("Invalid JSON in %s: expected a JSON object", field)}
	}
	return m, nil
}

// decodeJSON reads a JSON request body (bounded) into v.
func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 16<<20))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return &errBadForm{"Invalid JSON body: " + err.Error()}
	}
	return nil
}
