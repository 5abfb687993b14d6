package protocol

import (
	"encoding/json"
	"fmt"
	"time"
)

// State is a Celery task state as stored in the result backend.
type State string

// Celery's states (celery/states.py) plus the custom ones MoRAG uses.
const (
	StatePending  State = "PENDING"
	StateReceived State = "RECEIVED"
	StateStarted  State = "STARTED"
	StateSuccess  State = "SUCCESS"
	StateFailure  State = "FAILURE"
	StateRevoked  State = "REVOKED"
	StateRejected State = "REJECTED"
	StateRetry    State = "RETRY"
	StateIgnored  State = "IGNORED"
	// StateProgress is the custom state long tasks report, with meta
	// {"progress": 0..1, "message": "..."}.
	StateProgress State = "PROGRESS"
)

// Ready reports whether s is final (SUCCESS, FAILURE or REVOKED).
func (s State) Ready() bool {
	return s == StateSuccess || s == StateFailure || s == StateRevoked
}

// propagates reports whether AsyncResult.get() raises for s.
func (s State) propagates() bool { return s == StateFailure || s == StateRevoked }

// ResultMeta is the JSON stored at celery-task-meta-<id>, field for field.
type ResultMeta struct {
	Status    State           `json:"status"`
	Result    json.RawMessage `json:"result"`
	Traceback *string         `json:"traceback"`
	Children  []any           `json:"children"`
	DateDone  *string         `json:"date_done"`
	GroupID   string          `json:"group_id,omitempty"`
	ParentID  string          `json:"parent_id,omitempty"`
	// Extended fields (result_extended); empty unless the writer set them.
	Name    string         `json:"name,omitempty"`
	Args    []any          `json:"args,omitempty"`
	Kwargs  map[string]any `json:"kwargs,omitempty"`
	Worker  string         `json:"worker,omitempty"`
	Retries *int           `json:"retries,omitempty"`
	Queue   string         `json:"queue,omitempty"`
	TaskID  string         `json:"task_id"`
}

// TaskError is a task failure in Celery's serialized form:
// {"exc_type", "exc_message", "exc_module"}. Python's AsyncResult.get()
// raises an exception of class ExcType with Args as its arguments.
type TaskError struct {
	ExcType   string `json:"exc_type"`
	ExcModule string `json:"exc_module"`
	// ExcMessage is the exception's args tuple; usually one string.
	ExcMessage []any `json:"exc_message"`
	// Traceback, when known, is stored next to the result.
	Traceback string `json:"-"`
}

func (e *TaskError) Error() string {
	msg := ""
	if len(e.ExcMessage) == 1 {
		msg = fmt.Sprint(e.ExcMessage[0])
	} else if len(e.ExcMessage) > 1 {
		msg = fmt.Sprint(e.ExcMessage...)
	}
	if msg == "" {
		return e.ExcType // SoftTimeLimitExceeded(), not "SoftTimeLimitExceeded: "
	}
	return fmt.Sprintf("%s: %s", e.ExcType, msg)
}

// NewTaskError builds a TaskError with a single message argument.
func NewTaskError(excType, excModule, message string) *TaskError {
	return &TaskError{ExcType: excType, ExcModule: excModule, ExcMessage: []any{message}}
}

// ErrTimeout-like sentinel errors shared by the client and the worker.
var (
	// ErrNoResult means the task was sent with ignore_result.
	ErrNoResult = fmt.Errorf("protocol: task was sent with ignore_result; no result will be stored")
)

// Store options for Backend.Store.
type StoreRequest struct {
	TaskID    string
	State     State
	Result    any // any JSON-encodable value; a *TaskError for FAILURE/RETRY/REVOKED
	Traceback string
	// Message, when known, supplies parent_id/group_id (and extended fields).
	Message *Message
	// Worker is the hostname recorded for extended results.
	Worker string
	// Children are the AsyncResult tuples of tasks this one spawned.
	Children []any
	Now      time.Time // zero: time.Now()
	// Encoded, when set, is the meta JSON exactly as Backend.EncodeMeta
	// made it (by a worker on the far side of the gateway); it is written
	// as is, and only TaskID and State are read besides.
	Encoded []byte
}
