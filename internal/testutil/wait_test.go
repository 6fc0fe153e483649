package testutil

import (
	"testing"
	"time"
)

func TestPoll(t *testing.T) {
	n := 0
	if err := Poll(time.Second, func() bool { n++; return n == 3 }); err != nil || n != 3 {
		t.Fatalf("Poll = %v after %d tries; want nil after 3", err, n)
	}
	start := time.Now()
	tries := 0
	if err := Poll(50*time.Millisecond, func() bool { tries++; return false }); err == nil {
		t.Fatal("Poll of a condition that never holds returned nil")
	}
	if el := time.Since(start); el < 50*time.Millisecond || el > 5*time.Second {
		t.Errorf("Poll gave up after %v; want about 50ms", el)
	}
	if max := int(50*time.Millisecond/Pace) + 101; tries > max {
		t.Errorf("Poll tried %d times; bounded by %d", tries, max)
	}
}
