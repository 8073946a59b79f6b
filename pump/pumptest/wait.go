package pumptest

import (
	"testing"
	"time"
)

// WaitAttached waits up to a second until a VM port is attached to p (a
// *pump.Pump), failing t otherwise.
func WaitAttached(t testing.TB, p interface{ Attached() int }) {
	t.Helper()
	for i := 0; i < 1000 && p.Attached() == 0; i++ {
		time.Sleep(time.Millisecond)
	}
	if p.Attached() == 0 {
		t.Fatal("port never attached")
	}
}
