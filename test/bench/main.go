// Command bench measures the l2tpv3-netdev sidecar against QEMU's own
// -netdev l2tpv3 (QEMU -M none, a hub between -netdev stream and -netdev
// l2tpv3) and against bare UDP over loopback, in both directions, with
// independent generators: a QEMU-stream writer and reader, and a
// sendmmsg/recvmmsg L2TPv3 blaster and sink; and, to confirm the ratios
// with tools we did not write, netsniff-ng's trafgen as the network side
// of decap and DPDK's testpmd as the sidecar's vhost-user front end.
//
// Run it from the module root: go run ./test/bench [flags].
package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// config is the command line.
type config struct {
	runs         int
	warm, window time.Duration
	drainMax     time.Duration
	sizes        []int
	paths, dirs  []string
	lossless     losslessSearch
	noLossless   bool
	batch        int
	sidecarBatch int
	writeBytes   int
	sinkRcvbuf   int
	sinkGRO      bool
	trafgen      bool
	sidecarBin   string
	qemuBin      string
	trafgenBin   string
	testpmdBin   string
	skipped      []string // what was left out, and why
	out          string
	chart        string
	chartFrom    string
}

// parseFlags reads the command line into a config.
func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.IntVar(&c.runs, "runs", 3, "runs of every trial; the table shows medians")
	fs.DurationVar(&c.warm, "warmup", 500*time.Millisecond, "warm-up before each measurement window")
	fs.DurationVar(&c.window, "window", 2*time.Second, "measurement window of each blast trial")
	fs.DurationVar(&c.drainMax, "drain", 3*time.Second, "longest wait for in-flight frames after the source stops")
	sizes := fs.String("sizes", "64,1500", "Ethernet frame sizes in bytes, comma-separated")
	paths := fs.String("paths", "sidecar,vhostuser,vhostuser-tso,testpmd,qemu,limit",
		"devices under test: sidecar (stream), vhostuser (the harness's vhost-user front end), vhostuser-tso (the same front end sending 64 KiB TSO super-frames cut into frames of each size; encap, sizes >= 576), testpmd (DPDK testpmd as the vhost-user front end; blast only, skipped if dpdk-testpmd is missing), qemu, limit")
	dirs := fs.String("dirs", "encap,decap", "directions: encap (VM→net), decap (net→VM)")
	fs.BoolVar(&c.noLossless, "no-lossless", false, "skip the decap lossless-rate search")
	fs.BoolVar(&c.trafgen, "trafgen", true, "also run decap (sidecar, vhostuser, qemu) and the limit with netsniff-ng's trafgen flat out as the network side (mode trafgen; skipped if trafgen is missing or not root)")
	fs.IntVar(&c.lossless.steps, "lossless-steps", 6, "paced trials per lossless-rate search")
	fs.DurationVar(&c.lossless.warm, "lossless-warmup", 300*time.Millisecond, "warm-up of each lossless trial")
	fs.DurationVar(&c.lossless.window, "lossless-window", time.Second, "window of each lossless trial")
	fs.Float64Var(&c.lossless.tolPct, "lossless-tol", 0.01, "loss in percent still counted as lossless")
	fs.IntVar(&c.batch, "batch", 64, "generator messages per sendmmsg/recvmmsg")
	fs.IntVar(&c.sidecarBatch, "sidecar-batch", 64, "the sidecar's --batch")
	fs.IntVar(&c.writeBytes, "write-bytes", 128<<10, "stream writer bytes per write")
	fs.BoolVar(&c.sinkGRO, "sink-gro", true, "encap sink takes coalesced runs (UDP_GRO), like a receiver behind a GRO NIC")
	fs.IntVar(&c.sinkRcvbuf, "sink-rcvbuf", 32<<20, "UDP sink SO_RCVBUF (forced; the limit's and encap sink's)")
	fs.StringVar(&c.sidecarBin, "sidecar", "", "sidecar binary (default: go build ./cmd/l2tpv3-netdev)")
	fs.StringVar(&c.qemuBin, "qemu", "qemu-system-x86_64", "QEMU binary")
	fs.StringVar(&c.out, "out", "test/bench/out/results.json", "JSON results file (relative: to the module root; empty: none)")
	fs.StringVar(&c.chart, "chart", "test/bench/out/chart.png", "PNG bar chart (relative: to the module root; empty: none)")
	fs.StringVar(&c.chartFrom, "chart-from", "", "only draw -chart from this results file, measuring nothing")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err == nil {
			err = checkFrameSize(n)
		}
		if err != nil {
			return c, fmt.Errorf("-sizes: %v", err)
		}
		c.sizes = append(c.sizes, n)
	}
	var err error
	if c.paths, err = listFlag(*paths, pathSidecar, pathVhost, pathVhostTSO, pathTestpmd, pathQEMU, pathLimit); err != nil {
		return c, fmt.Errorf("-paths: %w", err)
	}
	if c.dirs, err = listFlag(*dirs, dirEncap, dirDecap); err != nil {
		return c, fmt.Errorf("-dirs: %w", err)
	}
	if c.runs < 1 || c.batch < 1 || c.batch > 1024 || c.window <= 0 {
		return c, fmt.Errorf("-runs, -window must be positive; -batch 1..1024")
	}
	return c, nil
}

