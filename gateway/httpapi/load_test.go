package httpapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"morag-gpu/internal/testenv"
)

// TestLoadSlowClientsDoNotStarveOthers: 2 000 slow clients (half stuck in
// their headers, half trickling an upload body), spread over 40 loopback
// addresses, hold connections while a legitimate client's requests are
// still served with p99 under 100 ms; then the gateway cuts every slow
// client by itself within its timeouts. Loopback only, bounded in count
// (2 000 + 400 requests) and time (each phase has a deadline).
func TestLoadSlowClientsDoNotStarveOthers(t *testing.T) {
	const (
		slowClients = 2000
		slowIPs     = 40
		legitReqs   = 400
		legitConc   = 4
		cutAfter    = 10 * time.Second // header timeout and upload grace
	)
	raiseFileLimit(t, 3*slowClients+1000)
	r := testenv.StartRedis(t)
	s := startServed(t, r, func(c *Config) {
		c.MaxConns, c.MaxConnsPerIP = slowClients+500, slowClients/slowIPs+10
		c.ReadHeaderTimeout, c.UploadGrace = cutAfter, cutAfter
	})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	defer func() { // the slow clients stop with the test, whatever happens
		cancel()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	for i := 0; i < slowClients; i++ {
		c, err := s.dialFrom(fmt.Sprintf("127.0.3.%d", 1+i%slowIPs))
		if err != nil {
			t.Fatalf("slow client %d: %v", i, err)
		}
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		var start string
		if i%2 == 0 {
			start = "GET /health HTTP/1.1\r\nHost: x\r\n"
		} else {
			start = "POST /process/file HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: 10000000\r\n\r\n" +
				"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.bin\"\r\n\r\n"
		}
		wg.Add(1)
		go func() { // owner: this test; ends when the server cuts c or ctx ends
			defer wg.Done()
			slowClient(ctx, c, start, i%2 == 0)
		}()
	}
	eventually(t, 30*time.Second, fmt.Sprintf("%d slow connections held", slowClients), func() bool {
		return s.conns.Open() >= slowClients
	})

	// The legitimate client: keep-alive, a few at a time.
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: legitConc}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	lat := make([]time.Duration, 0, legitReqs)
	var latMu sync.Mutex
	var failed []string
	var lwg sync.WaitGroup
	body := []byte(`{"url":"https://example.com/doc"}`)
	for w := 0; w < legitConc; w++ {
		lwg.Add(1)
		go func() { // owner: this test; bounded by legitReqs and hc.Timeout
			defer lwg.Done()
			for i := 0; i < legitReqs/legitConc; i++ {
				start := time.Now()
				resp, err := hc.Post(s.url+"/api/v1/ingest/url", "application/json", bytes.NewReader(body))
				d := time.Since(start)
				latMu.Lock()
				if err != nil {
					failed = append(failed, err.Error())
				} else {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						failed = append(failed, resp.Status)
					}
					lat = append(lat, d)
				}
				latMu.Unlock()
			}
		}()
	}
	lwg.Wait()
	held := s.conns.Open()
	if len(failed) > 0 {
		t.Fatalf("%d legitimate requests failed while slow clients held connections; first: %s", len(failed), failed[0])
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	t.Logf("%d legitimate requests with %d slow clients holding connections (%d open): p50 %s, p99 %s, max %s",
		len(lat), slowClients, held, p50, p99, lat[len(lat)-1])
	if held < slowClients {
		t.Errorf("only %d connections open after the load: the slow clients did not hold theirs during it", held)
	}
	if p99 > 100*time.Millisecond {
		t.Errorf("p99 %s with %d slow clients, want < 100 ms", p99, slowClients)
	}
	// The gateway cuts them all by itself.
	hc.CloseIdleConnections()
	eventually(t, cutAfter+20*time.Second, "every slow client cut by the gateway", func() bool {
		return s.conns.Open() == 0
	})
}

// slowClient sends start, then one byte a second (a header line that never
// ends, or a body far below the minimum rate) until the server closes the
// connection or ctx ends.
func slowClient(ctx context.Context, c net.Conn, start string, header bool) {
	if _, err := io.WriteString(c, start); err != nil {
		return
	}
	buf := make([]byte, 512)
	for ctx.Err() == nil {
		b := "x"
		if header {
			b = "X"
		}
		if _, err := io.WriteString(c, b); err != nil {
			return
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(buf); err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return // the server answered and closed, or reset
			}
		}
	}
}

// raiseFileLimit lifts RLIMIT_NOFILE to at least want (up to the hard
// limit) for this process, or skips saying why.
func raiseFileLimit(t *testing.T, want uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("SKIP: cannot read RLIMIT_NOFILE: %v", err)
	}
	if lim.Cur >= want {
		return
	}
	if lim.Max < want {
		t.Skipf("SKIP: the load test needs %d file descriptors, the hard limit is %d; raise it (ulimit -Hn)", want, lim.Max)
	}
	lim.Cur = want
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("SKIP: cannot raise RLIMIT_NOFILE to %d: %v", want, err)
	}
}
