package main

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

// TestBuildL2TPGolden pins the L2TPv3/UDP data header and the frame layout
// byte for byte.
func TestBuildL2TPGolden(t *testing.T) {
	buf := make([]byte, 128)
	for i := range buf {
		buf[i] = 0xee // the builder must overwrite every byte it returns
	}
	p := buildL2TP(buf, 0x01020304, 64, 0x1122334455667788)
	want := "00030000" + "01020304" + // T=0 ver 3, reserved 0; session ID
		"525400be0002" + "525400be0001" + "88b5" + // dst, src, EtherType
		"4c324231" + "1122334455667788" + // magic "L2B1", sequence number
		strings.Repeat("00", 64-26) // padding to 64 bytes
	if got := hex.EncodeToString(p); got != want {
		t.Fatalf("packet\n got %s\nwant %s", got, want)
	}
	if len(p) != 8+64 {
		t.Fatalf("len %d, want 72", len(p))
	}
}

// TestBuildStreamFrameGolden pins QEMU's stream record: a big-endian
// length, then the frame.
func TestBuildStreamFrameGolden(t *testing.T) {
	p := buildStreamFrame(make([]byte, 2000), 1500, 7)
	if len(p) != 1504 {
		t.Fatalf("len %d, want 1504", len(p))
	}
	if got, want := hex.EncodeToString(p[:30]), "000005dc"+"525400be0002525400be000188b5"+"4c324231"+"0000000000000007"; got != want {
		t.Fatalf("record head\n got %s\nwant %s", got, want)
	}
}

// TestParseL2TP checks the receive side's acceptance rules.
func TestParseL2TP(t *testing.T) {
	good := buildL2TP(make([]byte, 100), 2, 64, 9)
	tests := []struct {
		name string
		pkt  []byte
		ok   bool
	}{
		{"good", good, true},
		{"reserved bits ignored", append([]byte{0x00, 0x03, 0xab, 0xcd}, good[4:]...), true},
		{"other session", append([]byte{0, 3, 0, 0, 0, 0, 0, 1}, good[8:]...), false},
		{"control bit", append([]byte{0xc8, 0x03, 0, 0}, good[4:]...), false},
		{"version 2", append([]byte{0x00, 0x02, 0, 0}, good[4:]...), false},
		{"short", good[:7], false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			frame, ok := parseL2TP(tc.pkt, 2)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if ok && !bytes.Equal(frame, good[8:]) {
				t.Fatalf("frame differs")
			}
		})
	}
}

// TestParseFrame checks sequence numbers round-trip and foreign frames are refused.
func TestParseFrame(t *testing.T) {
	f := make([]byte, 64)
	buildFrame(f, 42)
	setSeq(f, 43)
	if seq, ok := parseFrame(f); !ok || seq != 43 {
		t.Fatalf("parseFrame = %d, %v; want 43, true", seq, ok)
	}
	f[12] = 0x08 // IPv4 EtherType: not ours
	if _, ok := parseFrame(f); ok {
		t.Fatal("foreign frame accepted")
	}
	if _, ok := parseFrame(f[:20]); ok {
		t.Fatal("short frame accepted")
	}
}

// TestSeqCheck checks the late and skipped counts.
func TestSeqCheck(t *testing.T) {
	var c seqCheck
	for _, s := range []uint64{0, 1, 2, 5, 3, 6, 6} {
		c.see(s)
	}
	if c.late != 2 || c.skipped != 2 || c.next != 7 {
		t.Fatalf("late %d skipped %d next %d; want 2 2 7", c.late, c.skipped, c.next)
	}
}
