package auth

import (
	"context"
	"errors"
	"morag-gpu/contract"
)

// Liveness tells whether some worker consuming queue has been seen alive
// recently, and whether one of them can transcribe (fleet.Directory
// answers from worker heartbeats, pidbox active_queues and inspect stats).
type Liveness interface {
	QueueAlive(ctx context.Context, queue string) (alive bool, err error)
	// CanTranscribe: when not ok, why names the workers and what they lack.
	CanTranscribe(ctx context.Context, queue string) (ok bool, why string, err error)
}

// Need is what finishing a task takes beyond consuming its queue.
type Need struct {
	// Transcript: the content is audio, or video with an audio track.
	Transcript bool
	// What names the content for messages, e.g. "video with an audio track".
	What string
}

// Decision is where a task goes and why; the gateway returns it as the
// response's routing metadata and logs it.
type Decision struct {
	Queue  string `json:"queue"`
	Reason string `json:"reason"`
	// GPU is true when Queue is the user's GPU queue.
	GPU    bool   `json:"gpu"`
	UserID string `json:"user_id,omitempty"`
	// Detail explains a fallback in words (which queue could not finish
	// the task, and why); empty otherwise.
	Detail string `json:"detail,omitempty"`
}

// Reasons in Decision.Reason. They are stable: clients and dashboards may
// match on them.
const (
	// ReasonGPUWorkerAvailable: valid key, gpu=true, a worker on the user's
	// GPU queue is alive. The only reason with a GPU queue.
	ReasonGPUWorkerAvailable = "gpu-worker-available"
	// ReasonGPUNotRequested: gpu=false, with or without a key.
	ReasonGPUNotRequested = "gpu-not-requested"
	// ReasonAnonymous: gpu=true without a valid key.
	ReasonAnonymous = "anonymous"
	// ReasonNoLiveGPUWorker: valid key, gpu=true, but no worker consumes the
	// user's GPU queue; the task would wait there indefinitely.
	ReasonNoLiveGPUWorker = "no-live-gpu-worker"
	// ReasonGPUWorkerCannotTranscribe: valid key, gpu=true, the content
	// needs a transcript, and no live worker on the user's GPU queue can
	// make one (Go workers built without whisper); it would only hand the
	// task on.
	ReasonGPUWorkerCannotTranscribe = "gpu-worker-cannot-transcribe"
	// ReasonInvalidUserID: the key's user_id (a Python-minted key can carry
	// anything) is not a safe queue name; see ValidateUserID.
	ReasonInvalidUserID = "invalid-user-id"
	// ReasonLivenessUnknown is followed by ": <error>" when liveness could
	// not be determined; the task falls back to the default queue.
	ReasonLivenessUnknown = "liveness-unknown"
)

// Route applies the seed's routing table:
//
//	no key     gpu=false  celery
//	no key     gpu=true   celery (fallback)
//	valid key  gpu=false  celery
//	valid key  gpu=true   gpu-tasks-{user_id}
//
// The last row holds only while a worker consuming gpu-tasks-{user_id} is
// alive according to live and, when need.Transcript, one of them can
// transcribe; otherwise the task goes to celery and the reason says why.
func Route(ctx context.Context, user *KeyData, gpuRequested bool, need Need, live Liveness) Decision {
	d := Decision{Queue: contract.DefaultQueue}
	if user != nil {
		d.UserID = user.UserID
	}
	switch {
	case !gpuRequested:
		d.Reason = ReasonGPUNotRequested
		return d
	case user == nil:
		d.Reason = ReasonAnonymous
		return d
	case ValidateUserID(user.UserID) != nil:
		d.Reason = ReasonInvalidUserID
		return d
	}
	q := contract.GPUQueue(user.UserID)
	alive, err := false, error(nil)
	if live == nil {
		err = errors.New("no liveness source configured")
	} else {
		alive, err = live.QueueAlive(ctx, q)
	}
	switch {
	case err != nil:
		d.Reason = ReasonLivenessUnknown + ": " + err.Error()
	case !alive:
		d.Reason = ReasonNoLiveGPUWorker
		d.Detail = "no live worker consumes queue " + q
	case need.Transcript:
		ok, why, err := live.CanTranscribe(ctx, q)
		switch {
		case err != nil:
			d.Reason = ReasonLivenessUnknown + ": " + err.Error()
		case !ok:
			d.Reason = ReasonGPUWorkerCannotTranscribe
			d.Detail = "the " + need.what() + " needs a transcript and no live worker on queue " + q + " has a transcriber"
			if why != "" {
				d.Detail += " (" + why + ")"
			}
		default:
			d.Queue, d.GPU, d.Reason = q, true, ReasonGPUWorkerAvailable
		}
	default:
		d.Queue, d.GPU, d.Reason = q, true, ReasonGPUWorkerAvailable
	}
	return d
}

func (n Need) what() string {
	if n.What == "" {
		return "content"
	}
	return n.What
}
