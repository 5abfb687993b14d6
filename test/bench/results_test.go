package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

// outcome is a ready result as the reader saw it.
type outcome struct {
	at     time.Time
	status string
	raw    []byte
}

// resultReader is the one result reader every row shares, whichever worker
// stores the results: it PSUBSCRIBEs celery-task-meta-* (Celery's Redis
// backend PUBLISHes every stored meta on its key's name, and so does the Go
// backend) and hands each ready meta to whoever expects that task id. One
// connection for all tasks, so the reader costs the same for Go and Python
// consumers and is not what is measured.
type resultReader struct {
	conn redis.Conn
	mu   sync.Mutex
	want map[string]chan outcome
	done chan struct{}
	err  error // why the receive loop ended; read after done
}

func newResultReader(ctx context.Context, addr string) (*resultReader, error) {
	c, err := redis.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("result reader: dial redis: %w", err)
	}
	psc := redis.PubSubConn{Conn: c}
	if err := psc.PSubscribe("celery-task-meta-*"); err != nil {
		c.Close()
		return nil, fmt.Errorf("result reader: psubscribe: %w", err)
	}
	// Wait for the subscription to be in place before anyone publishes.
	switch m := psc.ReceiveWithTimeout(10 * time.Second).(type) {
	case redis.Subscription:
	case error:
		c.Close()
		return nil, fmt.Errorf("result reader: psubscribe confirmation: %w", m)
	default:
		c.Close()
		return nil, fmt.Errorf("result reader: unexpected %T before the psubscribe confirmation", m)
	}
	r := &resultReader{conn: c, want: map[string]chan outcome{}, done: make(chan struct{})}
	go r.loop(psc)
	return r, nil
}

func (r *resultReader) loop(psc redis.PubSubConn) {
	defer close(r.done)
	for {
		switch m := psc.ReceiveWithTimeout(0).(type) {
		case redis.Message:
			now := time.Now()
			// The status is read in place and the id taken from the
			// channel (the key's name), so a result costs the reader no
			// decoding and the workers it measures less CPU.
			status, ok := quickStatus(m.Data)
			if !ok {
				var meta struct {
					Status string `json:"status"`
				}
				if json.Unmarshal(m.Data, &meta) != nil {
					continue
				}
				status = []byte(meta.Status)
			}
			if string(status) != "SUCCESS" && string(status) != "FAILURE" && string(status) != "REVOKED" {
				continue // STARTED, RETRY
			}
			id := strings.TrimPrefix(m.Channel, "celery-task-meta-")
			r.mu.Lock()
			ch := r.want[id]
			delete(r.want, id)
			r.mu.Unlock()
			if ch != nil {
				ch <- outcome{at: now, status: string(status), raw: m.Data}
			}
		case error:
			r.err = m
			return
		}
	}
}

// quickStatus reads the status of a result meta that starts with it, as
// both Go's and Celery's do ({"status": "STARTED", ...}); ok is false for
// any other layout, which the caller then decodes in full.
func quickStatus(data []byte) (status []byte, ok bool) {
	rest, found := bytes.CutPrefix(data, []byte(`{"status":`))
	if !found {
		return nil, false
	}
	rest = bytes.TrimLeft(rest, " ")
	if len(rest) == 0 || rest[0] != '"' {
		return nil, false
	}
	end := bytes.IndexByte(rest[1:], '"')
	if end < 0 {
		return nil, false
	}
	return rest[1 : 1+end], true
}

// expect registers id before its task is sent; the channel receives the
// task's ready meta once.
func (r *resultReader) expect(id string) <-chan outcome {
	ch := make(chan outcome, 1)
	r.mu.Lock()
	r.want[id] = ch
	r.mu.Unlock()
	return ch
}

// forget drops ids nobody waits for any more.
func (r *resultReader) forget(ids ...string) {
	r.mu.Lock()
	for _, id := range ids {
		delete(r.want, id)
	}
	r.mu.Unlock()
}

func (r *resultReader) close() {
	r.conn.Close()
	<-r.done
}

// waitOne waits for one expected outcome.
func waitOne(ctx context.Context, ch <-chan outcome) (outcome, error) {
	select {
	case o := <-ch:
		return o, nil
	case <-ctx.Done():
		return outcome{}, ctx.Err()
	}
}

// newTaskID is a uuid4 string, made here so that ids can be registered
// with the reader before the task is sent.
func newTaskID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
