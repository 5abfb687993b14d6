package testenv

import (
	"bufio"
	"encoding/json"
	"strings"
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
