package transcribe

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// modelServer serves ggml-fake.bin with Range support; the first cutAfter
// bytes of the first response are all that is sent before the connection
// is cut.
type modelServer struct {
	body     []byte
	cutAfter int
	requests atomic.Int32
	ranges   atomic.Int32
}

func (m *modelServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := m.requests.Add(1)
	if r.URL.Path != "/ggml-fake.bin" {
		http.NotFound(w, r)
		return
	}
	if r.Header.Get("Range") != "" {
		m.ranges.Add(1)
	}
	if n == 1 && m.cutAfter > 0 {
		w.Header().Set("Content-Length", strconv.Itoa(len(m.body)))
		w.WriteHeader(http.StatusOK)
		w.Write(m.body[:m.cutAfter])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // cut the connection mid-body
	}
	http.ServeContent(w, r, "ggml-fake.bin", time.Time{}, bytes.NewReader(m.body))
}

func fakeModel(size int) ([]byte, string) {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i * 7)
	}
	h := sha1.Sum(b)
	return b, hex.EncodeToString(h[:])
}

func testStore(t *testing.T, url, sha string) ModelStore {
	return ModelStore{Dir: t.TempDir(), BaseURL: url, Models: []ModelSpec{{Name: "fake", SHA1: sha}}, Log: zerolog.New(zerolog.NewTestWriter(t))}
}

func TestModelDownloadResumesAfterACut(t *testing.T) {
	body, sha := fakeModel(3 << 20)
	srv := &modelServer{body: body, cutAfter: 1 << 20}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	s := testStore(t, ts.URL, sha)

	if _, err := s.Resolve(context.Background(), "fake"); err == nil {
		t.Fatal("a cut download succeeded")
	} else if !strings.Contains(err.Error(), "resumes next time") {
		t.Errorf("error does not say it resumes: %v", err)
	}
	part := filepath.Join(s.Dir, "ggml-fake.bin.part")
	if st, err := os.Stat(part); err != nil || st.Size() != 1<<20 {
		t.Fatalf("partial file after the cut: %v %v", st, err)
	}
	p, err := s.Resolve(context.Background(), "ggml-fake.bin")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, body) {
		t.Error("resumed file differs")
	}
	if srv.ranges.Load() != 1 {
		t.Errorf("%d range requests, want 1 (resume)", srv.ranges.Load())
	}
	if _, err := os.Stat(part); !os.IsNotExist(err) {
		t.Error("the .part file is left")
	}
	// Once there, no request is made.
	before := srv.requests.Load()
	if _, err := s.Resolve(context.Background(), "fake"); err != nil || srv.requests.Load() != before {
		t.Errorf("second resolve: %v, %d requests", err, srv.requests.Load()-before)
	}
}

func TestModelDownloadRejectsACorruptFile(t *testing.T) {
	body, _ := fakeModel(1 << 20)
	ts := httptest.NewServer(&modelServer{body: body})
	defer ts.Close()
	s := testStore(t, ts.URL, strings.Repeat("0", 40))
	_, err := s.Resolve(context.Background(), "fake")
	if err == nil || !strings.Contains(err.Error(), "SHA-1") {
		t.Fatalf("corrupt download: %v", err)
	}
	entries, _ := os.ReadDir(s.Dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".bin") || strings.HasSuffix(e.Name(), ".part") {
			t.Errorf("%s left behind", e.Name())
		}
	}
}

func TestModelDownloadTwoFetchersAtOnce(t *testing.T) {
	body, sha := fakeModel(8 << 20)
	srv := &modelServer{body: body}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	s := testStore(t, ts.URL, sha)
	var wg sync.WaitGroup
	paths := make([]string, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Separate stores, as two worker processes would have.
			s2 := s
			paths[i], errs[i] = s2.Resolve(context.Background(), "fake")
		}()
	}
	wg.Wait()
	for i := range 2 {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if got, _ := os.ReadFile(paths[i]); !bytes.Equal(got, body) {
			t.Errorf("fetcher %d got a different file", i)
		}
	}
	if n := srv.requests.Load(); n != 1 {
		t.Errorf("%d downloads, want 1 (the file lock)", n)
	}
}

func TestModelOfflineErrorSaysWhatToDo(t *testing.T) {
	ts := httptest.NewServer(http.NotFoundHandler())
	url := ts.URL
	ts.Close() // nothing listens there now
	s := testStore(t, url, strings.Repeat("0", 40))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := s.Resolve(ctx, "fake")
	if err == nil || !strings.Contains(err.Error(), "-whisper-model /path/to/model.bin") {
		t.Fatalf("offline: %v", err)
	}
	if _, err := s.Resolve(ctx, "no-such-model"); err == nil || !strings.Contains(err.Error(), "fake") {
		t.Errorf("unknown name: %v", err)
	}
}

func TestPublishedModelsHaveSHA1s(t *testing.T) {
	s := ModelStore{}
	for _, name := range []string{"tiny", "base.en", "large-v3-turbo", "large-v3-turbo-q5_0", "small.en-tdrz"} {
		spec, ok := s.Spec(name)
		if !ok || len(spec.SHA1) != 40 {
			t.Errorf("%s: %+v %v", name, spec, ok)
		}
	}
	if spec, _ := s.Spec("small.en-tdrz"); !strings.Contains(s.url(spec), "tinydiarize") {
		t.Errorf("tdrz URL %s", s.url(spec))
	}
	t.Setenv("XDG_CACHE_HOME", "/x")
	if DefaultModelDir() != "/x/morag-gpu/models" {
		t.Error(DefaultModelDir())
	}
}
