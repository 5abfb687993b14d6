package tasks

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

func testDownloader(max int64) *downloader {
	d := newDownloader(false, max)
	d.backoff = 10 * time.Millisecond
	d.idle = 5 * time.Second
	return d
}

func TestDownloadResumesWithRangeAfterDrop(t *testing.T) {
	needFixtures(t)
	srv := newFileServer(t, fixtures.video, "clip.mp4")
	srv.dropOnce = true
	dir := t.TempDir()

	var last int64
	got, err := testDownloader(0).fetch(testCtx(t), fetchRequest{
		URL: srv.URL + "/api/v1/files/abc?token=secret", Bearer: "k3y", Dir: dir,
		Progress: func(done, total int64) { last = done },
	})
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	if !got.Verified || got.SHA256 != srv.sha {
		t.Errorf("sha256 verified=%v sum=%s, want verified %s", got.Verified, got.SHA256, srv.sha)
	}
	if got.Resumes != 1 {
		t.Errorf("resumes = %d, want 1", got.Resumes)
	}
	if got.Name != "clip.mp4" || !strings.HasSuffix(got.Path, ".mp4") {
		t.Errorf("name %q path %q: want the Content-Disposition name and its extension", got.Name, got.Path)
	}
	data, err := os.ReadFile(got.Path)
	if err != nil || !bytes.Equal(data, srv.data) {
		t.Fatalf("downloaded file differs from the served one (err %v, %d vs %d bytes)", err, len(data), len(srv.data))
	}
	if last != int64(len(srv.data)) {
		t.Errorf("last progress %d, want %d", last, len(srv.data))
	}
	reqs := srv.requestLog()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2 (the dropped one and one resume)", len(reqs))
	}
	want := fmt.Sprintf("bytes=%d-", len(srv.data)/2)
	if r := reqs[1].Header.Get("Range"); r != want {
		t.Errorf("resume asked Range %q, want %q", r, want)
	}
	if r := reqs[1].Header.Get("If-Range"); r != `"v1"` {
		t.Errorf("resume sent If-Range %q, want the ETag", r)
	}
	for i, r := range reqs {
		if a := r.Header.Get("Authorization"); a != "Bearer k3y" {
			t.Errorf("request %d Authorization %q, want the Bearer key", i, a)
		}
	}
}

func TestDownloadChecksumMismatchLeavesNothing(t *testing.T) {
	needFixtures(t)
	srv := newFileServer(t, fixtures.audio, "tone.mp3")
	srv.sha = strings.Repeat("ab", 32)
	dir := t.TempDir()
	_, err := testDownloader(0).fetch(testCtx(t), fetchRequest{URL: srv.URL + "/f", Dir: dir})
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("err = %v, want ErrChecksum", err)
	}
	if !strings.Contains(err.Error(), srv.sha) || !strings.Contains(err.Error(), "X-Content-SHA256") {
		t.Errorf("error %q should name the header and the expected sum", err)
	}
	assertEmptyDir(t, dir)
}

func TestDownloadSizeLimit(t *testing.T) {
	needFixtures(t)
	srv := newFileServer(t, fixtures.audio, "tone.mp3")
	dir := t.TempDir()
	limit := int64(len(srv.data) / 2)
	_, err := testDownloader(limit).fetch(testCtx(t), fetchRequest{URL: srv.URL + "/f", Dir: dir})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("with Content-Length: err = %v, want ErrTooLarge", err)
	}
	if n := len(srv.requestLog()); n != 1 {
		t.Errorf("%d requests: a size limit is not worth a retry", n)
	}
	assertEmptyDir(t, dir)

	// Without a Content-Length the limit is enforced while reading.
	chunked := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < 64; i++ {
			w.Write(bytes.Repeat([]byte{'x'}, 1024))
			w.(http.Flusher).Flush()
		}
	}))
	defer chunked.Close()
	_, err = testDownloader(10*1024).fetch(testCtx(t), fetchRequest{URL: chunked.URL + "/stream", Dir: dir})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("chunked: err = %v, want ErrTooLarge", err)
	}
	assertEmptyDir(t, dir)
}

