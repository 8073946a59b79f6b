package main

import "testing"

// TestTSOFramesCut cuts a bench super-frame the way the sidecar does (headers
// + one MSS of payload each) and checks every segment is a frame of the
// trial's size that parseFrame numbers in order.
func TestTSOFramesCut(t *testing.T) {
	tf := newTSOFrames(1500)
	if tf.mss != 1446 || tf.segs != 45 {
		t.Fatalf("mss %d segs %d, want 1446 and 45", tf.mss, tf.segs)
	}
	b := make([]byte, tsoBufSize)
	n := tf.build(b, 1000)
	if n != tsoHeaders+45*1446 || n-14 > 65535 {
		t.Fatalf("super-frame of %d bytes", n)
	}
	for i := range tf.segs {
		seg := append(append([]byte(nil), b[:tsoHeaders]...), b[tsoHeaders+i*tf.mss:tsoHeaders+(i+1)*tf.mss]...)
		seq, ok := parseFrame(seg)
		if len(seg) != 1500 || !ok || seq != 1000+uint64(i) {
			t.Fatalf("segment %d: %d bytes, seq %d, ok %v", i, len(seg), seq, ok)
		}
	}
	other := make([]byte, 1500)
	buildFrame(other, 7)
	if _, ok := parseSegment(other); ok {
		t.Error("a plain test frame parsed as a segment")
	}
}

// TestTSOLines checks the summary line sets the TSO row against both the
// per-frame vhost-user row and the bare pair.
func TestTSOLines(t *testing.T) {
	lim := 4.21
	rows := []row{
		{Path: pathVhost, Direction: dirEncap, FrameBytes: 1500, Mode: modeBlast, Mpps: 1.696},
		{Path: pathVhostTSO, Direction: dirEncap, FrameBytes: 1500, Mode: modeBlast, Mpps: 1.109, RatioLimit: &lim},
	}
	got := tsoLines(rows)
	want := "guest TSO → sidecar, encap 1500 B frames: 1.109 Mpps, 4.21× the bare per-packet sendmmsg→recvmmsg pair, 0.65× the per-frame vhost-user rate (1.696 Mpps)"
	if len(got) != 1 || got[0] != want {
		t.Errorf("tsoLines = %q\nwant %q", got, want)
	}
}
