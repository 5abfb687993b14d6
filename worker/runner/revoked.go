package runner

import (
	"sync"
	"time"
)

// Python's worker_state.revoked: LimitedSet(maxlen=50000, expires=10800).
// Celery bounds only the count; anyone who can reach the pidbox can send
// 50 000 ids of a megabyte each, so the set is bounded in bytes too.
const (
	revokedMax      = 50000
	revokedExpires  = 3 * time.Hour
	revokedMaxBytes = 8 << 20
	// revokedEntryOverhead approximates what one entry costs beyond its id
	// (map entry, order slot, string header), so many tiny ids count too.
	revokedEntryOverhead = 64
)

// revokedSet is a bounded, expiring set of revoked task ids, like
// Celery's LimitedSet: the oldest entries go first when it is full.
type revokedSet struct {
	mu       sync.Mutex
	max      int
	maxBytes int
	bytes    int // sum of entrySize over the entries in at
	expires  time.Duration
	seq      uint64
	at       map[string]revokedEntry
	order    []revokedRef // insertion order; refs whose seq is stale are skipped
}

type revokedEntry struct {
	t   time.Time
	seq uint64
}

type revokedRef struct {
	id  string
	seq uint64
}

func newRevokedSet(max, maxBytes int, expires time.Duration) *revokedSet {
	return &revokedSet{max: max, maxBytes: maxBytes, expires: expires, at: map[string]revokedEntry{}}
}

func entrySize(id string) int { return len(id) + revokedEntryOverhead }

// Add marks ids revoked at now.
func (s *revokedSet) Add(now time.Time, ids ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if id == "" {
			continue
		}
		s.seq++
		if _, dup := s.at[id]; !dup {
			s.bytes += entrySize(id)
		}
		s.at[id] = revokedEntry{t: now, seq: s.seq}
		s.order = append(s.order, revokedRef{id: id, seq: s.seq})
	}
	s.purgeLocked(now)
}

// Contains reports whether id is revoked (and not expired).
func (s *revokedSet) Contains(now time.Time, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.at[id]
	return ok && now.Sub(e.t) < s.expires
}

// Snapshot returns the live entries, oldest first.
func (s *revokedSet) Snapshot(now time.Time) (ids []string, at []time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purgeLocked(now)
	for _, r := range s.order {
		if e, ok := s.at[r.id]; ok && e.seq == r.seq {
			ids = append(ids, r.id)
			at = append(at, e.t)
		}
	}
	return ids, at
}

// purgeLocked drops expired entries and, when over max or maxBytes, the
// oldest ones.
func (s *revokedSet) purgeLocked(now time.Time) {
	i := 0
	for ; i < len(s.order); i++ {
		r := s.order[i]
		e, ok := s.at[r.id]
		if !ok || e.seq != r.seq {
			continue // superseded by a later Add
		}
		if now.Sub(e.t) >= s.expires || len(s.at) > s.max || s.bytes > s.maxBytes {
			delete(s.at, r.id)
			s.bytes -= entrySize(r.id)
			continue
		}
		break
	}
	if i > 0 {
		s.order = append(s.order[:0:0], s.order[i:]...)
	}
}
