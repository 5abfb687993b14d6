package bench

import (
	"context"
	"os/exec"
	"testing"
)

// Row "remote": per-task overhead of a gateway-mediated worker against a
// direct-Redis one, on loopback and 80 ms RTT away (test/redisnet's
// BenchmarkRemoteOverhead, with its delaying proxy). Its output lines go
// into the report as they are; no Python peer.

const (
	remoteBench = "^BenchmarkRemoteOverhead$"
	remoteTitle = "remote: go test ./test/redisnet -run '^$' -bench RemoteOverhead -benchtime 1s (ns/op per task: direct Redis vs through the gateway; drain = 8 slots, serial = publish to result)"
)

func benchRemote(b *testing.B, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.MediaTimeout)
	defer cancel()
	progress("remote: go test ./test/redisnet -run '^$' -bench RemoteOverhead -benchtime 1s")
	cmd := exec.CommandContext(ctx, e.gocmd, "test", "./test/redisnet", "-run", "^$", "-bench", remoteBench, "-benchtime", "1s", "-count", "1", "-timeout", "20m")
	cmd.Dir = e.root
	out, err := cmd.CombinedOutput()
	lines, hasBench := benchLines(string(out))
	switch {
	case ctx.Err() != nil:
		e.tab.section(remoteTitle, []string{"n/a (did not finish within BENCH_MEDIA_SECONDS=" + e.cfg.MediaTimeout.String() + ")"})
	case err != nil:
		e.tab.section(remoteTitle, append([]string{"n/a (go test ./test/redisnet failed: " + oneLine(firstLines(string(out), 2), 200) + ")"}, tail(lines, 10)...))
	case !hasBench:
		e.tab.section(remoteTitle, []string{"n/a (test/redisnet has no BenchmarkRemoteOverhead)"})
	default:
		e.tab.section(remoteTitle, lines)
	}
}