func TestDownloadHTTPErrorsAreClear(t *testing.T) {
	needFixtures(t)
	srv := newFileServer(t, fixtures.audio, "tone.mp3")
	dir := t.TempDir()
	for _, tc := range []struct {
		status int
		bearer string
		want   string
		tries  int
	}{
		{http.StatusUnauthorized, "", "set MORAG_API_KEY", 1},
		{http.StatusForbidden, "k", "owner", 1},
		{http.StatusNotFound, "", "not there", 1},
		{http.StatusServiceUnavailable, "", "gave up", 5},
	} {
		srv.mu.Lock()
		srv.status, srv.requests = tc.status, nil
		srv.mu.Unlock()
		_, err := testDownloader(0).fetch(testCtx(t), fetchRequest{URL: srv.URL + "/f?token=s3cret", Bearer: tc.bearer, Dir: dir})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("HTTP %d: err = %v, want it to say %q", tc.status, err, tc.want)
		} else if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("HTTP %d: error %q leaks the signed URL's token", tc.status, err)
		}
		if n := len(srv.requestLog()); n != tc.tries {
			t.Errorf("HTTP %d: %d requests, want %d", tc.status, n, tc.tries)
		}
		assertEmptyDir(t, dir)
	}
}

func TestDownloadRestartsWhenRangeIgnored(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 10000)
	first := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Never honours Range: every answer is the whole file.
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.WriteHeader(http.StatusOK)
		if first {
			first = false
			w.Write(data[:1000])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		w.Write(data)
	}))
	defer srv.Close()
	got, err := testDownloader(0).fetch(testCtx(t), fetchRequest{URL: srv.URL + "/x.bin", Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(got.Path)
	if !bytes.Equal(b, data) {
		t.Fatalf("file is %d bytes, want the %d served (a 200 to a Range request must start over)", len(b), len(data))
	}
}

func TestParseSHA256AndContentRange(t *testing.T) {
	hexSum := strings.Repeat("0f", 32)
	for _, v := range []string{hexSum, strings.ToUpper(hexSum), "sha256=" + hexSum, "Dw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8="} {
		got, err := parseSHA256(v)
		if err != nil || got != hexSum {
			t.Errorf("parseSHA256(%q) = %q, %v", v, got, err)
		}
	}
	if _, err := parseSHA256("nope"); err == nil {
		t.Error("parseSHA256 accepted garbage")
	}
	start, size, ok := parseContentRange("bytes 100-199/200")
	if !ok || start != 100 || size != 200 {
		t.Errorf("parseContentRange = %d %d %v", start, size, ok)
	}
	if _, size, ok := parseContentRange("bytes 0-9/*"); !ok || size != -1 {
		t.Errorf("unknown size: %d %v", size, ok)
	}
	if _, _, ok := parseContentRange("items 1-2/3"); ok {
		t.Error("parseContentRange accepted a non-bytes unit")
	}
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("left behind: %s", e.Name())
	}
}

// TestRedactURLHidesSignatures: logs show neither a query token nor the
// expiry and signature the gateway puts in a signed URL's path.
func TestRedactURLHidesSignatures(t *testing.T) {
	for in, want := range map[string]string{
		"http://gw:8000/api/v1/files/s/1796034049/c2VjcmV0/0f0f_talk.mp4": "http://gw:8000/api/v1/files/s/redacted/redacted/0f0f_talk.mp4",
		"http://u:p@gw/api/v1/files/abc.mp4?expires=1&token=secret":       "http://gw/api/v1/files/abc.mp4?…",
		"https://example.com/a/b.pdf":                                     "https://example.com/a/b.pdf",
	} {
		u, _ := url.Parse(in)
		if got := redactURL(u); got != want || strings.Contains(got, "c2VjcmV0") || strings.Contains(got, "secret") {
			t.Errorf("redactURL(%s) = %s, want %s", in, got, want)
		}
	}
}
