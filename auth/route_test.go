package auth

import (
	"context"
	"errors"
	"strings"
	"testing"
)

type fakeLiveness struct {
	alive map[string]bool
	err   error
	asked []string
}

func (f *fakeLiveness) QueueAlive(_ context.Context, q string) (bool, error) {
	f.asked = append(f.asked, q)
	return f.alive[q], f.err
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
		if got := Route(ctx, r.user, r.gpu, live); got != r.want {
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
	got := Route(ctx, bob, true, &fakeLiveness{alive: map[string]bool{"gpu-tasks-alice": true}})
	if got != (Decision{Queue: "celery", Reason: ReasonNoLiveGPUWorker, UserID: "bob"}) {
		t.Fatalf("no live worker: %+v", got)
	}
	got = Route(ctx, bob, true, &fakeLiveness{err: errors.New("redis: connection refused")})
	if got.Queue != "celery" || got.GPU || got.Reason != ReasonLivenessUnknown+": redis: connection refused" {
		t.Fatalf("liveness error: %+v", got)
	}
	got = Route(ctx, bob, true, nil)
	if got.Queue != "celery" || !strings.HasPrefix(got.Reason, ReasonLivenessUnknown+": ") {
		t.Fatalf("nil liveness: %+v", got)
	}
	// A Python-minted key can carry a user_id that is no safe queue name.
	odd := &KeyData{UserID: "a b", Active: true}
	live := &fakeLiveness{alive: map[string]bool{"gpu-tasks-a b": true}}
	if got := Route(ctx, odd, true, live); got.Queue != "celery" || got.Reason != ReasonInvalidUserID || len(live.asked) != 0 {
		t.Fatalf("invalid user_id: %+v (asked %v)", got, live.asked)
	}
}
