package main

import (
	"slices"
	"strings"
	"testing"
)

// testpmdOutput is what testpmd printed for "stop" and "show port stats 0"
// in a run against the sidecar (DPDK 22.11).
const testpmdOutput = `testpmd> stop
Telling cores to stop...
Waiting for lcores to finish...

  ---------------------- Forward statistics for port 0  ----------------------
  RX-packets: 7              RX-dropped: 0             RX-total: 7
  TX-packets: 1120544        TX-dropped: 62968288      TX-total: 64088832
  ----------------------------------------------------------------------------

  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++
  RX-packets: 7              RX-dropped: 0             RX-total: 7
  TX-packets: 1120544        TX-dropped: 62968288      TX-total: 64088832
  ++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++

Done.
testpmd> show port stats 0

  ######################## NIC statistics for port 0  ########################
  RX-packets: 12         RX-missed: 0          RX-bytes:  768
  RX-errors: 0
  RX-nombuf:  0         
  TX-packets: 1120546    TX-errors: 0          TX-bytes:  71714944

  Throughput (since last show)
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:        23199          Tx-bps:     11878024
  ############################################################################
testpmd> show port stats 0

  ######################## NIC statistics for port 0  ########################
  RX-packets: 13         RX-missed: 0          RX-bytes:  832
  RX-errors: 0
  RX-nombuf:  0         
  TX-packets: 1120547    TX-errors: 0          TX-bytes:  71715008

  Throughput (since last show)
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:            0          Tx-bps:            0
  ############################################################################
testpmd> quit
`

// TestTestpmdStatsParse finds one answer per "show port stats" block and
// takes its counters, not the forward statistics "stop" prints.
func TestTestpmdStatsParse(t *testing.T) {
	var p statsParse
	var got []portStats
	for _, line := range strings.Split(testpmdOutput, "\n") {
		if ps, ok := p.feed(line); ok {
			got = append(got, ps)
		}
	}
	want := []portStats{{rx: 12, tx: 1120546}, {rx: 13, tx: 1120547}}
	if !slices.Equal(got, want) {
		t.Errorf("stats %+v, want %+v", got, want)
	}
}

// TestTestpmdArgs: the e2e test's command line with one queue pair and
// the interactive command line; a bigger mbuf only for jumbo frames.
func TestTestpmdArgs(t *testing.T) {
	args := strings.Join(testpmdArgs("/s/vu.sock", testpmdMbufSize(1500)), " ")
	for _, want := range []string{"-l 0-1 --no-pci --no-huge -m 512 --no-shconf --file-prefix l2tpv3bench",
		"--vdev net_virtio_user0,path=/s/vu.sock,queues=1 -- -i --total-num-mbufs=16384 --rxq=1 --txq=1"} {
		if !strings.Contains(args, want) {
			t.Errorf("args %q lack %q", args, want)
		}
	}
	if strings.Contains(args, "--mbuf-size") || strings.Contains(args, "--auto-start") {
		t.Errorf("args %q: no --mbuf-size for 1500 bytes, no --auto-start", args)
	}
	if args := strings.Join(testpmdArgs("/s", testpmdMbufSize(9000)), " "); !strings.HasSuffix(args, " --mbuf-size=9128") {
		t.Errorf("jumbo args %q", args)
	}
}

// TestUDPSinkAnyFrame: the encap sink counts testpmd's own frames only
// when told to, and never another session's or another size.
func TestUDPSinkAnyFrame(t *testing.T) {
	foreign := make([]byte, l2tpHeaderLen+64)
	copy(foreign, []byte{0, 3, 0, 0, 0, 0, 0, txSession})
	foreign[l2tpHeaderLen+12], foreign[l2tpHeaderLen+13] = 0x08, 0x00 // IPv4
	ours := buildL2TP(make([]byte, l2tpHeaderLen+64), txSession, 64, 9)
	other := buildL2TP(make([]byte, l2tpHeaderLen+64), txSession+1, 64, 9)
	for _, tc := range []struct {
		any   bool
		p     []byte
		want  bool
		name  string
		wantN uint64 // the sequence check's next number after the frame
	}{
		{false, ours, true, "ours", 10},
		{false, foreign, false, "foreign", 0},
		{true, foreign, true, "foreign, any", 0},
		{true, ours, true, "ours, any", 0},
		{true, other, false, "other session, any", 0},
		{true, foreign[:40], false, "short, any", 0},
	} {
		s := &udpSink{session: txSession, size: 64, anyFrame: tc.any}
		if got := s.check(tc.p); got != tc.want || s.seq.next != tc.wantN {
			t.Errorf("%s: check = %v (seq next %d), want %v (%d)", tc.name, got, s.seq.next, tc.want, tc.wantN)
		}
	}
}

