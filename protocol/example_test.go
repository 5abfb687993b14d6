package protocol_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"morag-gpu/protocol"
)

// A Go client calling a Python task. On the Python side:
//
//	app = Celery("tasks", broker="redis://localhost:6379/0", backend="redis://localhost:6379/0")
//	@app.task
//	def add(x, y): return x + y
//
// run with `celery -A tasks worker`. It needs that Redis and worker, so it
// is compiled but not run by `go test`.
func Example_callPythonTask() {
	pool, err := protocol.NewPool("redis://localhost:6379/0")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	client := protocol.NewClient(
		protocol.NewBroker(pool, protocol.BrokerOptions{}),
		protocol.NewBackend(pool, protocol.BackendOptions{}))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := client.Send(ctx, "tasks.add", []any{2, 3}, nil, protocol.SendOptions{Queue: "celery"})
	if err != nil {
		log.Fatal(err)
	}
	sum, err := res.Get(ctx) // the raw JSON result; a Python exception is a *protocol.TaskError
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(sum))
}

// The message apply_async would send, encoded and read back as a worker
// reads it. No Redis needed.
func ExampleEncode() {
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	msg, err := protocol.NewTaskMessage("tasks.add", []any{2, 3.5}, map[string]any{"note": "é"},
		protocol.SendOptions{TaskID: "3b6f0a4e-0000-4000-8000-000000000001", Countdown: 10 * time.Second}, now)
	if err != nil {
		log.Fatal(err)
	}
	raw, err := protocol.Encode(msg)
	if err != nil {
		log.Fatal(err)
	}
	back, err := protocol.Decode(raw)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(back.Task, back.ID)
	fmt.Println(back.Args, back.Kwargs)
	fmt.Println(back.ArgsRepr, back.KwargsRepr)
	fmt.Println(back.ETA.Format("2006-01-02T15:04:05-07:00"))
	// Output:
	// tasks.add 3b6f0a4e-0000-4000-8000-000000000001
	// [2 3.5] map[note:é]
	// (2, 3.5) {'note': 'é'}
	// 2024-05-01T12:00:10+00:00
}
