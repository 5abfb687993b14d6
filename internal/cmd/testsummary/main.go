// Command testsummary reads `go test -json` on stdin and prints a short
// report: each package's result, the full output of failed tests, every
// skipped test with its reason, and a closing "N passed, N failed, N
// skipped" line. It exits 1 when anything failed.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

func main() {
	outputs := map[string]*strings.Builder{}
	var passed, failed, skipped int
	var failures, skips []string
	var pkgFailed []string

	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1024*1024), 16*1024*1024)
	for sc.Scan() {
		line := sc.Bytes()
		var ev event
		if err := json.Unmarshal(line, &ev); err != nil {
			// Build errors and other non-JSON lines go straight through.
			fmt.Println(string(line))
			continue
		}
		key := ev.Package + " " + ev.Test
		switch ev.Action {
		case "output":
			b := outputs[key]
			if b == nil {
				b = &strings.Builder{}
				outputs[key] = b
			}
			b.WriteString(ev.Output)
		case "pass", "fail", "skip":
			if ev.Test == "" {
				status := map[string]string{"pass": "ok  ", "fail": "FAIL", "skip": "skip"}[ev.Action]
				fmt.Printf("%s %s (%.1fs)\n", status, ev.Package, ev.Elapsed)
				if ev.Action == "fail" {
					pkgFailed = append(pkgFailed, ev.Package)
					if b := outputs[key]; b != nil {
						failures = append(failures, fmt.Sprintf("=== package %s\n%s", ev.Package, b.String()))
					}
				}
				delete(outputs, key)
				continue
			}
			out := ""
			if b := outputs[key]; b != nil {
				out = b.String()
			}
			delete(outputs, key)
			switch ev.Action {
			case "pass":
				passed++
			case "fail":
				failed++
				failures = append(failures, fmt.Sprintf("=== %s %s\n%s", ev.Package, ev.Test, out))
			case "skip":
				skipped++
				skips = append(skips, fmt.Sprintf("%s %s: %s", ev.Package, ev.Test, skipReason(out)))
			}
		}
	}
	if len(failures) > 0 {
		fmt.Println("\n--- failures ---")
		for _, f := range failures {
			fmt.Println(f)
		}
	}
	if len(skips) > 0 {
		sort.Strings(skips)
		fmt.Println("\n--- skipped, with reasons ---")
		for _, s := range skips {
			fmt.Println(s)
		}
	}
	fmt.Printf("\n%d passed, %d failed, %d skipped\n", passed, failed, skipped)
	if failed > 0 || len(pkgFailed) > 0 {
		os.Exit(1)
	}
}

// skipReason picks the t.Skip message out of a skipped test's output.
func skipReason(out string) string {
	var reasons []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "=== ") || strings.HasPrefix(l, "--- SKIP") {
			continue
		}
		reasons = append(reasons, l)
	}
	if len(reasons) == 0 {
		return "(no reason given)"
	}
	return strings.Join(reasons, " ")
}
