package remote

// The JSON bodies of the worker API (/api/v1/workers/...). Envelopes and
// result metas travel as []byte, which encoding/json writes as base64, so
// the worker decodes exactly the bytes Redis held and the gateway writes
// exactly the bytes the worker encoded.

// Paths of the worker API, relative to the gateway's URL.
const (
	PathPrefix     = "/api/v1/workers"
	pathHello      = "/hello"
	pathFetch      = "/fetch"
	pathLease      = "/lease"
	pathHeld       = "/held"
	pathRestoreExp = "/restore-expired"
	pathCommit     = "/commit"
	pathAck        = "/ack"
	pathRestore    = "/restore"
	pathForward    = "/forward"
	pathDeadLetter = "/dead-letter"
	pathPoison     = "/poison"
	pathStore      = "/store"
	pathPublish    = "/publish"
	pathEvents     = "/events"
)

// HeaderWorker names the worker (its Celery node name) on every request;
// the gateway checks it against the key that registered it (hello).
const HeaderWorker = "X-Morag-Worker"

// Lease fencing. An HTTP request can reach the gateway long after the
// worker gave up on it (a partition that heals), by when the message may
// have been restored and held again by another worker under the same
// delivery tag. So a request that settles a held message (commit, ack,
// restore, forward, dead-letter, poison, store) carries
// HeaderLeaseUntil: the last moment, on the gateway's clock in Unix
// milliseconds, at which the worker's lease on every tag it names is
// sure not to have lapsed (its last confirmed refresh plus the
// visibility timeout, less a tenth of it for the clocks of other
// restorers). The gateway refuses a request that arrives later (409,
// code "lease_expired") before it touches Redis. Every answer carries
// HeaderTime, the gateway's clock, from which the worker learns it.
// A request without the header is not checked (older workers).
const (
	HeaderLeaseUntil = "X-Morag-Lease-Until"
	HeaderTime       = "X-Morag-Time"
	codeLeaseExpired = "lease_expired"
)

// helloRequest registers a worker: its node name and the queues it will
// consume. Every queue must be one of the key's own.
type helloRequest struct {
	Hostname string   `json:"hostname"`
	Queues   []string `json:"queues"`
}

// helloReply tells the worker the gateway's settings.
type helloReply struct {
	UserID string `json:"user_id"`
	// Queues the key may consume.
	Queues []string `json:"queues"`
	// VisibilityTimeoutS is the broker's visibility timeout, which the
	// worker's lease refreshes must beat.
	VisibilityTimeoutS float64 `json:"visibility_timeout_s"`
	// MaxWaitS and MaxBatch bound one fetch; ConfirmS is how long a
	// fetched message waits for its lease to be confirmed before the
	// restorer may take it back.
	MaxWaitS float64 `json:"max_wait_s"`
	MaxBatch int     `json:"max_batch"`
	ConfirmS float64 `json:"confirm_s"`
}

type fetchRequest struct {
	Queues []string `json:"queues"`
	Max    int      `json:"max"`
	WaitMS int64    `json:"wait_ms"`
}

// wireDelivery is one fetched message. Tag is "" (and DeadLettered set)
// for an envelope the gateway could not even hold and moved to the
// dead-letter list.
type wireDelivery struct {
	Queue        string `json:"queue"`
	Tag          string `json:"tag"`
	Raw          []byte `json:"raw"`
	Starts       int    `json:"starts"`
	DeadLettered bool   `json:"dead_lettered,omitempty"`
}

type fetchReply struct {
	Deliveries []wireDelivery `json:"deliveries"`
	// HeldAfterMS is how long after the request arrived the gateway held
	// Deliveries, with a first lease of its confirm window: the window
	// ends ConfirmS after that. The worker counts it from when it sent
	// the request, which can only make its deadline early. Absent from
	// gateways before it.
	HeldAfterMS *int64 `json:"held_after_ms,omitempty"`
}

type tagsRequest struct {
	Tags []string `json:"tags"`
}

type tagRequest struct {
	Tag string `json:"tag"`
	// Started (restore): the start was counted (RestoreStarted).
	Started bool `json:"started,omitempty"`
}

type heldReply struct {
	Held bool `json:"held"`
}

type countReply struct {
	N int `json:"n"`
	// Tags, in a lease refresh's answer, are the tags refreshed (those
	// still held).
	Tags []string `json:"tags,omitempty"`
}

// wireStore is a result meta the worker encoded (protocol.Backend.EncodeMeta)
// for the task of the held message Tag.
type wireStore struct {
	Tag    string `json:"tag"`
	TaskID string `json:"task_id"`
	State  string `json:"state"`
	Meta   []byte `json:"meta"`
}

// wireOp is one protocol.CommitOp. Publish ops carry an event: its routing
// key and envelope; the gateway picks the channel.
type wireOp struct {
	Kind       string     `json:"kind"` // "s", "f", "p"
	Tag        string     `json:"tag,omitempty"`
	Store      *wireStore `json:"store,omitempty"`
	Starts     int        `json:"starts,omitempty"`
	RoutingKey string     `json:"rk,omitempty"`
	Payload    []byte     `json:"payload,omitempty"`
}

type commitRequest struct {
	Ops []wireOp `json:"ops"`
}

type commitReply struct {
	Status []int `json:"status"`
}

type forwardRequest struct {
	Tag      string `json:"tag"`
	Queue    string `json:"queue"`
	Envelope []byte `json:"envelope"`
	Priority int    `json:"priority"`
}

type publishRequest struct {
	Queue    string `json:"queue"`
	Envelope []byte `json:"envelope"`
	Priority int    `json:"priority"`
}

type deadLetterRequest struct {
	Tag    string `json:"tag"`
	Reason string `json:"reason"`
}

type poisonRequest struct {
	Tag    string     `json:"tag"`
	Reason string     `json:"reason"`
	Store  *wireStore `json:"store,omitempty"`
}

// wireEvent is one event envelope and its routing key (worker.heartbeat,
// task.succeeded, ...).
type wireEvent struct {
	RoutingKey string `json:"rk"`
	Envelope   []byte `json:"envelope"`
}

type eventsRequest struct {
	Events []wireEvent `json:"events"`
}

// errorReply is every error answer: {"detail": "..."} as the rest of the
// gateway's API, plus a machine-readable code.
type errorReply struct {
	Detail string `json:"detail"`
	Code   string `json:"code,omitempty"`
}
