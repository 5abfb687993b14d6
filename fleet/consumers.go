package fleet

import (
	"context"
	"slices"
	"sort"
	"strings"
	"time"
)

// confirmEvery bounds how often Consumers(confirm=true) broadcasts: a burst
// of requests for a dead queue costs one broadcast, not one each.
const confirmEvery = time.Second

// Consumers lists the live workers consuming queue, sorted by hostname.
// When a live worker's queues or capabilities are not known yet (it
// appeared since the last refresh) it asks before answering, so a worker
// that just started is not missed. With confirm, an empty answer is checked
// once more against fresh active_queues replies before it is believed:
// callers pass it when "nobody" would make them fail a task or a request.
// The error is the broadcast's; the answer then rests on what was known.
func (d *Directory) Consumers(ctx context.Context, queue string, confirm bool) ([]Worker, error) {
	list, unknown := d.consumers(queue)
	var err error
	if unknown || (confirm && len(list) == 0 && d.refreshDue()) {
		err = d.refreshShared(ctx)
		list, _ = d.consumers(queue)
	}
	return list, err
}

// QueueAlive implements auth.Liveness: some live worker consumes queue.
func (d *Directory) QueueAlive(ctx context.Context, queue string) (bool, error) {
	list, err := d.Consumers(ctx, queue, false)
	return len(list) > 0, err
}

// CanTranscribe implements auth.Liveness: some live worker consuming queue
// can finish a task that needs a transcript. When none can, why lists each
// live consumer and what it lacks.
func (d *Directory) CanTranscribe(ctx context.Context, queue string) (ok bool, why string, err error) {
	list, err := d.Consumers(ctx, queue, false)
	reasons := make([]string, 0, len(list))
	for _, w := range list {
		can, reason := w.CanTranscribe()
		if can {
			return true, "", err
		}
		reasons = append(reasons, w.Hostname+": "+reason)
	}
	return false, strings.Join(reasons, "; "), err
}

// refreshCall is one Refresh that concurrent callers share.
type refreshCall struct {
	done chan struct{}
	err  error
}

// refreshShared runs Refresh once for every caller that asks while it
// runs: a burst of requests costs one broadcast, not one each.
func (d *Directory) refreshShared(ctx context.Context) error {
	d.mu.Lock()
	if call := d.inflight; call != nil {
		d.mu.Unlock()
		select {
		case <-call.done:
			return call.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	call := &refreshCall{done: make(chan struct{})}
	d.inflight = call
	d.mu.Unlock()
	call.err = d.Refresh(ctx)
	d.mu.Lock()
	d.inflight = nil
	d.mu.Unlock()
	close(call.done)
	return call.err
}

func (d *Directory) refreshDue() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.now().Sub(d.lastRefresh) >= confirmEvery
}

// consumers reports the live workers known to consume queue, and whether
// some live worker's queues, or a Go consumer's capabilities, are unknown.
func (d *Directory) consumers(queue string) (list []Worker, unknown bool) {
	cutoff := d.now().Add(-d.opts.AliveWindow)
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, w := range d.workers {
		if w.LastSeen.Before(cutoff) {
			continue
		}
		if !w.queuesKnown {
			unknown = true
			continue
		}
		if !slices.Contains(w.Queues, queue) {
			continue
		}
		if !w.statsKnown && (w.SWIdent == "" || w.Implementation == "go") {
			unknown = true // which kind of worker, or what it can do
		}
		c := w.Worker
		c.Queues = slices.Clone(w.Queues)
		c.Alive = true
		list = append(list, c)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Hostname < list[j].Hostname })
	return list, unknown
}
