package main

import "time"

// losslessSearch says how to look for the highest rate within a loss tolerance.
type losslessSearch struct {
	steps  int           // trials per search
	warm   time.Duration // warm-up of each trial
	window time.Duration // measurement window of each trial
	tolPct float64       // highest loss, in percent of sent, that still passes
}

// passes reports whether a trial ran cleanly within the tolerance.
func (s losslessSearch) passes(t trialResult) bool {
	return t.Err == "" && t.Sent > 0 && t.LossPct <= s.tolPct
}

// search runs paced trials of base's path, direction and size: first at
// guess packets/s, then bisecting between the best passing rate and the
// lowest failing one (hi, the blaster's flat-out rate, to begin with). It
// returns the passing trial with the highest delivered rate (a zero
// result if none passed or hi is not positive) and every step, in order.
func (s losslessSearch) search(r *runner, base trialSpec, guess, hi float64, progress func(trialResult)) (trialResult, []trialResult) {
	var best trialResult
	var steps []trialResult
	if hi <= 0 {
		best.Err = "no flat-out rate to search under"
		return best, steps
	}
	lo := 0.0
	rate := min(guess, hi)
	for range s.steps {
		spec := base
		spec.rate, spec.warm, spec.window = rate, s.warm, s.window
		t := r.run(spec)
		steps = append(steps, t)
		progress(t)
		if s.passes(t) {
			lo = rate
			if t.Mpps > best.Mpps {
				best = t
			}
		} else {
			hi = rate
		}
		rate = (lo + hi) / 2
	}
	return best, steps
}
