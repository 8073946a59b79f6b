package main

import (
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// chartRows is a small fixed results table: both directions at two sizes,
// blast and lossless decap, the loopback limit, a vhost-user row, a
// testpmd row, and trafgen rows.
func chartRows() []row {
	r := func(path, dir string, size int, mode string, mpps float64) row {
		return row{Path: path, Direction: dir, FrameBytes: size, Mode: mode, Mpps: mpps}
	}
	rows := []row{
		r(pathSidecar, dirEncap, 64, modeBlast, 3.49),
		r(pathVhost, dirEncap, 64, modeBlast, 2.10),
		r(pathQEMU, dirEncap, 64, modeBlast, 0.112),
		r(pathSidecar, dirEncap, 1500, modeBlast, 1.08),
		r(pathQEMU, dirEncap, 1500, modeBlast, 0.105),
		r(pathSidecar, dirDecap, 64, modeLossless, 0.156),
		r(pathQEMU, dirDecap, 64, modeLossless, 0.074),
		r(pathSidecar, dirDecap, 1500, modeLossless, 0.141),
		r(pathQEMU, dirDecap, 1500, modeLossless, 0.045),
		r(pathLimit, dirLoopback, 64, modeBlast, 0.193),
		r(pathLimit, dirLoopback, 1500, modeBlast, 0.159),
		r(pathLimit, dirLoopback, 64, modeLossless, 0.157),
		r(pathLimit, dirLoopback, 1500, modeLossless, 0.144),
		r(pathTestpmd, dirEncap, 64, modeBlast, 0.56),
		r(pathVhostTSO, dirEncap, 1500, modeBlast, 2.9),
		r(pathSidecar, dirDecap, 64, modeTrafgen, 0.150),
		r(pathQEMU, dirDecap, 64, modeTrafgen, 0.060),
		r(pathLimit, dirLoopback, 64, modeTrafgen, 0.200),
	}
	cells := map[cellKey]*cell{}
	var order []cellKey
	for _, x := range rows {
		k := cellKey{x.Path, x.Direction, x.FrameBytes, x.Mode}
		cells[k] = &cell{Runs: []trialResult{{Mpps: x.Mpps, OfferedMpps: x.Mpps, Sent: 1}}}
		order = append(order, k)
	}
	return buildRows(cells, order)
}

// TestChartPanels checks the layout: a panel per direction, the limit's
// loopback rows joined to every group of their size and mode, ratios only
// where QEMU was measured.
func TestChartPanels(t *testing.T) {
	ps := chartPanels(chartRows())
	if len(ps) != 2 || ps[0].dir != dirEncap || ps[1].dir != dirDecap {
		t.Fatalf("panels %+v: want encap, decap", ps)
	}
	enc := ps[0]
	if len(enc.groups) != 2 || enc.groups[0].Size != 64 || enc.groups[1].Size != 1500 {
		t.Fatalf("encap groups %+v", enc.groups)
	}
	if got := enc.values[pathLimit]; got[0] != 0.193 || got[1] != 0.159 {
		t.Errorf("encap limit bars %v: want the loopback blast rates", got)
	}
	if got := enc.values[pathVhost]; got[0] != 2.10 || got[1] != 0 {
		t.Errorf("vhost-user bars %v", got)
	}
	if r := enc.ratios[pathSidecar][0]; r == nil || *r < 31 || *r > 31.3 {
		t.Errorf("encap 64 sidecar ratio %v: want 3.49/0.112", r)
	}
	if got := ps[1].values[pathLimit]; got[0] != 0.157 {
		t.Errorf("decap limit bars %v: want the loopback lossless rates", got)
	}
	if r := enc.ratios[pathTestpmd][0]; r == nil || *r < 4.9 || *r > 5.1 {
		t.Errorf("encap 64 testpmd ratio %v: want 0.56/0.112", r)
	}
	dec := ps[1]
	if len(dec.groups) != 3 || dec.groups[2].Mode != modeTrafgen {
		t.Fatalf("decap groups %+v: want the trafgen group last", dec.groups)
	}
	if got := dec.values[pathLimit][2]; got != 0.200 {
		t.Errorf("trafgen limit bar %v: want trafgen's loopback rate", got)
	}
	if r := dec.ratios[pathSidecar][2]; r == nil || *r < 2.49 || *r > 2.51 {
		t.Errorf("trafgen sidecar ratio %v: want 0.150/0.060", r)
	}
}

// TestChartPNG renders the fixed rows and reads the file back: a PNG of
// the chart's size with bars of the sidecar's colour in it.
func TestChartPNG(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out", "chart.png")
	m := &meta{Started: time.Date(2026, 11, 21, 7, 0, 0, 0, time.UTC), Runs: 3}
	if err := writeChart(path, chartTitle(m), chartRows()); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != chartWidth || b.Dy() != chartHeight {
		t.Fatalf("size %v: want %dx%d", b, chartWidth, chartHeight)
	}
	counts := map[color.RGBA]int{}
	for y := 0; y < chartHeight; y += 2 {
		for x := 0; x < chartWidth; x += 2 {
			r, g, b, _ := img.At(x, y).RGBA()
			counts[color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(b >> 8), 0xff}]++
		}
	}
	for _, c := range chartColors {
		if counts[c.color] < 20 {
			t.Errorf("%s: %d pixels of its colour %v: bars missing", c.path, counts[c.color], c.color)
		}
	}
	if white := counts[color.RGBA{0xff, 0xff, 0xff, 0xff}]; white > chartWidth*chartHeight/4*97/100 {
		t.Errorf("%d of %d sampled pixels white: blank", white, chartWidth*chartHeight/4)
	}
	if title := chartTitle(m); !strings.Contains(title, "2026-11-21, median of 3") {
		t.Errorf("title %q: want the date and the number of runs", title)
	}
}

// TestChartFromResults re-renders a results file as written by writeJSON.
func TestChartFromResults(t *testing.T) {
	dir := t.TempDir()
	res := filepath.Join(dir, "results.json")
	if err := writeJSON(res, &meta{Started: time.Now(), Runs: 1}, chartRows()); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "c.png")
	if err := chartFrom(res, out); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(out); err != nil || st.Size() < 1000 {
		t.Fatalf("chart %v, %v", st, err)
	}
	if err := chartFrom(filepath.Join(dir, "missing.json"), out); err == nil {
		t.Error("a missing results file was accepted")
	}
}

// TestRatioLabelsUpright: labels wider than their bar read upwards.
func TestRatioLabelsUpright(t *testing.T) {
	x := 12.5
	l := ratioLabels([]float64{1, 0}, []*float64{&x, &x}, 0)
	if l == nil || len(l.text) != 1 || l.text[0] != "×12.5" {
		t.Fatalf("labels %+v: want one, for the bar with a value", l)
	}
	if w := l.widest(); w < vg.Points(10) || w > vg.Points(40) {
		t.Errorf("label width %v", w)
	}
	if l.style().Rotation != 0 {
		t.Error("level labels rotated")
	}
	l.upright = true
	if st := l.style(); st.Rotation != math.Pi/2 || st.XAlign != draw.XLeft {
		t.Errorf("upright style %+v", st)
	}
	if w := l.widest(); w < vg.Points(10) {
		t.Errorf("upright label's level width %v", w)
	}
}
