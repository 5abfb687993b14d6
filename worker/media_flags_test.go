package main

import (
	"context"
	"flag"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"morag-gpu/media"
	"morag-gpu/worker/runner"
	"morag-gpu/worker/tasks"
)

func TestByteSizeFlag(t *testing.T) {
	for in, want := range map[string]int64{"2GiB": 2 << 30, "500MB": 500e6, "10k": 10 << 10, "1048576": 1 << 20, "0": 0, "1.5 MiB": 3 << 19} {
		var b byteSize
		if err := b.Set(in); err != nil || int64(b) != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, b, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "2XB", "lots", "NaN", "1e30GiB"} {
		var b byteSize
		if err := b.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted %d", bad, b)
		}
	}
}

func TestMediaSetupDefaultBuild(t *testing.T) {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	f := registerMediaFlags(fs)
	if err := fs.Parse([]string{"-gpu", "off", "-max-download-size", "1GiB"}); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	log := zerolog.New(&logs)
	mux := runner.NewMux()
	info, cleanup, err := f.setup(context.Background(), log, 2, "celery", mux)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	if caps, ok := info["gpu"].(media.Capabilities); !ok || caps.Mode != media.ModeOff || caps.Any() {
		t.Errorf("info gpu = %#v, want the detected (off) capabilities", info["gpu"])
	}
	tr, _ := info["transcriber"].(map[string]any)
	if tr["available"] != false || tr["forward_to"] != "celery" || tr["reason"] == "" {
		t.Errorf("info transcriber = %v", tr)
	}
	if !strings.Contains(logs.String(), "no transcriber: built without whisper tag; audio/video needing a transcript are forwarded to celery") {
		t.Errorf("startup log does not say there is no transcriber:\n%s", logs.String())
	}
	if mux.Handler(tasks.ProcessFileRemote) == nil || mux.Handler(tasks.ProcessURLRemote) == nil || mux.Handler(tasks.ProcessFile) == nil {
		t.Errorf("media tasks not registered: %v", mux.Names())
	}

	// Nowhere to forward and no transcriber: refuse to start, saying why.
	fs = flag.NewFlagSet("worker", flag.ContinueOnError)
	f = registerMediaFlags(fs)
	fs.Parse([]string{"-gpu", "off"})
	if _, _, err := f.setup(context.Background(), log, 1, "", runner.NewMux()); err == nil || !strings.Contains(err.Error(), "-forward-unknown") {
		t.Errorf("setup with no forward queue: err = %v", err)
	}
	// ... unless told to fail such tasks.
	fs = flag.NewFlagSet("worker", flag.ContinueOnError)
	f = registerMediaFlags(fs)
	fs.Parse([]string{"-gpu", "off", "-no-transcriber", "fail"})
	if _, cleanup, err := f.setup(context.Background(), log, 1, "", runner.NewMux()); err != nil {
		t.Errorf("-no-transcriber fail without a forward queue: %v", err)
	} else {
		cleanup()
	}
	for _, args := range [][]string{{"-gpu", "sometimes"}, {"-no-transcriber", "maybe"}} {
		fs = flag.NewFlagSet("worker", flag.ContinueOnError)
		f = registerMediaFlags(fs)
		fs.Parse(args)
		if _, _, err := f.setup(context.Background(), log, 1, "celery", runner.NewMux()); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

func TestParseDevices(t *testing.T) {
	if d, err := parseDevices(" 0, 2 "); err != nil || len(d) != 2 || d[1] != 2 {
		t.Errorf("%v %v", d, err)
	}
	if d, err := parseDevices(""); err != nil || d != nil {
		t.Errorf("%v %v", d, err)
	}
	if _, err := parseDevices("0,x"); err == nil {
		t.Error("0,x accepted")
	}
}
