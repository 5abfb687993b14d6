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
	"os"
	"strings"

	"morag-gpu/gateway/files"
)

// Limits on a form's non-file fields. MoRAG's fields are short (flags,
// ids, an options or metadata JSON object); the attack sent 63 fields of
// 1 MB each, all buffered before anything was checked.
const (
	maxFieldBytes      = 64 << 10  // one field (options, metadata)
	maxFieldsBytes     = 256 << 10 // all fields together
	maxFields          = 32
	multipartOverhead  = 64 << 10 // part headers and boundaries
	urlencodedMaxBytes = maxFieldsBytes
)

// form is a multipart request read as a stream: the file part goes straight
// to the upload store, the other fields are kept in memory (bounded).
type form struct {
	fields map[string]string
	upload *files.Upload
}

func (f *form) value(name string) string { return f.fields[name] }

// readForm streams a multipart/form-data body: the file part goes straight
// to the upload store (which enforces size, quota and the free-disk floor
// as the bytes arrive), each other field is read up to maxFieldBytes and
// all of them up to maxFieldsBytes. Anonymous uploads are refused before
// the body is read when the operator turned them off. The upload, when one
// was saved, is deleted again on error, so a refused request leaves no file.
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
		r.Body = http.MaxBytesReader(nil, r.Body, urlencodedMaxBytes)
		if err := r.ParseForm(); err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return f, err
			}
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
	if userID == "" && g.cfg.NoAnonymousUploads {
		return f, errAnonymousUpload
	}
	// A declared length the caller's quota cannot hold is refused before a
	// byte is stored; the store checks again as the bytes arrive.
	if r.ContentLength > 0 {
		if err := g.files.CheckRoom(userID, r.ContentLength-maxFieldsBytes-multipartOverhead); err != nil {
			return f, err
		}
	}
	r.Body = http.MaxBytesReader(nil, r.Body, g.cfg.MaxUpload+maxFieldsBytes+multipartOverhead)
	mr, err := r.MultipartReader()
	if err != nil {
		return f, &errBadForm{"invalid multipart body: " + err.Error()}
	}
	fieldBytes := 0
	for n := 0; ; n++ {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return f, formReadError(err, g.cfg.MaxUpload)
		}
		if n >= maxFields {
			part.Close()
			return f, &errBadForm{fmt.Sprintf("too many form fields (at most %d)", maxFields)}
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
				return f, formReadError(err, g.cfg.MaxUpload)
			}
			continue
		}
		limit := min(maxFieldBytes, maxFieldsBytes-fieldBytes)
		var buf bytes.Buffer
		_, err = io.Copy(&buf, io.LimitReader(part, int64(limit)+1))
		part.Close()
		if err != nil {
			return f, formReadError(err, g.cfg.MaxUpload)
		}
		if buf.Len() > limit {
			if limit < maxFieldBytes {
				return f, &errBadForm{fmt.Sprintf("form fields are larger than %d bytes together", maxFieldsBytes)}
			}
			return f, &errBadForm{fmt.Sprintf("form field %q is larger than %d bytes", name, maxFieldBytes)}
		}
		fieldBytes += buf.Len()
		if _, dup := f.fields[name]; !dup {
			f.fields[name] = buf.String()
		}
	}
	if fileRequired && f.upload == nil {
		return f, errNoFile
	}
	return f, nil
}

// formReadError classifies an error met while reading a multipart body:
// the body limit is 413, a body that ends early is 400 (io.ErrUnexpectedEOF
// for clientError), a stalled one 408, anything else (disk, Redis) as is.
func formReadError(err error, maxUpload int64) error {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return fmt.Errorf("%w of %d bytes", files.ErrTooLarge, maxUpload)
	case errors.Is(err, errTooSlow), errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, files.ErrTooLarge), errors.Is(err, files.ErrQuota), errors.Is(err, files.ErrDiskFull),
		errors.Is(err, context.Canceled):
		return err
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return io.ErrUnexpectedEOF
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		return err // the upload directory failed: the gateway's fault
	}
	// mime/multipart reports a malformed or truncated body with its own
	// error strings; they are all the client's.
	return &errBadForm{"invalid multipart body: " + err.Error()}
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

// decodeJSON reads a JSON request body into v. The connection middleware
// (limits.go) already bounds JSON bodies by -max-task-bytes; 16 MiB here is
// the backstop. An oversized body is a 413 (*http.MaxBytesError), not a
// bad JSON.
func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 16<<20))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		if errors.Is(err, errTooSlow) || errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
		return &errBadForm{"Invalid JSON body: " + err.Error()}
	}
	return nil
}
