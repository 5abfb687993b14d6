// Package bench is `make bench`: one run that measures the Go components
// and their Python peers side by side, on the same private redis-server and
// the same machine, and prints one table.
//
// Everything lives in BenchmarkSideBySide (bench_test.go), so plain
// `go test ./...` runs none of it. scripts/bench runs
//
//	go test ./test/bench -run '^$' -bench '^BenchmarkSideBySide$' -benchtime 1x
//
// Each row is a sub-benchmark (publish, e2e, echo, gateway, upload, media);
// `-bench 'SideBySide/gateway'` runs one. A row whose Go or Python side
// cannot run yet (a package still a stub, a binary that does not build, a
// route that answers 404, a missing Python package) prints
// "n/a (<reason>)" in that cell instead of failing the run.
//
// The table, also written to $BENCH_TABLE_FILE when set:
//
//	metric | go | python | go/python | goal
//
// "go/python" is always the Go value divided by the Python value, so a rate
// goal reads "≥ 20×" and a memory or latency goal "≤ 0.25×"; the goal column
// ends in "met" or "MISSED" when both sides were measured. Sizes come from
// BENCH_* environment variables, listed in scripts/bench and config_test.go.
package bench
