package files

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"morag-gpu/internal/testenv"
	"morag-gpu/protocol"
)

func newStore(t *testing.T, opts Options) (*Store, *testenv.Redis) {
	t.Helper()
	r := testenv.StartRedis(t)
	pool, err := protocol.NewPool(r.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.Secret == nil {
		opts.Secret, err = LoadSecret(context.Background(), pool, "")
		if err != nil {
			t.Fatal(err)
		}
	}
	s, err := New(pool, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s, r
}

func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestSaveStreamsWithSHA256AndOwner(t *testing.T) {
	s, _ := newStore(t, Options{MaxSize: 1 << 20})
	ctx := context.Background()
	data := bytes.Repeat([]byte("morag"), 10000)
	u, err := s.Save(ctx, "alice", "../../evil/report.pdf", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if u.SHA256 != hex.EncodeToString(sum[:]) || u.Size != int64(len(data)) || u.UserID != "alice" {
		t.Fatalf("upload = %+v", u)
	}
	if !strings.HasSuffix(u.ID, ".pdf") || u.Name != "report.pdf" {
		t.Fatalf("id %q name %q: want a .pdf id and the base name", u.ID, u.Name)
	}
	got, err := s.Get(ctx, u.ID)
	if err != nil || got.UserID != "alice" || got.SHA256 != u.SHA256 {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	onDisk, _ := os.ReadFile(s.Path(u))
	if !bytes.Equal(onDisk, data) {
		t.Fatal("stored bytes differ")
	}
	if err := s.Delete(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, u.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after Delete: %v", err)
	}
	if n := dirEntries(t, s.Dir()); len(n) != 0 {
		t.Fatalf("upload dir not empty: %v", n)
	}
}

func TestOversizeUploadLeavesNothing(t *testing.T) {
	s, _ := newStore(t, Options{MaxSize: 1000})
	_, err := s.Save(context.Background(), "alice", "big.bin", bytes.NewReader(make([]byte, 1001)))
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	if n := dirEntries(t, s.Dir()); len(n) != 0 {
		t.Fatalf("upload dir not empty: %v", n)
	}
	if _, err := s.Save(context.Background(), "alice", "ok.bin", bytes.NewReader(make([]byte, 1000))); err != nil {
		t.Fatalf("exactly the limit: %v", err)
	}
}

func TestResolveRefusesEscapes(t *testing.T) {
	s, _ := newStore(t, Options{})
	ctx := context.Background()
	u, err := s.Save(ctx, "alice", "a.txt", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Resolve(ctx, s.Path(u)); err != nil || got.ID != u.ID {
		t.Fatalf("own path: %+v %v", got, err)
	}
	outside := filepath.Join(t.TempDir(), "secret.txt")
	os.WriteFile(outside, []byte("secret"), 0o600)
	link := filepath.Join(s.Dir(), strings.Repeat("a", 32)+".txt")
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{
		s.Dir() + "/../../../etc/passwd",
		"/etc/passwd",
		"../" + filepath.Base(outside),
		outside,
		link, // a symlink inside the dir pointing outside
		s.Dir(),
		"/tmp/../etc/passwd",
	} {
		if _, err := s.Resolve(ctx, p); !errors.Is(err, ErrOutside) && !errors.Is(err, ErrNotFound) {
			t.Errorf("Resolve(%q) = %v, want refusal", p, err)
		} else if err == nil {
			t.Errorf("Resolve(%q) succeeded", p)
		}
	}
	if _, err := s.Resolve(ctx, link); !errors.Is(err, ErrOutside) {
		t.Errorf("symlink escape: %v, want ErrOutside", err)
	}
}

// signedParts splits a signed URL into its expiry, token and id.
func signedParts(t *testing.T, raw string) (host, exp, tok, id string) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil || u.RawQuery != "" || !strings.HasPrefix(u.Path, SignedPrefix) {
		t.Fatalf("signed url %q: want %s<expires>/<token>/<id> and no query", raw, SignedPrefix)
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, SignedPrefix), "/")
	if len(parts) != 3 {
		t.Fatalf("signed url %q: %d path elements after the prefix", raw, len(parts))
	}
	return u.Host, parts[0], parts[1], parts[2]
}

func TestSignedURL(t *testing.T) {
	s, _ := newStore(t, Options{})
	id := strings.Repeat("ab", 16) + "_talk.wav"
	raw := s.SignedURL("http://gw:8000/", id, time.Hour)
	host, expires, token, gotID := signedParts(t, raw)
	if host != "gw:8000" || gotID != id || !strings.HasSuffix(raw, "_talk.wav") {
		t.Fatalf("url %q", raw)
	}
	if err := s.Verify(id, expires, token); err != nil {
		t.Fatalf("valid URL refused: %v", err)
	}
	tok := []byte(token)
	tok[3] ^= 1
	if err := s.Verify(id, expires, string(tok)); !errors.Is(err, ErrBadSignature) {
		t.Errorf("tampered token: %v", err)
	}
	exp, _ := strconv.ParseInt(expires, 10, 64)
	if err := s.Verify(id, strconv.FormatInt(exp+3600, 10), token); !errors.Is(err, ErrBadSignature) {
		t.Errorf("extended expiry: %v", err)
	}
	if err := s.Verify(strings.Repeat("cd", 16), expires, token); !errors.Is(err, ErrBadSignature) {
		t.Errorf("other id: %v", err)
	}
	_, oexp, otok, _ := signedParts(t, s.SignedURL("http://gw", id, -time.Minute))
	if err := s.Verify(id, oexp, otok); !errors.Is(err, ErrExpired) {
		t.Errorf("expired URL: %v", err)
	}
}

// TestStoredNameKeepsTheClientsName: the id (file name, URL element) is
// <32 hex>_<name sanitized as upstream's upload handler does>, so tasks see
// the original name and extension, and every id is a valid id.
func TestStoredNameKeepsTheClientsName(t *testing.T) {
	for in, want := range map[string]string{
		"report.pdf":           "report.pdf",
		"../../evil/talk.MP4":  "talk.MP4",
		`C:\Users\me\clip.mov`: "clip.mov",
		"my talk (final).mp3":  "my_talk__final_.mp3",
		"  .hidden. ":          "hidden",
		"Straße.wav":           "Stra_e.wav",
		"":                     "uploaded_file",
		"..":                   "uploaded_file",
		"a:b?.txt":             "a_b_.txt",
	} {
		got := storedName(in)
		if got != want {
			t.Errorf("storedName(%q) = %q, want %q", in, got, want)
		}
		if id := strings.Repeat("0f", 16) + "_" + got; !idPattern.MatchString(id) {
			t.Errorf("id %q for %q does not match idPattern", id, in)
		}
	}
	long := storedName(strings.Repeat("x", 300) + ".flac")
	if len(long) != 160 || !strings.HasSuffix(long, ".flac") {
		t.Errorf("long name: %d %q", len(long), long)
	}
}

func TestLoadSecretSharedThroughRedis(t *testing.T) {
	r := testenv.StartRedis(t)
	pool, _ := protocol.NewPool(r.URL())
	defer pool.Close()
	a, err := LoadSecret(context.Background(), pool, "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadSecret(context.Background(), pool, "")
	if err != nil || !bytes.Equal(a, b) || len(a) < 32 {
		t.Fatalf("two gateways got different secrets: %q %q %v", a, b, err)
	}
	if _, err := LoadSecret(context.Background(), pool, "short"); err == nil {
		t.Fatal("short configured secret accepted")
	}
}

func TestSweepDeletesOldAndFinished(t *testing.T) {
	done := map[string]bool{"t-done": true}
	s, _ := newStore(t, Options{TaskDone: func(_ context.Context, id string) (bool, error) { return done[id], nil }})
	ctx := context.Background()
	keep, _ := s.Save(ctx, "alice", "keep.txt", strings.NewReader("k"))
	running, _ := s.Save(ctx, "alice", "run.txt", strings.NewReader("r"))
	s.AttachTask(ctx, running, "t-running")
	finished, _ := s.Save(ctx, "alice", "fin.txt", strings.NewReader("f"))
	s.AttachTask(ctx, finished, "t-done")
	old, _ := s.Save(ctx, "alice", "old.txt", strings.NewReader("o"))
	past := time.Now().Add(-25 * time.Hour)
	os.Chtimes(s.Path(old), past, past)
	n, err := s.Sweep(ctx)
	if err != nil || n != 2 {
		t.Fatalf("Sweep = %d, %v; want 2 deleted", n, err)
	}
	for _, u := range []*Upload{keep, running} {
		if _, err := s.Get(ctx, u.ID); err != nil {
			t.Errorf("%s deleted: %v", u.Name, err)
		}
	}
	for _, u := range []*Upload{finished, old} {
		if _, err := os.Stat(s.Path(u)); !os.IsNotExist(err) {
			t.Errorf("%s kept", u.Name)
		}
	}
}
