package tasks

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// workDirPrefix names the folders a worker owns under the temporary
// directory: morag-worker-<pid>-<random>. Each holds a lock file that its
// worker keeps flock'ed for its whole life, so a folder whose lock can be
// taken belongs to a worker that is gone (killed, crashed, OOM-killed),
// however its pid has been reused since.
const (
	workDirPrefix = "morag-worker-"
	workDirLock   = ".lock"
)

// WorkDir is this worker's own temporary folder: every task's temporary
// directory, downloads and frames live under it.
type WorkDir struct {
	Path string
	lock *os.File
}

// NewWorkDir sweeps the folders of dead workers under base ("" is
// os.TempDir()) and makes this worker's own. Close removes it.
func NewWorkDir(base string, log zerolog.Logger) (*WorkDir, error) {
	if base == "" {
		base = os.TempDir()
	}
	SweepWorkDirs(base, log)
	dir, err := os.MkdirTemp(base, workDirPrefix+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return nil, fmt.Errorf("create the worker's temporary folder under %s: %w; set TMPDIR to a writable folder", base, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, workDirLock), os.O_CREATE|os.O_RDWR|unix.O_NOFOLLOW, 0o600)
	if err == nil {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("lock the worker's temporary folder %s: %w", dir, err)
	}
	return &WorkDir{Path: dir, lock: f}, nil
}

// Close removes the folder and releases its lock.
func (w *WorkDir) Close() error {
	err := os.RemoveAll(w.Path)
	w.lock.Close()
	return err
}

// SweepWorkDirs removes, under base, the folders of workers that are no
// longer running: named with workDirPrefix, real directories (not
// symlinks) owned by this user, whose lock file nobody holds. Folders it
// cannot judge are left alone and logged.
func SweepWorkDirs(base string, log zerolog.Logger) {
	entries, err := os.ReadDir(base)
	if err != nil {
		log.Warn().Err(err).Str("dir", base).Msg("cannot list the temporary folder to sweep stale worker folders")
		return
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), workDirPrefix) {
			continue
		}
		dir := filepath.Join(base, e.Name())
		st, err := os.Lstat(dir)
		if err != nil || !st.IsDir() {
			continue
		}
		if sys, ok := st.Sys().(*syscall.Stat_t); !ok || int(sys.Uid) != os.Getuid() {
			continue
		}
		if stale, err := unheld(filepath.Join(dir, workDirLock)); err != nil {
			log.Debug().Err(err).Str("dir", dir).Msg("not sweeping a worker folder whose lock cannot be checked")
			continue
		} else if !stale {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			log.Warn().Err(err).Str("dir", dir).Msg("could not remove a dead worker's temporary folder")
			continue
		}
		log.Info().Str("dir", dir).Msg("removed a dead worker's temporary folder")
	}
}

// unheld reports whether nobody holds the lock file (its worker is gone).
// A folder without a lock file is a worker that died between creating
// the folder and locking it: also stale.
func unheld(lockPath string) (bool, error) {
	f, err := os.OpenFile(lockPath, os.O_RDWR|unix.O_NOFOLLOW, 0)
	if errors.Is(err, os.ErrNotExist) {
		// Or a worker starting right now: only a folder that has been
		// lockless for a while is stale.
		st, serr := os.Lstat(filepath.Dir(lockPath))
		return serr == nil && time.Since(st.ModTime()) > time.Minute, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return true, nil
}
