package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"morag-gpu/worker/runner"
)

func TestDiagEcho(t *testing.T) {
	task := &runner.Task{Args: []any{json.Number("1"), "x"}, Kwargs: map[string]any{"k": true}, Hostname: "gpu@h"}
	got, err := diagEcho(context.Background(), task)
	want := map[string]any{"args": []any{json.Number("1"), "x"}, "kwargs": map[string]any{"k": true}, "worker": "gpu@h"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("diag.echo = %v, %v", got, err)
	}
}

func TestDiagFail(t *testing.T) {
	_, err := diagFail(context.Background(), &runner.Task{Args: []any{"kaputt"}})
	if err == nil || err.Error() != "kaputt" {
		t.Errorf("diag.fail error = %v", err)
	}
}

func TestDiagRetry(t *testing.T) {
	_, err := diagRetry(context.Background(), &runner.Task{Args: []any{json.Number("2")}, Retries: 1})
	var re *runner.RetryError
	if !errors.As(err, &re) || re.MaxRetries != 2 || re.Countdown != time.Second {
		t.Fatalf("want a retry with max 2 and countdown 1s, got %v", err)
	}
	got, err := diagRetry(context.Background(), &runner.Task{Args: []any{json.Number("2")}, Kwargs: map[string]any{"countdown": json.Number("0")}, Retries: 2})
	if err != nil || got != 2 {
		t.Errorf("after 2 retries diag.retry = %v, %v; want 2", got, err)
	}
	if _, err := diagRetry(context.Background(), &runner.Task{Args: []any{"x"}}); err == nil {
		t.Error("a non-number must fail")
	}
}

func TestDiagSleepHonoursCancel(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	cause := errors.New("terminated")
	go func() { time.Sleep(50 * time.Millisecond); cancel(cause) }()
	_, err := diagSleep(ctx, &runner.Task{Args: []any{json.Number("60")}})
	if !errors.Is(err, cause) {
		t.Errorf("diag.sleep returned %v, want the cancel cause", err)
	}
	got, err := diagSleep(context.Background(), &runner.Task{Args: []any{json.Number("0.01")}})
	if err != nil || got != json.Number("0.01") {
		t.Errorf("diag.sleep(0.01) = %v, %v", got, err)
	}
	if _, err := diagSleep(context.Background(), &runner.Task{Args: []any{json.Number("-1")}}); err == nil {
		t.Error("negative seconds must fail")
	}
}

func TestHealthCheck(t *testing.T) {
	got, _ := healthCheck(context.Background(), &runner.Task{Hostname: "gpu@h"})
	m := got.(map[string]any)
	if m["status"] != "healthy" || m["worker"] != "gpu@h" || m["gpu"] != false {
		t.Errorf("health = %v", m)
	}
	got, _ = healthCheck(context.Background(), &runner.Task{Info: map[string]any{"gpu": []string{"GPU 0"}}})
	if g := got.(map[string]any)["gpu"]; !reflect.DeepEqual(g, []string{"GPU 0"}) {
		t.Errorf("gpu = %v", g)
	}
}

func TestRegister(t *testing.T) {
	mux := runner.NewMux()
	RegisterHealth(mux)
	RegisterDiagnostics(mux)
	want := []string{"diag.crash", "diag.echo", "diag.exhaust", "diag.fail", "diag.retry", "diag.sleep", "morag.worker.health_check_task"}
	if got := mux.Names(); !reflect.DeepEqual(got, want) {
		t.Errorf("Names = %v", got)
	}
}
