package l2tp

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"

	"golang.org/x/net/bpf"
)

// TestSessionFilterProgram pins the assembled filter (golden bytes, as the
// kernel gets them) for IPv4 and IPv6 and session 0x12345678.
func TestSessionFilterProgram(t *testing.T) {
	tests := []struct {
		ipv6 bool
		want []bpf.RawInstruction
	}{
		{false, []bpf.RawInstruction{
			{Op: 0xb1, K: 0},                 // ldxb 4*([0]&0xf)
			{Op: 0x40, K: 0},                 // ld [x+0]
			{Op: 0x15, Jf: 1, K: 0x12345678}, // jeq #0x12345678, 0, 1
			{Op: 0x06, K: 0xffffffff},        // ret #-1
			{Op: 0x06, K: 0},                 // ret #0
		}},
		{true, []bpf.RawInstruction{
			{Op: 0x20, K: 0}, // ld [0]
			{Op: 0x15, Jf: 1, K: 0x12345678},
			{Op: 0x06, K: 0xffffffff},
			{Op: 0x06, K: 0},
		}},
	}
	for _, tt := range tests {
		got, err := bpf.Assemble(sessionFilter(0x12345678, tt.ipv6))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(tt.want) {
			t.Fatalf("ipv6=%v: %d instructions, want %d: %+v", tt.ipv6, len(got), len(tt.want), got)
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Fatalf("ipv6=%v: instruction %d = %+v, want %+v", tt.ipv6, i, got[i], tt.want[i])
			}
		}
	}
}

// TestSessionFilterLogic runs the filter on packets as each raw socket sees
// them: its session passes whole, another session, session 0 and packets
// too short for a session ID are dropped; IPv4 options (IHL 15) are skipped.
func TestSessionFilterLogic(t *testing.T) {
	const ours = 0xc2
	v4 := func(ihl int, payload ...byte) []byte {
		p := make([]byte, 4*ihl, 4*ihl+len(payload))
		p[0] = 0x40 | byte(ihl)
		return append(p, payload...)
	}
	session := func(s uint32) []byte { return binary.BigEndian.AppendUint32(nil, s) }
	frame := append(session(ours), make([]byte, 64)...)
	tests := []struct {
		name string
		ipv6 bool
		pkt  []byte
		pass bool
	}{
		{"ipv4 ours", false, v4(5, frame...), true},
		{"ipv4 with 40 bytes of options, ours", false, v4(15, frame...), true},
		{"ipv4 another session", false, v4(5, session(ours+1)...), false},
		{"ipv4 session 0", false, v4(5, session(0)...), false},
		{"ipv4 options hide ours at offset 20", false, append(v4(6, session(1)...), session(ours)...), false},
		{"ipv4 cut session", false, v4(5, 0, 0, 0), false},
		{"ipv6 ours", true, frame, true},
		{"ipv6 another session", true, session(ours << 8), false},
		{"ipv6 session 0", true, session(0), false},
		{"ipv6 3 bytes", true, []byte{0, 0, ours}, false},
	}
	for _, tt := range tests {
		vm, err := bpf.NewVM(sessionFilter(ours, tt.ipv6))
		if err != nil {
			t.Fatal(err)
		}
		n, err := vm.Run(tt.pkt)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if pass := n >= len(tt.pkt); pass != tt.pass || (!pass && n != 0) {
			t.Errorf("%s: filter keeps %d of %d bytes, want pass=%v", tt.name, n, len(tt.pkt), tt.pass)
		}
	}
}

// TestIPEncapPortsSeeOnlyTheirSession: four IP-encapsulation tunnels on
// one loopback address (A ↔ B, D → C), IPv4 and IPv6, sessions of one
// shared socket whose filter passes the four, each receive only their own
// session. A sends 200 frames to B; then D sends one to C and B
// one to A: once C and A have those, their sockets have been through
// everything queued before them, and no tunnel may have counted another's
// packets (session drops).
func TestIPEncapPortsSeeOnlyTheirSession(t *testing.T) {
	needRoot(t)
	for _, addr := range []string{"127.0.0.1", "::1"} {
		t.Run(addr, func(t *testing.T) { onlyTheirSession(t, addr) })
	}
}

// onlyTheirSession is TestIPEncapPortsSeeOnlyTheirSession on addr.
func onlyTheirSession(t *testing.T, addr string) {
	base := 0x7000 + rand.Uint32N(1<<20)
	open := func(tx, rx uint32) *Tunnel {
		return openTunnel(t, fmt.Sprintf("src=%s,dst=%s,ipv6=%s,txsession=%#x,rxsession=%#x",
			addr, addr, onOff(addr == "::1"), base+tx, base+rx))
	}
	a, b, c, d := open(2, 1), open(1, 2), open(9, 3), open(3, 4)
	if a.Sessions() != 4 {
		t.Fatalf("%d sessions on the socket, want 4", a.Sessions())
	}
	const n = 200
	for i := range n {
		send(t, a, frameOf(i, 60))
	}
	collect(t, b, n)
	send(t, d, frameOf(1, 60))
	send(t, b, frameOf(2, 60))
	collect(t, c, 1)
	collect(t, a, 1)
	for name, tun := range map[string]*Tunnel{"A": a, "B": b, "C": c, "D": d} {
		if s := tun.Stats().Snapshot(); s.Dropped() != 0 {
			t.Errorf("tunnel %s counted another session's packets: %s", name, s)
		}
	}
}
