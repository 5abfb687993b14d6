package runner_test

import (
	"context"
	"fmt"
	"log"
	"strings"

	"morag-gpu/worker/runner"
)

// A Go worker with one custom task, consuming the queue "text" next to
// Python workers. Python calls it as
// app.send_task("text.upper", args=["hi"], queue="text").get().
// It needs Redis, so it is compiled but not run by `go test`.
func Example() {
	mux := runner.NewMux()
	mux.HandleFunc("text.upper", func(ctx context.Context, t *runner.Task) (any, error) {
		s, _ := t.Args[0].(string)
		return strings.ToUpper(s), nil
	})
	srv, err := runner.NewServer(runner.Config{Queues: []string{"text"}, RedisURL: "redis://localhost:6379/0"}, mux)
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(srv.RunWithSignals(context.Background())) // SIGTERM: finish running tasks, requeue the rest
}

// A handler that reports progress (a custom PROGRESS state)
// and hands tasks it cannot do to another queue, unchanged.
func ExampleMux_HandleFunc() {
	mux := runner.NewMux()
	mux.HandleFunc("media.transcode", func(ctx context.Context, t *runner.Task) (any, error) {
		if len(t.Args) == 0 {
			return nil, runner.Forward("celery", "no input: let a Python worker report it")
		}
		if err := t.Progress(ctx, 0.5, "half way"); err != nil {
			return nil, err
		}
		return map[string]any{"done": true}, nil
	})
	fmt.Println(mux.Names())
	// Output: [media.transcode]
}

// Celery's -n expansion; a name without "@" gets Celery's "celery@".
func ExampleExpandNodename() {
	fmt.Println(runner.ExpandNodename("gpu@%h", "box1.example.com"))
	fmt.Println(runner.ExpandNodename("%n-worker", "box1.example.com"))
	// Output:
	// gpu@box1.example.com
	// celery@box1-worker
}