// TestTrafgenAndLosslessCells: trafgen drives decap of every device but
// testpmd, and the limit; testpmd has no lossless search.
func TestTrafgenAndLosslessCells(t *testing.T) {
	c := config{sizes: []int{64}, paths: []string{pathSidecar, pathVhost, pathTestpmd, pathQEMU, pathLimit},
		dirs: []string{dirEncap, dirDecap}, trafgen: true}
	want := []cellKey{
		{pathSidecar, dirDecap, 64, modeTrafgen}, {pathVhost, dirDecap, 64, modeTrafgen},
		{pathQEMU, dirDecap, 64, modeTrafgen}, {pathLimit, dirLoopback, 64, modeTrafgen},
	}
	if got := trafgenCells(c); !slices.Equal(got, want) {
		t.Errorf("trafgen cells %v, want %v", got, want)
	}
	for _, k := range losslessCells(c) {
		if k.Path == pathTestpmd {
			t.Errorf("lossless search for %v", k)
		}
	}
	c.trafgen = false
	if got := trafgenCells(c); got != nil {
		t.Errorf("trafgen cells with -trafgen=false: %v", got)
	}
}

// TestCompareCellsOrder: modes blast, lossless, trafgen; testpmd after
// our vhost-user front end, before QEMU.
func TestCompareCellsOrder(t *testing.T) {
	ks := []cellKey{
		{pathQEMU, dirDecap, 64, modeTrafgen}, {pathSidecar, dirDecap, 64, modeTrafgen},
		{pathQEMU, dirDecap, 64, modeBlast}, {pathTestpmd, dirDecap, 64, modeBlast},
		{pathVhost, dirDecap, 64, modeBlast}, {pathSidecar, dirDecap, 64, modeLossless},
	}
	slices.SortFunc(ks, compareCells)
	want := []cellKey{
		{pathVhost, dirDecap, 64, modeBlast}, {pathTestpmd, dirDecap, 64, modeBlast},
		{pathQEMU, dirDecap, 64, modeBlast}, {pathSidecar, dirDecap, 64, modeLossless},
		{pathSidecar, dirDecap, 64, modeTrafgen}, {pathQEMU, dirDecap, 64, modeTrafgen},
	}
	if !slices.Equal(ks, want) {
		t.Errorf("order %v, want %v", ks, want)
	}
}

