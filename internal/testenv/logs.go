package testenv

import (
	"bufio"
	"encoding/json"
	"strings"
	"time"
)

// LogsByTask counts the process's JSON log lines (zerolog's) whose message
// is message, per task_id; lines without a task id count under "".
func (p *Process) LogsByTask(message string) map[string]int {
	out := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(p.Output()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) != nil || line["message"] != message {
			continue
		}
		id, _ := line["task_id"].(string)
		out[id]++
	}
	return out
}

// LogLines counts the process's JSON log lines whose message is message,
// of task taskID, or of any task (and none) when taskID is "".
func (p *Process) LogLines(message, taskID string) int {
	counts := p.LogsByTask(message)
	if taskID != "" {
		return counts[taskID]
	}
	n := 0
	for _, c := range counts {
		n += c
	}
	return n
}

// WaitLogLines is LogLines once the count reaches want, or when timeout
// passes: a line the process wrote before the state a test waited for (a
// result in Redis, say) may still be on its way through the pipe.
func (p *Process) WaitLogLines(message, taskID string, want int, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		n := p.LogLines(message, taskID)
		if n >= want || !time.Now().Before(deadline) {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}
