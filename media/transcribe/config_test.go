package transcribe

import (
	"slices"
	"strings"
	"testing"
)

// A model goes on every GPU whisper.cpp can use unless GPUDevices says
// which; a device that does not exist or is listed twice is an error
// naming the devices there are, not a copy placed somewhere else.
func TestPlacement(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  WhisperConfig
		gpus int
		want []int
		err  string
	}{
		{name: "CPU build", gpus: 0, want: []int{0}},
		{name: "CPU build keeps listed copies", cfg: WhisperConfig{GPUDevices: []int{0, 1}}, gpus: 0, want: []int{0, 1}},
		{name: "GPU off", cfg: WhisperConfig{NoGPU: true}, gpus: 4, want: []int{0}},
		{name: "negative", cfg: WhisperConfig{GPUDevices: []int{-1}}, gpus: 0, err: "GPU device -1 does not exist"},
		{name: "one GPU", gpus: 1, want: []int{0}},
		{name: "every GPU", gpus: 4, want: []int{0, 1, 2, 3}},
		{name: "chosen GPUs", cfg: WhisperConfig{GPUDevices: []int{3, 1}}, gpus: 4, want: []int{3, 1}},
		{name: "no such GPU", cfg: WhisperConfig{GPUDevices: []int{0, 2}}, gpus: 2, err: "GPU device 2 does not exist: whisper.cpp sees 2 GPU(s), numbered 0 to 1"},
		{name: "twice", cfg: WhisperConfig{GPUDevices: []int{1, 1}}, gpus: 2, err: "GPU device 1 is listed twice"},
	} {
		got, err := c.cfg.placement(c.gpus)
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: got %v, %v; want an error containing %q", c.name, got, err, c.err)
			}
		case err != nil || !slices.Equal(got, c.want):
			t.Errorf("%s: got %v, %v; want %v", c.name, got, err, c.want)
		}
	}
}
