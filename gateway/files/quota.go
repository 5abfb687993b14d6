package files

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
)

// Errors of the byte budgets, which callers map to 413 and 507.
var (
	ErrQuota    = errors.New("upload quota exceeded")
	ErrDiskFull = errors.New("the gateway's upload disk is nearly full; try again later")
)

// diskCheckEvery is how many bytes an upload writes between free-space
// checks: statfs is cheap, but not per 32 KiB chunk.
const diskCheckEvery = 4 << 20

// usage accounts the bytes each owner holds in the upload directory:
// stored uploads and uploads still arriving. Anonymous uploads share one
// budget, so rotating IPs buys nothing. It lives in memory because the
// upload directory is this gateway's own disk; New rebuilds it from the
// directory, so a restart forgets nothing.
type usage struct {
	mu    sync.Mutex
	bytes map[string]int64     // owner ("" anonymous) -> bytes stored and in flight
	files map[string]fileUsage // transfer id -> what it holds
}

type fileUsage struct {
	owner string
	size  int64
}

func newUsage() *usage {
	return &usage{bytes: map[string]int64{}, files: map[string]fileUsage{}}
}

// limit is the quota of owner; 0 means none.
func (s *Store) limit(owner string) int64 {
	if owner == "" {
		return s.opts.QuotaAnonymous
	}
	return s.opts.QuotaUser
}

func (s *Store) quotaError(owner string, used, want, limit int64) error {
	who := "anonymous callers (together)"
	if owner != "" {
		who = "user " + owner
	}
	return fmt.Errorf("%w: %s hold %d of %d bytes in stored and arriving uploads; this upload needs %d more. Uploads are freed when their task finishes (or after 24 h)",
		ErrQuota, who, used, limit, want)
}

// reserve takes n bytes of owner's budget.
func (s *Store) reserve(owner string, n int64) error {
	s.use.mu.Lock()
	defer s.use.mu.Unlock()
	used := s.use.bytes[owner]
	if lim := s.limit(owner); lim > 0 && used+n > lim {
		return s.quotaError(owner, used, n, lim)
	}
	s.use.bytes[owner] = used + n
	return nil
}

func (s *Store) release(owner string, n int64) {
	s.use.mu.Lock()
	defer s.use.mu.Unlock()
	s.releaseLocked(owner, n)
}

func (s *Store) releaseLocked(owner string, n int64) {
	if s.use.bytes[owner] -= n; s.use.bytes[owner] <= 0 {
		delete(s.use.bytes, owner)
	}
}

// stored turns an upload's reservation into a stored file.
func (s *Store) stored(id, owner string, size int64) {
	s.use.mu.Lock()
	defer s.use.mu.Unlock()
	s.use.files[id] = fileUsage{owner: owner, size: size}
}

// forget releases what a deleted upload held.
func (s *Store) forget(id string) {
	s.use.mu.Lock()
	defer s.use.mu.Unlock()
	if f, ok := s.use.files[id]; ok {
		delete(s.use.files, id)
		s.releaseLocked(f.owner, f.size)
	}
}

// Used is how many bytes owner ("" for anonymous callers) holds.
func (s *Store) Used(owner string) int64 {
	s.use.mu.Lock()
	defer s.use.mu.Unlock()
	return s.use.bytes[owner]
}

// CheckRoom reports, without reserving anything, whether owner may upload
// n more bytes: ErrQuota or ErrDiskFull when not.
func (s *Store) CheckRoom(owner string, n int64) error {
	n = max(n, 0)
	s.use.mu.Lock()
	used := s.use.bytes[owner]
	lim := s.limit(owner)
	s.use.mu.Unlock()
	if lim > 0 && used+n > lim {
		return s.quotaError(owner, used, n, lim)
	}
	return s.checkDisk(n)
}

// checkDisk is ErrDiskFull when writing n more bytes would leave less than
// MinFreeDisk free on the upload directory's filesystem.
func (s *Store) checkDisk(n int64) error {
	if s.opts.MinFreeDisk <= 0 {
		return nil
	}
	free, err := s.freeDisk()
	if err != nil {
		return fmt.Errorf("files: free space of %s: %w", s.dir, err)
	}
	if free-n < s.opts.MinFreeDisk {
		s.log.Warn().Int64("free", free).Int64("floor", s.opts.MinFreeDisk).Msg("upload refused: free disk below -min-free-disk")
		return ErrDiskFull
	}
	return nil
}

func (s *Store) freeDisk() (int64, error) {
	if s.opts.FreeDisk != nil {
		return s.opts.FreeDisk(s.dir)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// budgetWriter reserves owner's budget before each write and checks the
// free-disk floor every diskCheckEvery bytes, so an upload stops at its
// limit as it arrives, not after it has filled the disk.
type budgetWriter struct {
	s         *Store
	owner     string
	w         io.Writer
	reserved  int64
	sinceDisk int64
}

func (b *budgetWriter) Write(p []byte) (int, error) {
	n := int64(len(p))
	if err := b.s.reserve(b.owner, n); err != nil {
		return 0, err
	}
	b.reserved += n
	if b.sinceDisk += n; b.sinceDisk >= diskCheckEvery {
		b.sinceDisk = 0
		if err := b.s.checkDisk(0); err != nil {
			return 0, err
		}
	}
	return b.w.Write(p)
}

// loadUsage rebuilds the accounting from the upload directory at start:
// each file counts for its owner (from its metadata), or for anonymous
// callers when its metadata is gone (the sweeper deletes those soon).
func (s *Store) loadUsage(ctx context.Context) error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !idPattern.MatchString(e.Name()) {
			continue
		}
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		owner := ""
		if u, err := s.Get(ctx, e.Name()); err == nil {
			owner = u.UserID
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
		s.use.mu.Lock()
		s.use.bytes[owner] += info.Size()
		s.use.files[e.Name()] = fileUsage{owner: owner, size: info.Size()}
		s.use.mu.Unlock()
	}
	return nil
}
