package media

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// detectNoGPU runs Detect and skips when this machine does have a usable
// GPU: the assertions below are about the fallback. scripts/gpu-check
// covers the GPU side.
func detectNoGPU(t *testing.T) Capabilities {
	t.Helper()
	caps, err := Detect(testContext(t), DetectOptions{})
	if err != nil {
		t.Fatalf("Detect in auto mode failed: %v", err)
	}
	if caps.Any() {
		t.Skipf("SKIP: this machine has a usable GPU (%s); run scripts/gpu-check for the GPU paths", caps)
	}
	return caps
}

func TestDetectWithoutGPUReportsWhy(t *testing.T) {
	caps := detectNoGPU(t)
	t.Logf("detected: %s", caps)
	if caps.Mode != ModeAuto {
		t.Errorf("mode = %q, want auto", caps.Mode)
	}
	for _, k := range []string{CapNVDEC, CapNVENC, CapScaleCUDA} {
		r := caps.Reasons[k]
		if r == "" {
			t.Errorf("no reason given for %s being unavailable", k)
			continue
		}
		// Debian's ffmpeg dlopens the driver: without one, every test run
		// says which CUDA library or device it could not get.
		if !strings.Contains(strings.ToLower(r), "cuda") && !strings.Contains(strings.ToLower(r), "nv") {
			t.Errorf("%s reason %q does not mention CUDA or NVIDIA", k, r)
		}
	}

	var m map[string]any
	data, err := json.Marshal(caps)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"mode", "nvdec", "nvenc", "scale_cuda", "device", "reasons"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON %s lacks %q", data, k)
		}
	}
	if m["nvdec"] != false || m["nvenc"] != false || m["scale_cuda"] != false || m["device"] != "" {
		t.Errorf("JSON %s does not report everything unavailable", data)
	}
}

func TestDetectModeOnRefusesWithoutGPU(t *testing.T) {
	detectNoGPU(t)
	caps, err := Detect(testContext(t), DetectOptions{Mode: ModeOn})
	if !errors.Is(err, ErrGPUUnavailable) {
		t.Fatalf("error = %v, want ErrGPUUnavailable", err)
	}
	if !strings.Contains(err.Error(), caps.Reasons[CapNVDEC]) {
		t.Errorf("error %q does not carry the NVDEC reason %q", err, caps.Reasons[CapNVDEC])
	}
	if caps.Mode != ModeOn || caps.NVDEC {
		t.Errorf("capabilities = %+v", caps)
	}
}

func TestDetectModeOffRunsNothing(t *testing.T) {
	// A missing ffmpeg proves no test run happened.
	caps, err := Detect(testContext(t), DetectOptions{Mode: ModeOff, FFmpeg: "/nonexistent/ffmpeg"})
	if err != nil {
		t.Fatal(err)
	}
	if caps.Any() || caps.Reasons[CapNVDEC] != "disabled by -gpu off" {
		t.Errorf("capabilities = %+v", caps)
	}
}

func TestDetectMissingFFmpeg(t *testing.T) {
	caps, err := Detect(testContext(t), DetectOptions{FFmpeg: "/nonexistent/ffmpeg"})
	if err != nil {
		t.Fatal(err)
	}
	if caps.Any() || caps.Reasons[CapNVENC] == "" || caps.Reasons[CapNVDEC] == "" {
		t.Errorf("capabilities = %+v", caps)
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"": ModeAuto, "auto": ModeAuto, "ON": ModeOn, " off ": ModeOff} {
		if got, err := ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseMode("yes"); err == nil {
		t.Error(`ParseMode("yes") accepted`)
	}
	if _, err := Detect(testContext(t), DetectOptions{Mode: "maybe"}); err == nil {
		t.Error(`Detect with mode "maybe" accepted`)
	}
}

// Every operation takes the CPU path with what Detect found here.
func TestOperationsTakeCPUPathWithoutGPU(t *testing.T) {
	tools := &Tools{GPU: detectNoGPU(t)}
	ctx := testContext(t)
	_, p, err := tools.Thumbnails(ctx, fixture(t, "mp4"), FrameOptions{Count: 2})
	if err != nil || p != (Path{Decode: PathCPU}) {
		t.Errorf("thumbnails: path %+v, error %v", p, err)
	}
	_, p, err = tools.Keyframes(ctx, fixture(t, "mkv"), FrameOptions{Count: 2})
	if err != nil || p != (Path{Decode: PathCPU}) {
		t.Errorf("keyframes: path %+v, error %v", p, err)
	}
	p, err = tools.Transcode(ctx, fixture(t, "webm"), filepath.Join(t.TempDir(), "p.mp4"), TranscodeOptions{Height: 120})
	if err != nil || p != (Path{Decode: PathCPU, Encode: PathLibx264}) {
		t.Errorf("transcode: path %+v, error %v", p, err)
	}
}

// Capabilities that claim a GPU this machine does not have make every GPU
// attempt fail: each operation must fall back to the CPU, still succeed,
// and say why in Path.Fallback.
func TestGPUFailureFallsBackToCPU(t *testing.T) {
	detectNoGPU(t)
	tools := &Tools{GPU: Capabilities{NVDEC: true, NVENC: true, ScaleCUDA: true}}
	ctx := testContext(t)

	frames, p, err := tools.Thumbnails(ctx, fixture(t, "mp4"), FrameOptions{Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != 2 || p.Decode != PathCPU || !strings.HasPrefix(p.Fallback, "nvdec: ") {
		t.Errorf("thumbnails: %d frames, path %+v", len(frames), p)
	}
	assertJPEG(t, frames[1].JPEG, 320, 240)

	dst := filepath.Join(t.TempDir(), "p.mp4")
	p, err = tools.Transcode(ctx, fixture(t, "mkv"), dst, TranscodeOptions{Height: 120})
	if err != nil {
		t.Fatal(err)
	}
	if p.Decode != PathCPU || p.Encode != PathLibx264 {
		t.Errorf("transcode path %+v, want cpu+libx264 after the GPU plans failed", p)
	}
	// Tried in order: NVDEC+NVENC, then NVDEC+libx264, then the CPU.
	if !strings.Contains(p.Fallback, "nvdec+nvenc: ") || !strings.Contains(p.Fallback, "nvdec+libx264: ") {
		t.Errorf("fallback %q does not list both GPU attempts", p.Fallback)
	}
	if _, err := tools.Probe(ctx, dst); err != nil {
		t.Errorf("the fallback proxy is unreadable: %v", err)
	}
	// The reasons reach the client (gpu_fallback): they say what the GPU
	// lacked, never where the worker keeps the input.
	if strings.Contains(p.Fallback, fixtureDir) || !strings.Contains(p.Fallback, "<input>") && strings.Contains(p.Fallback, "file:") {
		t.Errorf("fallback %q names the worker's path", p.Fallback)
	}
	t.Logf("fallback: %s", p.Fallback)

}
