package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// cellKey names one cell of the results table.
type cellKey struct {
	Path, Dir string
	Size      int
	Mode      string
}

// cell is one table cell's measurements: one result per run and, for the
// lossless mode, every step of each run's search.
type cell struct {
	Runs   []trialResult
	Search [][]trialResult
}

// row is one line of the table and one entry of the JSON file.
type row struct {
	Path        string          `json:"path"`
	Direction   string          `json:"direction"`
	FrameBytes  int             `json:"frame_bytes"`
	Mode        string          `json:"mode"`
	Mpps        float64         `json:"mpps"`
	Gbps        float64         `json:"gbps"`
	OfferedMpps float64         `json:"offered_mpps"`
	RatioQEMU   *float64        `json:"ratio_qemu"`
	RatioLimit  *float64        `json:"ratio_limit"`
	LossPct     float64         `json:"loss_pct"`
	Notes       string          `json:"notes,omitempty"`
	Runs        []trialResult   `json:"runs"`
	Search      [][]trialResult `json:"search,omitempty"`
}

// median returns the median of xs (the mean of the middle two when even), 0 if empty.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// buildRows turns the cells, in the given order, into table rows with
// medians over runs and ratios to the QEMU and limit rows of the same
// size (and mode; the limit is UDP loopback, so it serves both directions).
func buildRows(cells map[cellKey]*cell, order []cellKey) []row {
	rows := make([]row, 0, len(order))
	mpps := map[cellKey]float64{}
	for _, k := range order {
		c := cells[k]
		var rate, offered, loss []float64
		for _, t := range c.Runs {
			if t.Sent == 0 && t.Err != "" {
				continue // never ran: no measurement to take a median of
			}
			rate = append(rate, t.Mpps)
			offered = append(offered, t.OfferedMpps)
			loss = append(loss, t.LossPct)
		}
		r := row{Path: k.Path, Direction: k.Dir, FrameBytes: k.Size, Mode: k.Mode,
			Mpps: median(rate), OfferedMpps: median(offered), LossPct: median(loss),
			Notes: notes(c.Runs), Runs: c.Runs, Search: c.Search}
		r.Gbps = r.Mpps * float64(k.Size) * 8 / 1e3
		mpps[k] = r.Mpps
		rows = append(rows, r)
	}
	for i := range rows {
		r := &rows[i]
		q := cellKey{pathQEMU, r.Direction, r.FrameBytes, r.Mode}
		l := cellKey{pathLimit, dirLoopback, r.FrameBytes, r.Mode}
		r.RatioQEMU = ratio(r.Mpps, mpps, q)
		r.RatioLimit = ratio(r.Mpps, mpps, l)
	}
	return rows
}

// ratio returns v over the rate of cell k, or nil if k was not measured.
func ratio(v float64, mpps map[cellKey]float64, k cellKey) *float64 {
	d, ok := mpps[k]
	if !ok || d == 0 {
		return nil
	}
	x := v / d
	return &x
}

// notes summarises, over all runs of a cell, what went wrong or was lost
// where: kernel drops at the device's socket, the device's own drop
// counters, drops at the harness's UDP sink, priming probes lost (the
// device's counters include them), loss none of those explain (in QEMU:
// frames its hub or a not-yet-connected netdev discards), late or bad
// frames, 100 ms intervals without a single delivery, errors.
func notes(runs []trialResult) string {
	var dutSock, sinkSock, internal, late, bad, probesLost uint64
	var stalls, errs, killed int
	var lost int64
	for _, t := range runs {
		lost += int64(t.Sent+t.ProbesSent) - int64(t.Delivered+t.ProbesDelivered)
		probesLost += t.ProbesSent - min(t.ProbesDelivered, t.ProbesSent)
		dutSock += t.DUTSocketDrops
		sinkSock += t.SinkSocketDrops
		late += t.Sink.Late
		bad += t.Sink.Bad
		stalls += t.StallIntervals
		if t.Err != "" {
			errs++
		}
		if t.DUT != nil {
			internal += t.DUT.internalDrops()
			if t.DUT.Killed {
				killed++
			}
		}
	}
	var parts []string
	add := func(name string, n uint64) {
		if n != 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", name, n))
		}
	}
	add("dut_sock_drops", dutSock)
	add("dut_internal_drops", internal)
	add("sink_sock_drops", sinkSock)
	add("probes_lost", probesLost)
	if other := lost - int64(dutSock+internal+sinkSock); other != 0 {
		parts = append(parts, fmt.Sprintf("unattributed_loss=%d", other))
	}
	add("late", late)
	add("bad", bad)
	add("stalled_100ms", uint64(stalls))
	add("errors", uint64(errs))
	add("killed", uint64(killed))
	return strings.Join(parts, " ")
}

// printTable writes the rows as an aligned text table.
func printTable(w io.Writer, rows []row) {
	fmt.Fprintf(w, "%-8s %-8s %5s %-8s %7s %7s %7s %7s %8s  %s\n",
		"path", "dir", "size", "mode", "Mpps", "Gbit/s", "xQEMU", "xlimit", "loss%", "notes (summed over runs)")
	for _, r := range rows {
		fmt.Fprintf(w, "%-8s %-8s %5d %-8s %7.3f %7.2f %7s %7s %8.3f  %s\n",
			r.Path, r.Direction, r.FrameBytes, r.Mode, r.Mpps, r.Gbps,
			fmtRatio(r.RatioQEMU), fmtRatio(r.RatioLimit), r.LossPct, r.Notes)
	}
}

// fmtRatio prints a ratio with two decimals, or "-" when there is none.
func fmtRatio(x *float64) string {
	if x == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f", *x)
}

// writeJSON writes the metadata and rows to path, creating its directory.
func writeJSON(path string, meta any, rows []row) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(struct {
		Meta any   `json:"meta"`
		Rows []row `json:"rows"`
	}{meta, rows}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
