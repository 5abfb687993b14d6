package remote

import (
	"context"
	"errors"
	"sync"
	"time"
)

// The worker's half of lease fencing (HeaderLeaseUntil, see wire.go): it
// keeps, per held tag, when its lease was last refreshed on the gateway's
// clock, and tells the gateway until when a request naming those tags may
// still be applied.

// clockSampleTTL is how long the best clock sample is kept before a
// newer one, however slow its round trip, replaces it (clocks drift).
const clockSampleTTL = 5 * time.Minute

// gatewayClock estimates the gateway's clock from the HeaderTime of its
// answers: the offset of the answer with the shortest round trip recently.
type gatewayClock struct {
	mu     sync.Mutex
	ok     bool
	offset time.Duration // gateway minus local, at the round trip's midpoint
	err    time.Duration // how far off offset may be: half the round trip
	at     time.Time
}

func (g *gatewayClock) sample(sent, recv time.Time, gatewayMS int64) {
	rtt := recv.Sub(sent)
	if rtt < 0 {
		return
	}
	// The header has millisecond resolution, truncated.
	err := rtt/2 + time.Millisecond
	off := time.UnixMilli(gatewayMS).Sub(sent.Add(rtt / 2))
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ok && err >= g.err && recv.Sub(g.at) < clockSampleTTL {
		return
	}
	g.ok, g.offset, g.err, g.at = true, off, err, recv
}

// earliest is the earliest the gateway's clock can read at local time t;
// false while no answer has said.
func (g *gatewayClock) earliest(t time.Time) (time.Time, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.ok {
		return time.Time{}, false
	}
	return t.Add(g.offset - g.err), true
}

// refusedUntil is the bound sent for a tag with no lease record (settled,
// or given up as lapsed): the gateway refuses the request.
var refusedUntil = time.UnixMilli(1)

// leaseUntil is HeaderLeaseUntil for a request naming tags: the earliest
// lease bound among them, each its last refresh plus the visibility
// timeout less a tenth of it (other restorers' clocks). Zero, meaning no
// header, for no tags or while the gateway's clock is unknown (a gateway
// that does not send it).
func (c *Client) leaseUntil(tags ...string) time.Time {
	if len(tags) == 0 {
		return time.Time{}
	}
	if _, ok := c.clock.earliest(time.Now()); !ok {
		return time.Time{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	vt := time.Duration(c.info.VisibilityTimeoutS * float64(time.Second))
	if vt <= 0 {
		return time.Time{}
	}
	var until time.Time
	for _, t := range tags {
		at, ok := c.leases[t]
		if !ok {
			return refusedUntil
		}
		if u := at.Add(vt - vt/10); until.IsZero() || u.Before(until) {
			until = u
		}
	}
	return until
}

// refreshed records that the gateway refreshed tags' leases in answer to
// a request sent no earlier than at (gateway clock).
func (c *Client) refreshed(at time.Time, tags []string) {
	if at.IsZero() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range tags {
		if at.After(c.leases[t]) {
			c.leases[t] = at
		}
	}
}

// lapsed splits tags into those whose lease bound is still ahead and
// those whose bound has passed (the gateway would refuse them: another
// worker may hold them by now).
func (c *Client) lapsed(tags []string) (live, gone []string) {
	now, ok := c.clock.earliest(time.Now())
	if !ok {
		return tags, nil
	}
	for _, t := range tags {
		if u := c.leaseUntil(t); u.IsZero() || u.After(now) { // zero: not fenced
			live = append(live, t)
		} else {
			gone = append(gone, t)
		}
	}
	return live, gone
}

// fenced is do for a request that settles or reads the held messages
// tags, with their lease bound. A refusal for a lapsed lease forgets
// them: they are no longer this worker's.
func (c *Client) fenced(ctx context.Context, path string, tags []string, req, rep any) error {
	return c.fencedUntil(ctx, path, c.leaseUntil(tags...), tags, req, rep)
}

// fencedUntil is fenced with the bound given (a fetch's confirmation is
// bound by its confirm window, not by a lease the tags do not have yet).
func (c *Client) fencedUntil(ctx context.Context, path string, until time.Time, tags []string, req, rep any) error {
	err := c.do(ctx, path, until, req, rep)
	var refused *Refused
	if errors.As(err, &refused) && refused.Code == codeLeaseExpired {
		c.forget(tags...)
	}
	return err
}
