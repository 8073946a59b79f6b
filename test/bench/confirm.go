package main

import (
	"fmt"
	"slices"
)

// minNoise is the smallest difference between two rows still called noise:
// on this shared 2-core machine rates move by that much from run to run;
// past maxNoise the runs are too far apart to tell agreement at all.
const (
	minNoise = 0.10
	maxNoise = 0.25
)

// noLossPct is the loss (percent) at or under which a device is taken to
// have kept up with its generator (the lossless search's default tolerance).
const noLossPct = 0.01

// independentLines says, under the table, what the tools we did not write
// show: with trafgen as the network side, each device's decap rate against
// QEMU's beside the same ratio with our blaster; with testpmd as the
// vhost-user front end, the sidecar against QEMU (stream: QEMU has no
// vhost-user back end) and against our own front end, and whether those
// two agree within the runs' noise.
func independentLines(rows []row) []string {
	find := func(path, dir string, size int, mode string) *row {
		i := slices.IndexFunc(rows, func(r row) bool {
			return r.Path == path && r.Direction == dir && r.FrameBytes == size && r.Mode == mode
		})
		if i < 0 {
			return nil
		}
		return &rows[i]
	}
	var out []string
	for _, r := range rows {
		switch {
		case r.Mode == modeTrafgen && r.Direction == dirDecap && r.Path != pathQEMU:
			q := find(pathQEMU, dirDecap, r.FrameBytes, modeTrafgen)
			l := fmt.Sprintf("  trafgen → %s, decap %4d B: %s QEMU's rate", r.Path, r.FrameBytes, times(r.RatioQEMU))
			if r.RatioQEMU != nil && r.LossPct <= noLossPct && q != nil && q.LossPct > noLossPct {
				l = fmt.Sprintf("  trafgen → %s, decap %4d B: ≥ %s QEMU's rate (%s lost nothing, trafgen was its limit; QEMU lost %.1f%%)",
					r.Path, r.FrameBytes, times(r.RatioQEMU), r.Path, q.LossPct)
			}
			for _, mode := range []string{modeBlast, modeLossless} {
				if b := find(r.Path, dirDecap, r.FrameBytes, mode); b != nil && b.RatioQEMU != nil {
					l += fmt.Sprintf("; our blaster, %s: %s", mode, times(b.RatioQEMU))
				}
			}
			out = append(out, l)
		case r.Path == pathTestpmd && r.Mode == modeBlast:
			l := fmt.Sprintf("  testpmd → sidecar, %s %4d B blast: %.3f Mpps, %s QEMU's (stream)", r.Direction, r.FrameBytes, r.Mpps, times(r.RatioQEMU))
			if v := find(pathVhost, r.Direction, r.FrameBytes, modeBlast); v != nil {
				l += "; " + agreement(r, *v)
			}
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return append([]string{"tools we did not write, same run:"}, out...)
}

// times prints a ratio as "2.10×", or "-" when there is none.
func times(x *float64) string {
	if x == nil {
		return "-"
	}
	return fmtRatio(x) + "×"
}

// agreement compares the testpmd row t with our front end's row v: their
// ratio, and whether it is within the noise of either row's runs (at least
// minNoise; past maxNoise no verdict).
func agreement(t, v row) string {
	if v.Mpps == 0 {
		return "our vhost-user front end: no rate"
	}
	x := t.Mpps / v.Mpps
	tol := max(spread(t), spread(v), minNoise)
	verdict := "agree within noise"
	switch {
	case tol > maxNoise:
		verdict = "runs too far apart to tell"
	case x < 1-tol || x > 1+tol:
		verdict = "differ by more than noise"
	}
	return fmt.Sprintf("vs our vhost-user front end %.3f Mpps: %.2f×, %s (±%.0f%%)", v.Mpps, x, verdict, 100*tol)
}

// spread is how far a row's runs are apart: (max − min) / median of the
// delivered rates of the runs that measured something.
func spread(r row) float64 {
	var xs []float64
	for _, t := range r.Runs {
		if t.Sent > 0 || t.Err == "" {
			xs = append(xs, t.Mpps)
		}
	}
	m := median(xs)
	if len(xs) < 2 || m == 0 {
		return 0
	}
	return (slices.Max(xs) - slices.Min(xs)) / m
}

// tsoLines says, under the table, how the guest-TSO rows compare with the
// per-frame vhost-user rows of the same frame size (issue 5's bar: 2x).
func tsoLines(rows []row) []string {
	var out []string
	for _, r := range rows {
		if r.Path != pathVhostTSO {
			continue
		}
		l := fmt.Sprintf("guest TSO → sidecar, encap %4d B frames: %.3f Mpps", r.FrameBytes, r.Mpps)
		if r.RatioLimit != nil {
			l += fmt.Sprintf(", %.2f× the bare per-packet sendmmsg→recvmmsg pair", *r.RatioLimit)
		}
		i := slices.IndexFunc(rows, func(v row) bool {
			return v.Path == pathVhost && v.Direction == dirEncap && v.FrameBytes == r.FrameBytes && v.Mode == modeBlast
		})
		if i >= 0 && rows[i].Mpps > 0 {
			l += fmt.Sprintf(", %.2f× the per-frame vhost-user rate (%.3f Mpps)", r.Mpps/rows[i].Mpps, rows[i].Mpps)
		}
		out = append(out, l)
	}
	return out
}
