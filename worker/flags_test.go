package main

import (
	"slices"
	"strings"
	"testing"
)

// TestFlagSpellings: -log-level (the gateway's spelling) sets the same
// level as -loglevel, and the new flags are known. Each call fails before
// anything connects, on the value given.
func TestFlagSpellings(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-loglevel", "loud"}, `-loglevel "loud"`},
		{[]string{"-log-level", "loud"}, `-loglevel "loud"`},
		{[]string{"--log-level=loud"}, `-loglevel "loud"`},
		{[]string{"-key-prefix", "p:", "-metrics-addr", "127.0.0.1:bad"}, "-metrics-addr"},
	} {
		err := run(c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("run(%q) = %v, want an error naming %s", c.args, err, c.want)
		}
	}
}

// The default -concurrency counts only the GPUs CUDA_VISIBLE_DEVICES lets
// this process use, read as CUDA reads it.
func TestVisibleGPUs(t *testing.T) {
	all := []string{
		"GPU 0: NVIDIA H200 (UUID: GPU-aaaa1111-0000-0000-0000-000000000000)",
		"GPU 1: NVIDIA H200 (UUID: GPU-bbbb2222-0000-0000-0000-000000000000)",
		"GPU 2: NVIDIA H200 (UUID: GPU-cccc3333-0000-0000-0000-000000000000)",
	}
	for _, c := range []struct {
		env  string
		set  bool
		want []int
	}{
		{"", false, []int{0, 1, 2}},
		{"", true, nil},
		{"1", true, []int{1}},
		{"2,0", true, []int{2, 0}},
		{"0,7,1", true, []int{0}}, // CUDA stops at the first invalid entry
		{"-1", true, nil},
		{"GPU-bbbb", true, []int{1}},
		{"GPU-cccc3333,0", true, []int{2, 0}},
		{"GPU-ffff", true, nil},
		{"NoDevFiles", true, nil},
	} {
		var want []string
		for _, i := range c.want {
			want = append(want, all[i])
		}
		if got := visibleGPUs(all, c.env, c.set); !slices.Equal(got, want) {
			t.Errorf("CUDA_VISIBLE_DEVICES=%q (set %v): %d GPUs %v; want %v", c.env, c.set, len(got), got, want)
		}
	}
}
