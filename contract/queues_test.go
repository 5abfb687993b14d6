package contract

import "testing"

// The wire values are spelled out on purpose: they are MoRAG's, and a
// Python worker started with --queues=gpu-tasks-alice must meet them.
func TestQueueNames(t *testing.T) {
	if GPUQueue("alice") != "gpu-tasks-alice" || CPUQueue("alice") != "cpu-tasks-alice" || DefaultQueue != "celery" {
		t.Fatal("queue names differ from MoRAG's")
	}
	for _, c := range []struct {
		q    string
		kind QueueKind
		user string
		ok   bool
	}{
		{"gpu-tasks-alice", GPU, "alice", true},
		{"cpu-tasks-bob.x", CPU, "bob.x", true},
		{"gpu-tasks-gpu-tasks-a", GPU, "gpu-tasks-a", true},
		{"celery", "", "", false},
		{"gpu-tasks-", "", "", false},
		{"gpu-tasks", "", "", false},
		{"my-gpu-tasks-alice", "", "", false},
	} {
		kind, user, ok := ParseUserQueue(c.q)
		if kind != c.kind || user != c.user || ok != c.ok {
			t.Errorf("ParseUserQueue(%q) = %q, %q, %v; want %q, %q, %v", c.q, kind, user, ok, c.kind, c.user, c.ok)
		}
		if IsGPUQueue(c.q) != (c.ok && c.kind == GPU) {
			t.Errorf("IsGPUQueue(%q) = %v", c.q, IsGPUQueue(c.q))
		}
	}
	for _, u := range []string{"alice", "a.b-c_d"} {
		if k, got, ok := ParseUserQueue(GPUQueue(u)); !ok || k != GPU || got != u {
			t.Errorf("ParseUserQueue(GPUQueue(%q)) = %q, %q, %v", u, k, got, ok)
		}
		if k, got, ok := ParseUserQueue(CPUQueue(u)); !ok || k != CPU || got != u {
			t.Errorf("ParseUserQueue(CPUQueue(%q)) = %q, %q, %v", u, k, got, ok)
		}
	}
}
