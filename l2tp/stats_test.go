package l2tp

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// TestDropNames pins the counter names metrics and logs use.
func TestDropNames(t *testing.T) {
	want := []string{"session", "cookie", "sequence", "truncated", "source", "malformed",
		"control", "oversize", "send_error", "vm_down", "kernel", "link_down", "impair_loss", "impair_rate", "impair_limit", "vm_slow"}
	if len(want) != NumDrops {
		t.Fatalf("NumDrops = %d", NumDrops)
	}
	for i, w := range want {
		if got := Drop(i).String(); got != w {
			t.Errorf("Drop(%d) = %q, want %q", i, got, w)
		}
	}
	if got := Drop(200).String(); got != "drop(200)" {
		t.Errorf("unknown drop = %q", got)
	}
}

// TestStatsSnapshot checks counting, routing of AddDrop, and the summary.
func TestStatsSnapshot(t *testing.T) {
	var s Stats
	if got := s.Snapshot().String(); got != "rx 0 pkts 0 B, tx 0 pkts 0 B" {
		t.Fatalf("zero summary %q", got)
	}
	s.addRx(10, 1480)
	s.addTx(9, 1332)
	s.AddDrop(DropCookie, 1)
	s.AddDrop(DropVMDown, 4)
	s.AddDrop(DropSendError, 2)
	s.AddDrop(Drop(99), 5) // ignored
	s.seqLost.Add(3)
	s.addStalls(2, 1500*time.Microsecond)
	s.txAbove.Add(6)
	v := s.Snapshot()
	if v.Drops[DropVMDown] != 4 || v.Drops[DropSendError] != 2 || v.Dropped() != 7 {
		t.Fatalf("snapshot %+v", v)
	}
	want := "rx 10 pkts 1480 B, tx 9 pkts 1332 B, drops cookie=1 send_error=2 vm_down=4, seq_lost 3, tx_stalls 2 (1.5ms), above_mtu 6"
	if got := v.String(); got != want {
		t.Fatalf("summary\n got %s\nwant %s", got, want)
	}
	j, err := json.Marshal(v)
	if err != nil || !strings.Contains(string(j), `"above_mtu":6`) {
		t.Fatalf("JSON %s, %v", j, err)
	}
	var back StatsSnapshot
	if err := json.Unmarshal(j, &back); err != nil || back != v {
		t.Fatalf("JSON round trip: %+v, %v", back, err)
	}
}

// TestStatsCacheLines checks that RX-written and TX-written counters do not
// share a cache line.
func TestStatsCacheLines(t *testing.T) {
	var s Stats
	rxEnd := unsafe.Offsetof(s.rxDrops) + unsafe.Sizeof(s.rxDrops)
	if gap := unsafe.Offsetof(s.txPackets) - rxEnd; gap < 64 {
		t.Fatalf("only %d bytes between RX and TX counters", gap)
	}
}
