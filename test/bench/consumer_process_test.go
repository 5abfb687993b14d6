package bench

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"morag-gpu/internal/testenv"
)

// consumerEnv makes this test binary the e2e row's Go consumer instead
// of the harness: "<redis URL> <queue> <goroutines>". The consumer runs
// in a process of its own, as the Python worker it is compared with does.
// In the harness's process it shared the Go scheduler with the four
// publishers and the result reader: a publisher whose reply had arrived
// waited for a P behind runnable consumer goroutines (a Send took ~290 µs
// there against ~70 µs with nothing else running), so the row measured
// that wait more than the consumer.
const consumerEnv = "MORAG_BENCH_CONSUMER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(consumerEnv); spec != "" {
		os.Exit(consumerProcess(spec))
	}
	os.Exit(m.Run())
}

// consumerProcess runs runGoConsumer until SIGTERM; its exit status says
// whether the consumer failed (the reason goes to stderr).
func consumerProcess(spec string) int {
	f := strings.Fields(spec)
	n := 0
	if len(f) == 3 {
		n, _ = strconv.Atoi(f[2])
	}
	if n < 1 {
		fmt.Fprintf(os.Stderr, "%s=%q: want \"<redis URL> <queue> <goroutines>\"\n", consumerEnv, spec)
		return 2
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer cancel()
	g, err := newGoSide(f[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		return 1
	}
	defer g.close()
	stop, dead := runGoConsumer(ctx, g, f[1], n)
	<-dead
	if err := stop(); err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		return 1
	}
	return 0
}

// startGoConsumer starts this test binary as the Go consumer of queue.
func (e *env) startGoConsumer(tb testing.TB, queue string) *testenv.Process {
	spec := fmt.Sprintf("%s=%s %s %d", consumerEnv, e.redis.URL(), queue, e.cfg.GoConsumers)
	return testenv.Start(tb, "", []string{spec}, os.Args[0])
}

// stopGoConsumer ends the consumer and reports how it ended.
func stopGoConsumer(p *testenv.Process) error {
	p.Signal(syscall.SIGTERM)
	code, ok := p.Wait(10 * time.Second)
	switch {
	case !ok:
		p.Kill()
		return fmt.Errorf("the Go consumer did not stop within 10s of SIGTERM")
	case code != 0:
		return fmt.Errorf("the Go consumer failed (exit %d): %s", code, lastLines(p.Output(), 3))
	}
	return nil
}
