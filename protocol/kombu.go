package protocol

import (
	"strconv"

	"morag-gpu/protocol/internal/kombujson"
)

// newWriter returns a kombu JSON writer (protocol/internal/kombujson) that
// also writes Celery's canvas signatures, appending to buf.
func newWriter(buf []byte) kombujson.Writer {
	return kombujson.Writer{Buf: buf, Ext: writeSignatureValue}
}

// marshalJSON is kombujson.Marshal with signatures: what the result backend
// and the message bodies write.
func marshalJSON(v any) ([]byte, error) {
	w := newWriter(make([]byte, 0, 64))
	if err := w.Value(v); err != nil {
		return nil, err
	}
	return w.Buf, nil
}

// writeSignatureValue is the writers' Ext: Signature, *Signature and
// []Signature values anywhere in a value are written as Celery's dicts.
func writeSignatureValue(w *kombujson.Writer, v any) (bool, error) {
	switch x := v.(type) {
	case Signature:
		return true, writeSignature(w, &x)
	case *Signature:
		if x == nil {
			w.Buf = append(w.Buf, "null"...)
			return true, nil
		}
		return true, writeSignature(w, x)
	case []Signature:
		return true, writeSignatures(w, x)
	}
	return false, nil
}

// signature writes a canvas signature with the keys Celery's Signature
// dict has. Nil args/kwargs/options become empty: Python does
// tuple(sig.args) and fails on None.
func writeSignature(w *kombujson.Writer, s *Signature) error {
	if err := w.Enter(); err != nil {
		return err
	}
	w.Buf = append(w.Buf, `{"task":`...)
	w.Buf = kombujson.AppendString(w.Buf, s.Task)
	w.Buf = append(w.Buf, `,"args":`...)
	if s.Args == nil {
		w.Buf = append(w.Buf, "[]"...)
	} else if err := w.Value(s.Args); err != nil {
		return err
	}
	w.Buf = append(w.Buf, `,"kwargs":`...)
	if s.Kwargs == nil {
		w.Buf = append(w.Buf, "{}"...)
	} else if err := w.Value(s.Kwargs); err != nil {
		return err
	}
	w.Buf = append(w.Buf, `,"options":`...)
	if s.Options == nil {
		w.Buf = append(w.Buf, "{}"...)
	} else if err := w.Value(s.Options); err != nil {
		return err
	}
	w.Buf = append(w.Buf, `,"subtask_type":`...)
	if s.SubtaskType == nil {
		w.Buf = append(w.Buf, "null"...)
	} else {
		w.Buf = kombujson.AppendString(w.Buf, *s.SubtaskType)
	}
	w.Buf = append(w.Buf, `,"immutable":`...)
	w.Buf = strconv.AppendBool(w.Buf, s.Immutable)
	w.Buf = append(w.Buf, '}')
	w.Leave()
	return nil
}

func writeSignatures(w *kombujson.Writer, sigs []Signature) error {
	if sigs == nil {
		w.Buf = append(w.Buf, "null"...)
		return nil
	}
	w.Buf = append(w.Buf, '[')
	for i := range sigs {
		if i > 0 {
			w.Buf = append(w.Buf, ',')
		}
		if err := writeSignature(w, &sigs[i]); err != nil {
			return err
		}
	}
	w.Buf = append(w.Buf, ']')
	return nil
}
