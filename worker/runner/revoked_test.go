package runner

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestRevokedSetExpiresAndBounds(t *testing.T) {
	now := time.Unix(1000, 0)
	s := newRevokedSet(3, 1<<20, time.Minute)
	s.Add(now, "a", "b")
	if !s.Contains(now, "a") || s.Contains(now, "x") {
		t.Fatal("Contains wrong")
	}
	if s.Contains(now.Add(time.Minute), "a") {
		t.Error("entry should expire after a minute")
	}
	s.Add(now.Add(time.Second), "c", "d") // over max: "a" goes
	ids, _ := s.Snapshot(now.Add(time.Second))
	if !reflect.DeepEqual(ids, []string{"b", "c", "d"}) {
		t.Errorf("Snapshot = %v, want [b c d]", ids)
	}
	s.Add(now.Add(2*time.Second), "b") // re-add moves b to the end
	s.Add(now.Add(3*time.Second), "e")
	ids, _ = s.Snapshot(now.Add(3 * time.Second))
	if !reflect.DeepEqual(ids, []string{"d", "b", "e"}) {
		t.Errorf("Snapshot after re-add = %v, want [d b e]", ids)
	}
	ids, _ = s.Snapshot(now.Add(2 * time.Hour))
	if len(ids) != 0 {
		t.Errorf("everything should have expired, got %v", ids)
	}
}

func TestRevokedSetStaysBounded(t *testing.T) {
	s := newRevokedSet(100, 1<<20, time.Hour)
	now := time.Now()
	for i := 0; i < 10000; i++ {
		s.Add(now, fmt.Sprint(i%300))
	}
	ids, _ := s.Snapshot(now)
	if len(ids) != 100 || len(s.order) > 200 {
		t.Errorf("len(ids)=%d len(order)=%d; want 100 ids and a compacted order", len(ids), len(s.order))
	}
}

// TestRevokedSetBoundedInBytes: the attack sent revokes with ids of 900 KB;
// Celery's count bound alone let 50 000 of them hold 45 GB. The byte bound
// keeps the newest ids that fit.
func TestRevokedSetBoundedInBytes(t *testing.T) {
	const maxBytes = 4 << 20
	s := newRevokedSet(revokedMax, maxBytes, time.Hour)
	now := time.Now()
	huge := strings.Repeat("x", 900<<10)
	for i := 0; i < 50; i++ {
		s.Add(now, fmt.Sprintf("%03d%s", i, huge))
	}
	if s.bytes > maxBytes {
		t.Fatalf("revoked set holds %d bytes, over its %d-byte bound", s.bytes, maxBytes)
	}
	ids, _ := s.Snapshot(now)
	if len(ids) == 0 || !strings.HasPrefix(ids[len(ids)-1], "049") {
		t.Fatalf("the newest id must be kept; have %d ids", len(ids))
	}
	// Ordinary ids are unaffected, and re-adding does not double-count.
	small := newRevokedSet(revokedMax, maxBytes, time.Hour)
	for i := 0; i < 1000; i++ {
		small.Add(now, fmt.Sprint(i%10))
	}
	if ids, _ := small.Snapshot(now); len(ids) != 10 || small.bytes != 10*(1+revokedEntryOverhead) {
		t.Fatalf("small ids: %d ids, %d bytes", len(ids), small.bytes)
	}
}
