package auth

import (
	"context"
	"errors"
	"strings"
	"testing"
)

type fakeLiveness struct {
	alive      map[string]bool
	transcribe map[string]bool
	err        error
	asked      []string
}

func (f *fakeLiveness) QueueAlive(_ context.Context, q string) (bool, error) {
	f.asked = append(f.asked, q)
	return f.alive[q], f.err
}

func (f *fakeLiveness) CanTranscribe(_ context.Context, q string) (bool, string, error) {
	f.asked = append(f.asked, "transcribe:"+q)
	return f.transcribe[q], "gpu@host: no transcriber: built without whisper tag", f.err
}

func TestRouteSeedTable(t *testing.T) {
	ctx := context.Background()
	alice := &KeyData{UserID: "alice", Active: true}
	live := &fakeLiveness{alive: map[string]bool{"gpu-tasks-alice": true}}
	rows := []struct {
		name string
		user *KeyData
		gpu  bool
		want Decision
	}{
		{"none/false", nil, false, Decision{Queue: "celery", Reason: ReasonGPUNotRequested}},
		{"none/true", nil, true, Decision{Queue: "celery", Reason: ReasonAnonymous}},
		{"key/false", alice, false, Decision{Queue: "celery", Reason: ReasonGPUNotRequested, UserID: "alice"}},
		{"key/true", alice, true, Decision{Queue: "gpu-tasks-alice", Reason: ReasonGPUWorkerAvailable, GPU: true, UserID: "alice"}},
	}
	for _, r := range rows {
		if got := Route(ctx, r.user, r.gpu, Need{}, live); got != r.want {
			t.Errorf("%s: Route = %+v, want %+v", r.name, got, r.want)
		}
	}
	if len(live.asked) != 1 || live.asked[0] != "gpu-tasks-alice" {
		t.Fatalf("liveness asked about %v; only the GPU row needs it, for the user's own queue", live.asked)
	}
}

func TestRouteFallsBackWithoutLiveGPUWorker(t *testing.T) {
	ctx := context.Background()
	bob := &KeyData{UserID: "bob", Active: true}
	// alice's worker is alive; bob has none.
	got := Route(ctx, bob, true, Need{}, &fakeLiveness{alive: map[string]bool{"gpu-tasks-alice": true}})
	if got != (Decision{Queue: "celery", Reason: ReasonNoLiveGPUWorker, UserID: "bob", Detail: "no live worker consumes queue gpu-tasks-bob"}) {
		t.Fatalf("no live worker: %+v", got)
	}
	got = Route(ctx, bob, true, Need{}, &fakeLiveness{err: errors.New("redis: connection refused")})
	if got.Queue != "celery" || got.GPU || got.Reason != ReasonLivenessUnknown+": redis: connection refused" {
		t.Fatalf("liveness error: %+v", got)
	}
	got = Route(ctx, bob, true, Need{}, nil)
	if got.Queue != "celery" || !strings.HasPrefix(got.Reason, ReasonLivenessUnknown+": ") {
		t.Fatalf("nil liveness: %+v", got)
	}
	// A Python-minted key can carry a user_id that is no safe queue name.
	odd := &KeyData{UserID: "a b", Active: true}
	live := &fakeLiveness{alive: map[string]bool{"gpu-tasks-a b": true}}
	if got := Route(ctx, odd, true, Need{}, live); got.Queue != "celery" || got.Reason != ReasonInvalidUserID || len(live.asked) != 0 {
		t.Fatalf("invalid user_id: %+v (asked %v)", got, live.asked)
	}
}

// TestRouteByCapability: gpu=true content that needs a transcript goes to
// the user's GPU queue only when a live worker there can transcribe (a
// whisper build, or a Python worker); content that needs none goes there
// whenever a worker is alive.
func TestRouteByCapability(t *testing.T) {
	ctx := context.Background()
	alice := &KeyData{UserID: "alice", Active: true}
	speech := Need{Transcript: true, What: "video with an audio track"}
	rows := []struct {
		name       string
		alive, can bool
		need       Need
		queue      string
		reason     string
	}{
		{"GPU worker without transcriber, spoken video", true, false, speech, "celery", ReasonGPUWorkerCannotTranscribe},
		{"GPU worker with transcriber (or a Python worker), spoken video", true, true, speech, "gpu-tasks-alice", ReasonGPUWorkerAvailable},
		{"GPU worker without transcriber, silent video", true, false, Need{}, "gpu-tasks-alice", ReasonGPUWorkerAvailable},
		{"no GPU worker, spoken video", false, false, speech, "celery", ReasonNoLiveGPUWorker},
	}
	for _, r := range rows {
		live := &fakeLiveness{alive: map[string]bool{"gpu-tasks-alice": r.alive}, transcribe: map[string]bool{"gpu-tasks-alice": r.can}}
		got := Route(ctx, alice, true, r.need, live)
		if got.Queue != r.queue || got.Reason != r.reason || got.GPU != (r.queue != "celery") {
			t.Errorf("%s: Route = %+v, want %s (%s)", r.name, got, r.queue, r.reason)
		}
		if r.reason == ReasonGPUWorkerCannotTranscribe && !strings.Contains(got.Detail, "video with an audio track needs a transcript and no live worker on queue gpu-tasks-alice has a transcriber (gpu@host: no transcriber: built without whisper tag)") {
			t.Errorf("%s: detail %q does not say what is missing", r.name, got.Detail)
		}
	}
	live := &fakeLiveness{alive: map[string]bool{"gpu-tasks-alice": true}, err: nil}
	live.err = errors.New("redis down")
	if got := Route(ctx, alice, true, speech, live); got.Queue != "celery" || !strings.HasPrefix(got.Reason, ReasonLivenessUnknown) {
		t.Errorf("liveness error: %+v", got)
	}
}
