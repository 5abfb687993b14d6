package runner

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// forwardedHeader lists the queues a message was forwarded from, so that
// two workers forwarding to each other's queues fail the task instead of
// passing it back and forth forever. Python ignores unknown headers.
const forwardedHeader = "forwarded_from"

// retarget returns the envelope raw as kombu would have written it had it
// been published to queue toQueue in the first place: the same body,
// headers (plus fromQueue appended to forwarded_from) and properties, with
// delivery_info pointing at toQueue and a fresh delivery tag.
//
// The delivery info matters: Python's restore and Task.retry send a
// message back to delivery_info.routing_key. The fresh tag matters too:
// the forwarded copy may be fetched (and recorded in unacked under its
// tag) before this worker acks the original.
func retarget(raw []byte, fromQueue, toQueue, newTag string) ([]byte, error) {
	var env map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // keep every number exactly as the producer wrote it
	if err := dec.Decode(&env); err != nil {
		return nil, fmt.Errorf("envelope is not a JSON object: %w", err)
	}
	props, ok := env["properties"].(map[string]any)
	if !ok {
		return nil, errors.New("envelope has no properties object")
	}
	info, _ := props["delivery_info"].(map[string]any)
	if info == nil {
		info = map[string]any{}
	}
	info["exchange"] = ""
	info["routing_key"] = toQueue
	delete(info, "redelivered")
	props["delivery_info"] = info
	props["delivery_tag"] = newTag

	headers, _ := env["headers"].(map[string]any)
	if headers == nil {
		headers = map[string]any{}
	}
	from := forwardedFrom(headers)
	headers[forwardedHeader] = append(from, fromQueue)
	env["headers"] = headers

	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(env); err != nil {
		return nil, err
	}
	return bytes.TrimRight(out.Bytes(), "\n"), nil
}

// forwardedFrom reads the forwarded_from header.
func forwardedFrom(headers map[string]any) []string {
	list, _ := headers[forwardedHeader].([]any)
	var out []string
	for _, v := range list {
		if s, ok := v.(string); ok {
			out = append(out, s)
		}
	}
	if l, ok := headers[forwardedHeader].([]string); ok {
		out = append(out, l...)
	}
	return out
}
