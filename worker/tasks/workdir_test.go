package tasks

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// A worker's folder is removed at the next start only when its worker is
// gone (its lock is free); live workers' folders, symlinks and other
// folders are left alone.
func TestWorkDirSweep(t *testing.T) {
	base := t.TempDir()
	log := zerolog.Nop()
	live, err := NewWorkDir(base, log) // another worker, still running
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	mk := func(name string, lock bool, age time.Duration) string {
		d := filepath.Join(base, name)
		if err := os.MkdirAll(filepath.Join(d, "morag-task-1"), 0o700); err != nil {
			t.Fatal(err)
		}
		if lock {
			if err := os.WriteFile(filepath.Join(d, workDirLock), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		old := time.Now().Add(-age)
		os.Chtimes(d, old, old)
		return d
	}
	dead := mk("morag-worker-999999-dead", true, 0)             // SIGKILLed: lock file, nobody holds it
	unlocked := mk("morag-worker-999998-old", false, time.Hour) // died before locking
	starting := mk("morag-worker-999997-new", false, 0)         // may be locking right now
	other := mk("not-ours", false, time.Hour)
	target := t.TempDir()
	link := filepath.Join(base, "morag-worker-link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}

	w, err := NewWorkDir(base, log)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dead, unlocked} {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("%s (its worker is gone) was not swept", filepath.Base(d))
		}
	}
	for _, d := range []string{live.Path, starting, other, link, target, w.Path} {
		if _, err := os.Lstat(d); err != nil {
			t.Errorf("%s was removed: %v", filepath.Base(d), err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(w.Path); err == nil {
		t.Error("Close left the folder")
	}
}