// confirmRows is a results table with trafgen and testpmd rows: runs
// with the given rates (Mpps) and loss per cell.
func confirmRows() []row {
	cells := map[cellKey]*cell{}
	var order []cellKey
	add := func(path, dir string, size int, mode string, loss float64, rates ...float64) {
		k := cellKey{path, dir, size, mode}
		c := &cell{}
		for _, r := range rates {
			c.Runs = append(c.Runs, trialResult{Mpps: r, Sent: 1, LossPct: loss})
		}
		cells[k] = c
		order = append(order, k)
	}
	add(pathVhost, dirEncap, 64, modeBlast, 0, 1.0, 1.1, 1.2)
	add(pathTestpmd, dirEncap, 64, modeBlast, 0, 0.5, 0.5, 0.5)
	add(pathQEMU, dirEncap, 64, modeBlast, 0, 0.1, 0.1, 0.1)
	add(pathVhost, dirEncap, 1500, modeBlast, 0, 1.0, 1.0, 1.0)
	add(pathTestpmd, dirEncap, 1500, modeBlast, 0, 0.5, 1.0, 1.5)
	add(pathQEMU, dirEncap, 1500, modeBlast, 0, 0.1, 0.1, 0.1)
	add(pathSidecar, dirDecap, 64, modeBlast, 0, 0.3, 0.3, 0.3)
	add(pathVhost, dirDecap, 64, modeBlast, 0, 0.30, 0.30, 0.30)
	add(pathTestpmd, dirDecap, 64, modeBlast, 0, 0.28, 0.29, 0.30)
	add(pathQEMU, dirDecap, 64, modeBlast, 50, 0.1, 0.1, 0.1)
	add(pathSidecar, dirDecap, 64, modeLossless, 0, 0.2, 0.2, 0.2)
	add(pathQEMU, dirDecap, 64, modeLossless, 0, 0.1, 0.1, 0.1)
	add(pathSidecar, dirDecap, 64, modeTrafgen, 0, 0.25, 0.25, 0.25)
	add(pathVhost, dirDecap, 64, modeTrafgen, 2, 0.2, 0.2, 0.2)
	add(pathQEMU, dirDecap, 64, modeTrafgen, 49, 0.1, 0.1, 0.1)
	return buildRows(cells, order)
}

// TestIndependentLines: trafgen's ratio beside the blaster's (a lower
// bound where the device lost nothing and QEMU did), testpmd against QEMU
// and against our front end, with the verdict.
func TestIndependentLines(t *testing.T) {
	lines := independentLines(confirmRows())
	want := []string{
		"tools we did not write, same run:",
		"  testpmd → sidecar, encap   64 B blast: 0.500 Mpps, 5.00× QEMU's (stream); vs our vhost-user front end 1.100 Mpps: 0.45×, differ by more than noise (±18%)",
		"  testpmd → sidecar, encap 1500 B blast: 1.000 Mpps, 10.00× QEMU's (stream); vs our vhost-user front end 1.000 Mpps: 1.00×, runs too far apart to tell (±100%)",
		"  testpmd → sidecar, decap   64 B blast: 0.290 Mpps, 2.90× QEMU's (stream); vs our vhost-user front end 0.300 Mpps: 0.97×, agree within noise (±10%)",
		"  trafgen → sidecar, decap   64 B: ≥ 2.50× QEMU's rate (sidecar lost nothing, trafgen was its limit; QEMU lost 49.0%); our blaster, blast: 3.00×; our blaster, lossless: 2.00×",
		"  trafgen → vhostuser, decap   64 B: 2.00× QEMU's rate; our blaster, blast: 3.00×",
	}
	if !slices.Equal(lines, want) {
		t.Errorf("lines:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	plain := slices.DeleteFunc(confirmRows(), func(r row) bool { return r.Path == pathTestpmd || r.Mode == modeTrafgen })
	if got := independentLines(plain); got != nil {
		t.Errorf("lines without trafgen or testpmd rows: %q", got)
	}
}

// TestFindToolsMissing: without trafgen and dpdk-testpmd on PATH their
// rows are left out, each with a reason.
func TestFindToolsMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	c := findTools(config{paths: []string{pathSidecar, pathTestpmd, pathQEMU}, dirs: []string{dirDecap}, trafgen: true})
	if slices.Contains(c.paths, pathTestpmd) || c.trafgen || c.testpmdBin != "" || c.trafgenBin != "" {
		t.Errorf("paths %v, trafgen %v, bins %q %q: want both left out", c.paths, c.trafgen, c.testpmdBin, c.trafgenBin)
	}
	got := strings.Join(c.skipped, "\n")
	for _, want := range []string{"testpmd rows not measured: dpdk-testpmd not installed", "trafgen rows not measured: trafgen not installed"} {
		if !strings.Contains(got, want) {
			t.Errorf("reasons %q lack %q", got, want)
		}
	}
	if c := findTools(config{paths: []string{pathSidecar}, dirs: []string{dirEncap}, trafgen: true}); c.trafgen || len(c.skipped) != 0 {
		t.Errorf("encap only: trafgen %v, skipped %q: want off without a reason", c.trafgen, c.skipped)
	}
}
