package protocol

import (
	"encoding/json"
	"time"
)

// Signature is a Celery canvas signature, as embedded in callbacks,
// errbacks, chains and chords: {"task", "args", "kwargs", "options",
// "subtask_type", "immutable"}.
type Signature struct {
	Task        string         `json:"task"`
	Args        []any          `json:"args"`
	Kwargs      map[string]any `json:"kwargs"`
	Options     map[string]any `json:"options"`
	SubtaskType *string        `json:"subtask_type"`
	Immutable   bool           `json:"immutable"`
}

// Embed is the third element of a protocol v2 body.
type Embed struct {
	Callbacks []Signature `json:"callbacks"`
	Errbacks  []Signature `json:"errbacks"`
	// Chain is stored reversed, as Celery does: the next task is the last
	// element.
	Chain []Signature `json:"chain"`
	Chord *Signature  `json:"chord"`
}

// TimeLimit is the `timelimit` header, [hard, soft] in seconds. A zero value
// means "no limit given" and is encoded as null.
type TimeLimit struct {
	Hard time.Duration
	Soft time.Duration
	// HardRaw and SoftRaw are the numbers exactly as the sender wrote them
	// ("2" or "2.0"), empty when absent: Python's TimeLimitExceeded(2)
	// carries the value it received, int or float.
	HardRaw, SoftRaw json.Number
}

// Message is one task message in protocol-independent form. Decode fills it
// from v1, v2 or hybrid envelopes; Encode always writes protocol v2.
//
// Numbers inside Args, Kwargs and Result values are json.Number so that
// Python's arbitrary-precision ints survive the round trip.
type Message struct {
	// Headers (protocol v2 names).
	ID           string
	Task         string
	Lang         string
	Shadow       string
	ETA          *time.Time
	Expires      *time.Time
	Group        string
	GroupIndex   *int
	Retries      int
	TimeLimit    TimeLimit
	RootID       string
	ParentID     string
	ArgsRepr     string
	KwargsRepr   string
	Origin       string
	IgnoreResult bool
	// Headers holds every header this struct has no field for (custom
	// headers from apply_async(headers=...), stamps, redelivered, ...), so a
	// republished message (retry, forward) keeps them.
	Headers map[string]any

	// Body.
	Args   []any
	Kwargs map[string]any
	Embed  Embed

	// Properties.
	CorrelationID string
	ReplyTo       string
	Priority      int
	DeliveryTag   string
	Exchange      string
	RoutingKey    string
	Redelivered   bool

	// Protocol is 1 or 2: which form the message was decoded from.
	Protocol int
}

// Delivery is a message taken from a queue and held in kombu's unacked
// bookkeeping until it is acked or requeued.
type Delivery struct {
	// Queue is the logical queue (without the priority suffix) it came from.
	Queue string
	// Raw is the envelope exactly as popped; requeues and forwards use it so
	// that nothing the producer wrote is lost.
	Raw json.RawMessage
	// Tag is properties.delivery_tag, the key in unacked/unacked_index.
	Tag string
	// Message is the decoded task, or nil when Err is set.
	Message *Message
	// Err is why the envelope could not be decoded (a *DecodeError).
	Err error
	// Starts is how many times Go workers started this message before and
	// never finished it (each one died or hung holding it): the poison
	// message count. Python workers' runs are not counted. 0 for a fresh
	// message.
	Starts int

	// deadLettered is set once the message is in the dead-letter list
	// (Fetch moves envelopes that cannot even be held there at once).
	deadLettered bool
}
