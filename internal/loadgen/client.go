package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// rawClient is one client of a run: its own keep-alive connection, on which it writes the request serialized once up front and
// reads each response with net/http's parser. net/http's Transport spends
// two goroutines and several channel hand-offs per connection and request;
// on a 2-core machine that was ~47 µs of CPU per request, which the server
// under test then did not get (wrk and h2load are written in C for the
// same reason). This client costs a write, a read and the parse.
type rawClient struct {
	addr    string
	request []byte // the whole request, headers and body
	timeout time.Duration
	conn    net.Conn
	br      *bufio.Reader
}

// serialize writes cfg's request as it goes on the wire.
func serialize(cfg Config) ([]byte, string, error) {
	req, err := http.NewRequest(cfg.Method, cfg.URL, bytes.NewReader(cfg.Body))
	if err != nil {
		return nil, "", fmt.Errorf("loadgen: %w", err)
	}
	for k, v := range cfg.Header {
		req.Header[k] = v
	}
	var buf bytes.Buffer
	if err := req.Write(&buf); err != nil {
		return nil, "", fmt.Errorf("loadgen: serialize the request: %w", err)
	}
	host := req.URL.Host
	if req.URL.Port() == "" {
		host = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	return buf.Bytes(), host, nil
}

// do sends the request once and returns the response's status, with its
// body read and discarded so that the connection can carry the next one.
// ctx ending cuts a request short.
func (c *rawClient) do(ctx context.Context) (int, error) {
	if c.conn == nil {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", c.addr)
		if err != nil {
			return 0, err
		}
		c.conn = conn
		c.br = bufio.NewReaderSize(conn, 16<<10)
	}
	conn := c.conn
	if err := conn.SetDeadline(time.Now().Add(c.timeout)); err != nil {
		c.close()
		return 0, err
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	status, keep, err := c.roundTrip()
	if err != nil || !keep {
		c.close()
	}
	if err != nil && ctx.Err() != nil {
		return 0, ctx.Err()
	}
	return status, err
}

func (c *rawClient) roundTrip() (status int, keep bool, err error) {
	if _, err := c.conn.Write(c.request); err != nil {
		return 0, false, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return 0, false, err
	}
	n, err := io.Copy(io.Discard, io.LimitReader(resp.Body, maxBodyRead+1))
	resp.Body.Close()
	if err != nil {
		return 0, false, fmt.Errorf("reading response: %w", err)
	}
	// A body over the limit is left unread: the connection cannot carry
	// another request.
	return resp.StatusCode, !resp.Close && n <= maxBodyRead, nil
}

func (c *rawClient) close() {
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn, c.br = nil, nil
	}
}