// listFlag splits a comma-separated flag and checks each item is allowed.
func listFlag(v string, allowed ...string) ([]string, error) {
	var out []string
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if !slices.Contains(allowed, s) {
			return nil, fmt.Errorf("%q: want some of %s", s, strings.Join(allowed, ","))
		}
		out = append(out, s)
	}
	return out, nil
}

// main runs the benchmark and prints the table.
func main() {
	c, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	switch {
	case err != nil:
	case c.chartFrom != "":
		err = chartFrom(c.chartFrom, c.chart)
	default:
		err = run(c)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// run builds what it needs, runs every trial, and reports.
func run(c config) error {
	tmp, err := os.MkdirTemp("", "l2tpv3-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	c = findTools(locate(c, tmp))
	r := &runner{batch: c.batch, writeBytes: c.writeBytes, sinkRcvbuf: c.sinkRcvbuf, sinkGRO: c.sinkGRO, drainMax: c.drainMax, dir: tmp,
		trafgenBin: c.trafgenBin,
		devices: map[string]func() device{
			pathSidecar: func() device { return &sidecar{bin: c.sidecarBin, batch: c.sidecarBatch} },
			pathQEMU:    func() device { return &qemu{bin: c.qemuBin} },
			pathVhost: func() device {
				return &vhostSidecar{sidecar: sidecar{bin: c.sidecarBin, batch: c.sidecarBatch}}
			},
			pathVhostTSO: func() device {
				return &vhostSidecar{sidecar: sidecar{bin: c.sidecarBin, batch: c.sidecarBatch}, tso: true}
			},
			pathTestpmd: func() device {
				return &testpmdSidecar{sidecar: sidecar{bin: c.sidecarBin, batch: c.sidecarBatch},
					pmdBin: c.testpmdBin, mbufSize: testpmdMbufSize(slices.Max(c.sizes))}
			},
		}}
	m := startMeta(c)
	cells := measureAll(c, r)
	finishMeta(m)
	order := slices.SortedFunc(maps.Keys(cells), compareCells)
	rows := buildRows(cells, order)
	printTable(os.Stdout, rows)
	for _, l := range append(append(tsoLines(rows), independentLines(rows)...), c.skipped...) {
		fmt.Println(l)
	}
	if c.sinkGRO {
		fmt.Println("encap sink UDP_GRO=true: the sidecar's GSO runs arrive coalesced (-sink-gro=false cuts them before the sink's socket)")
	} else {
		fmt.Println("encap sink UDP_GRO=false: GSO runs are cut into datagrams before the sink's socket")
	}
	if err := saveChart(c.chart, m, rows); err != nil {
		return err
	}
	if c.out == "" {
		return nil
	}
	if err := writeJSON(c.out, m, rows); err != nil {
		return err
	}
	fmt.Printf("\nwrote %s\n", c.out)
	return nil
}

// locate anchors a relative -out at the module root and builds the sidecar
// when no binary was given; without one, the sidecar is left out.
func locate(c config, tmp string) config {
	root, err := moduleRoot()
	if c.out != "" && !filepath.IsAbs(c.out) && err == nil {
		c.out = filepath.Join(root, c.out)
	}
	needs := func(p string) bool {
		return p == pathSidecar || p == pathVhost || p == pathVhostTSO || p == pathTestpmd
	}
	if !slices.ContainsFunc(c.paths, needs) || c.sidecarBin != "" {
		return c
	}
	if err == nil {
		c.sidecarBin, err = buildSidecar(root, tmp)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: sidecar not measured: %v\n", err)
		c.paths = slices.DeleteFunc(c.paths, needs)
	}
	return c
}

// findTools looks up trafgen and dpdk-testpmd and leaves out, saying why,
// the trials of a tool that is missing or cannot run here.
func findTools(c config) config {
	skip := func(what, why string) {
		msg := fmt.Sprintf("%s not measured: %s", what, why)
		fmt.Fprintln(os.Stderr, "bench:", msg)
		c.skipped = append(c.skipped, msg)
	}
	if slices.Contains(c.paths, pathTestpmd) {
		var err error
		if c.testpmdBin, err = exec.LookPath("dpdk-testpmd"); err != nil {
			skip("testpmd rows", "dpdk-testpmd not installed (Debian: apt-get install dpdk-dev; test/install-deps.sh does)")
		} else if _, err = exec.LookPath("stdbuf"); err != nil {
			skip("testpmd rows", "stdbuf (coreutils) not found")
		} else if _, err = exec.LookPath("taskset"); err != nil {
			skip("testpmd rows", "taskset (util-linux) not found: testpmd trials pin the sidecar away from testpmd's polling core")
		}
		if err != nil {
			c.testpmdBin = ""
			c.paths = slices.DeleteFunc(c.paths, func(p string) bool { return p == pathTestpmd })
		}
	}
	if !c.trafgen || !slices.Contains(c.dirs, dirDecap) {
		c.trafgen = false
		return c
	}
	var err error
	if c.trafgenBin, err = exec.LookPath("trafgen"); err != nil {
		skip("trafgen rows", "trafgen not installed (Debian: apt-get install netsniff-ng; test/install-deps.sh does)")
	} else if _, err = exec.LookPath("taskset"); err != nil {
		skip("trafgen rows", "taskset (util-linux) not found: trafgen trials pin the device away from trafgen's core")
	} else if os.Geteuid() != 0 {
		err = errors.New("not root")
		skip("trafgen rows", "trafgen needs root (a packet socket on lo, and lo's route_localnet and accept_local set for the trial)")
	}
	c.trafgen = err == nil
	return c
}

// measureAll runs every run of the flat-out trials (our generators', then
// trafgen's), then every run of the lossless searches (which start from
// the flat-out medians).
func measureAll(c config, r *runner) map[cellKey]*cell {
	cells := map[cellKey]*cell{}
	at := func(k cellKey) *cell {
		if cells[k] == nil {
			cells[k] = &cell{}
		}
		return cells[k]
	}
	for run := 1; run <= c.runs; run++ {
		for _, k := range append(blastCells(c), trafgenCells(c)...) {
			t := r.run(trialSpec{path: k.Path, dir: k.Dir, size: k.Size, trafgen: k.Mode == modeTrafgen, warm: c.warm, window: c.window})
			progress(run, c.runs, k, t)
			at(k).Runs = append(at(k).Runs, t)
		}
	}
	if c.noLossless || !slices.Contains(c.dirs, dirDecap) {
		return cells
	}
	for run := 1; run <= c.runs; run++ {
		for _, k := range losslessCells(c) {
			blast := buildRows(cells, []cellKey{{k.Path, k.Dir, k.Size, modeBlast}})[0]
			base := trialSpec{path: k.Path, dir: k.Dir, size: k.Size}
			best, steps := c.lossless.search(r, base, blast.Mpps*1e6, blast.OfferedMpps*1e6,
				func(t trialResult) { progress(run, c.runs, k, t) })
			at(k).Runs = append(at(k).Runs, best)
			at(k).Search = append(at(k).Search, steps)
		}
	}
	return cells
}

// blastCells lists one run's flat-out trials, interleaving devices so that
// background noise spreads over all of them.
func blastCells(c config) []cellKey {
	var ks []cellKey
	for _, size := range c.sizes {
		if slices.Contains(c.paths, pathLimit) {
			ks = append(ks, cellKey{pathLimit, dirLoopback, size, modeBlast})
		}
		for _, dir := range c.dirs {
			for _, p := range c.paths {
				if p != pathLimit && (p != pathVhostTSO || dir == dirEncap && size >= tsoMinFrame) {
					ks = append(ks, cellKey{p, dir, size, modeBlast})
				}
			}
		}
	}
	return ks
}

// trafgenCells lists one run's trafgen trials: decap for the stream and
// vhost-user sidecar and QEMU, and the loopback limit. Not testpmd:
// trafgen's core and testpmd's busy-polling one would leave the sidecar
// none of its own on this machine.
func trafgenCells(c config) []cellKey {
	if !c.trafgen {
		return nil
	}
	var ks []cellKey
	for _, size := range c.sizes {
		for _, p := range c.paths {
			switch p {
			case pathSidecar, pathVhost, pathQEMU:
				ks = append(ks, cellKey{p, dirDecap, size, modeTrafgen})
			case pathLimit:
				ks = append(ks, cellKey{p, dirLoopback, size, modeTrafgen})
			}
		}
	}
	return ks
}

// losslessCells lists one run's lossless searches: decap for each device
// (but testpmd, which is started afresh for every trial), and the loopback
// limit.
func losslessCells(c config) []cellKey {
	var ks []cellKey
	for _, size := range c.sizes {
		for _, p := range c.paths {
			if p == pathTestpmd || p == pathVhostTSO {
				continue
			}
			dir := dirDecap
			if p == pathLimit {
				dir = dirLoopback
			}
			ks = append(ks, cellKey{p, dir, size, modeLossless})
		}
	}
	return ks
}

// compareCells orders table rows: direction, size, mode, then device.
func compareCells(a, b cellKey) int {
	rank := func(s string, order ...string) int { return slices.Index(order, s) }
	modes := []string{modeBlast, modeLossless, modeTrafgen}
	paths := []string{pathSidecar, pathVhost, pathVhostTSO, pathTestpmd, pathQEMU, pathLimit}
	return cmp.Or(
		cmp.Compare(rank(a.Dir, dirEncap, dirDecap, dirLoopback), rank(b.Dir, dirEncap, dirDecap, dirLoopback)),
		cmp.Compare(a.Size, b.Size),
		cmp.Compare(rank(a.Mode, modes...), rank(b.Mode, modes...)),
		cmp.Compare(rank(a.Path, paths...), rank(b.Path, paths...)))
}

// progress prints one trial's outcome on stderr.
func progress(run, runs int, k cellKey, t trialResult) {
	paced := ""
	if t.RateMpps > 0 {
		paced = fmt.Sprintf(" paced %.3f", t.RateMpps)
	}
	fmt.Fprintf(os.Stderr, "[%d/%d] %-7s %-8s %4dB %-8s%s: %.3f Mpps (offered %.3f), loss %.3f%% %s %s\n",
		run, runs, k.Path, k.Dir, k.Size, k.Mode, paced, t.Mpps, t.OfferedMpps, t.LossPct,
		notes([]trialResult{t}), t.Err)
}

// moduleRoot returns the directory of the enclosing Go module.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	mod := strings.TrimSpace(string(out))
	if err != nil || mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the module (go env GOMOD: %q, %v)", mod, err)
	}
	return filepath.Dir(mod), nil
}

// buildSidecar compiles ./cmd/l2tpv3-netdev of the module at root into dir.
func buildSidecar(root, dir string) (string, error) {
	bin := filepath.Join(dir, "l2tpv3-netdev")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/l2tpv3-netdev")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/l2tpv3-netdev: %v\n%s", err, out)
	}
	return bin, nil
}
