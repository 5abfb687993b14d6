package clock

import (
	"testing"
	"time"
)

func TestFakeMovesOnlyWhenAdvanced(t *testing.T) {
	start := time.Unix(1700000000, 0)
	f := NewFake(start)
	if !f.Now().Equal(start) {
		t.Fatalf("Now = %v, want %v", f.Now(), start)
	}
	f.Advance(1500 * time.Millisecond)
	if got := f.Now().Sub(start); got != 1500*time.Millisecond {
		t.Fatalf("after Advance(1.5s) Now is %v past the start", got)
	}
	var _ Clock = Real{}
}
