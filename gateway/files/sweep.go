package files

import (
	"context"
	"errors"
	"os"
	"strings"
	"time"
)

// DefaultSweepEvery is how often Run sweeps.
const DefaultSweepEvery = time.Minute

// Run sweeps the upload directory every interval until ctx ends.
func (s *Store) Run(ctx context.Context, every time.Duration) error {
	if every <= 0 {
		every = DefaultSweepEvery
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if n, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn().Err(err).Msg("upload sweep failed; retrying next round")
			} else if n > 0 {
				s.log.Info().Int("deleted", n).Msg("swept uploads")
			}
		}
	}
}

// Sweep deletes uploads older than MaxAge, uploads whose task has a stored
// result, abandoned partial uploads and files without metadata. It returns
// how many files it deleted.
func (s *Store) Sweep(ctx context.Context) (int, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return 0, err
	}
	cutoff := time.Now().Add(-s.opts.MaxAge)
	deleted := 0
	var errs []error
	for _, e := range entries {
		if ctx.Err() != nil {
			break
		}
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		name := e.Name()
		old := info.ModTime().Before(cutoff)
		if strings.HasPrefix(name, partPrefix) {
			// A part file that has not grown for an hour is abandoned.
			if info.ModTime().Before(time.Now().Add(-time.Hour)) && os.Remove(s.dir+"/"+name) == nil {
				deleted++
			}
			continue
		}
		if !idPattern.MatchString(name) {
			continue
		}
		u, err := s.Get(ctx, name)
		switch {
		case errors.Is(err, ErrNotFound):
			// No metadata: expired from Redis, or a crash between rename
			// and SET. Keep young files; the SET may be in flight.
			if !info.ModTime().Before(time.Now().Add(-time.Minute)) {
				continue
			}
		case err != nil:
			errs = append(errs, err)
			continue
		case old:
		case u.TaskID != "" && s.opts.TaskDone != nil:
			done, err := s.opts.TaskDone(ctx, u.TaskID)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if !done {
				continue
			}
		default:
			continue
		}
		if err := s.Delete(ctx, name); err != nil {
			errs = append(errs, err)
			continue
		}
		deleted++
	}
	return deleted, errors.Join(errs...)
}
