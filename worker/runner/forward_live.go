package runner

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// deadEndTimeout bounds the liveness check before a forward: the answer is
// usually cached, and a confirming active_queues broadcast takes a second.
const deadEndTimeout = 5 * time.Second

// deadEnd returns why fe.Queue is a dead end for r (no live worker other
// than this one consumes it, or none that fe.Accept accepts), as the
// task's error message, or "" when a forward may go ahead. Without
// Config.LiveConsumers, and when liveness cannot be determined (Redis
// trouble), it never objects: forwarding is then as good as it was before
// the check existed.
func (s *Server) deadEnd(ctx context.Context, r *request, fe *ForwardError) string {
	if s.cfg.LiveConsumers == nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, deadEndTimeout)
	defer cancel()
	list, err := s.cfg.LiveConsumers(ctx, fe.Queue)
	var refused []string
	for _, w := range list {
		if w.Hostname == s.cfg.Hostname {
			continue
		}
		if fe.Accept == nil {
			return ""
		}
		ok, why := fe.Accept(w)
		if ok {
			return ""
		}
		refused = append(refused, w.Hostname+": "+why)
	}
	if err != nil && len(refused) == 0 {
		r.log.Warn().Err(err).Str("to_queue", fe.Queue).Msg("cannot tell whether a live worker consumes the queue; forwarding anyway")
		return ""
	}
	remedy := fe.Remedy
	if remedy == "" {
		remedy = fmt.Sprintf("start a worker that registers %s on %q", r.msg.Task, fe.Queue)
	}
	if len(refused) > 0 {
		return fmt.Sprintf("%s: %s, and no live worker on queue %q can take it (%s); %s",
			r.msg.Task, fe.Reason, fe.Queue, strings.Join(refused, "; "), remedy)
	}
	return fmt.Sprintf("%s: %s, and no live worker consumes queue %q to hand it to; %s",
		r.msg.Task, fe.Reason, fe.Queue, remedy)
}
