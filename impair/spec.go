// Package impair degrades one direction of a wire the way Linux's netem
// does: delay with jitter, random and Gilbert–Elliott loss, a rate limit,
// duplication, corruption and reordering, spelled in netem's vocabulary and
// units. An Engine is the deterministic core (a seeded random source, a
// bounded delay line, no clock of its own); a Line puts it between two
// goroutines. Nothing here allocates per frame.
package impair

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// DefaultLimit is the delay line's length in frames when the spec gives no
// limit (netem's default).
const DefaultLimit = 1000

// MaxLimit bounds limit: every slot is preallocated.
const MaxLimit = 100000

// Distribution shapes the jitter around the delay.
type Distribution uint8

// The distributions netem names that the Engine draws.
const (
	Uniform Distribution = iota // delay ± jitter, every value equally likely
	Normal                      // delay + jitter × N(0,1), cut at 0
)

// String names the distribution as netem does.
func (d Distribution) String() string {
	if d == Normal {
		return "normal"
	}
	return "uniform"
}

// GilbertElliott is netem's `loss gemodel p r 1-h 1-k`: a good and a bad
// state; P is the chance to go bad, R to recover, and each state loses
// frames with its own probability.
type GilbertElliott struct {
	P, R       float64 // good → bad, bad → good, per frame
	LossBad    float64 // 1-h: loss in the bad state (default 1)
	LossGood   float64 // 1-k: loss in the good state (default 0)
	Configured bool    // the spec names gemodel
}

// Spec is one direction's impairments. The zero Spec impairs nothing.
type Spec struct {
	Delay        time.Duration
	Jitter       time.Duration
	Distribution Distribution
	Loss         float64 // random loss probability
	GE           GilbertElliott
	Rate         uint64 // bits per second of Ethernet frame; 0: unlimited
	Duplicate    float64
	Corrupt      float64
	Reorder      float64 // share of frames sent at once, past the delayed ones
	Gap          int     // reorder only every Gap-th frame (netem's gap; 1 by default)
	Limit        int     // delay line length in frames; 0: DefaultLimit, the sender held back when full
	Seed         uint64  // random source seed; 0 with SeedSet false: chosen at start
	SeedSet      bool
}

// Active reports whether the spec impairs anything.
func (s Spec) Active() bool { return s != Spec{} }

// DropsWhenFull reports whether a full line drops frames instead of
// holding the sender back: with an explicit limit (as netem), or a rate
// (a bottleneck's queue overflows).
func (s Spec) DropsWhenFull() bool { return s.Limit > 0 || s.Rate > 0 }

// MeanLoss is the share of frames lost in the long run: the random loss,
// or the Gilbert–Elliott chain's: frames arriving in the bad state (its
// steady-state share p/(p+r)) lose 1-h, the others 1-k.
func (s Spec) MeanLoss() float64 {
	g := s.GE
	if !g.Configured || g.P+g.R == 0 {
		return s.Loss
	}
	bad := g.P / (g.P + g.R)
	return bad*g.LossBad + (1-bad)*g.LossGood
}

// Capacity is the delay line's length in frames.
func (s Spec) Capacity() int {
	if s.Limit > 0 {
		return s.Limit
	}
	return DefaultLimit
}

// Parse reads a netem-style spec such as
//
//	delay 50ms 10ms distribution normal loss 1% rate 10mbit seed 7
//
// Words may also be written key=value (delay=50ms). Each error names the
// bad token and says what was expected.
func Parse(text string) (Spec, error) {
	p := parser{toks: strings.Fields(strings.ReplaceAll(text, "=", " "))}
	var s Spec
	for !p.done() {
		word := p.next()
		var err error
		switch word {
		case "delay":
			err = p.delay(&s)
		case "loss":
			err = p.loss(&s)
		case "rate":
			s.Rate, err = p.rate()
		case "duplicate":
			s.Duplicate, err = p.percent("duplicate")
		case "corrupt":
			s.Corrupt, err = p.percent("corrupt")
		case "reorder":
			err = p.reorder(&s)
		case "limit":
			s.Limit, err = p.count("limit", 1, MaxLimit)
		case "seed":
			err = p.seed(&s)
		default:
			err = fmt.Errorf("impairment %q: want delay, loss, rate, duplicate, corrupt, reorder, limit or seed", word)
		}
		if err != nil {
			return Spec{}, err
		}
	}
	return s, s.check()
}

// check refuses combinations netem refuses or the Engine cannot honour.
func (s Spec) check() error {
	if s.Reorder > 0 && s.Delay == 0 {
		return errors.New("reorder: needs a delay (the frames not reordered are the delayed ones)")
	}
	if s.Loss > 0 && s.GE.Configured {
		return errors.New("loss: random and gemodel are exclusive")
	}
	return nil
}

// parser walks the spec's words.
type parser struct {
	toks []string
	i    int
}

func (p *parser) done() bool   { return p.i >= len(p.toks) }
func (p *parser) next() string { p.i++; return p.toks[p.i-1] }

// peek is the next word, "" at the end.
func (p *parser) peek() string {
	if p.done() {
		return ""
	}
	return p.toks[p.i]
}

// arg takes the value that must follow key.
func (p *parser) arg(key string) (string, error) {
	if p.done() {
		return "", fmt.Errorf("%s: missing value", key)
	}
	return p.next(), nil
}

// delay reads `delay TIME [JITTER [distribution NAME]]`.
func (p *parser) delay(s *Spec) error {
	v, err := p.arg("delay")
	if err != nil {
		return err
	}
	if s.Delay, err = parseTime("delay", v); err != nil {
		return err
	}
	if looksLikeTime(p.peek()) {
		if s.Jitter, err = parseTime("delay jitter", p.next()); err != nil {
			return err
		}
	}
	if strings.HasSuffix(p.peek(), "%") {
		return fmt.Errorf("delay correlation %q: not supported (jitter is drawn independently per frame)", p.peek())
	}
	if p.peek() == "distribution" {
		p.next()
		d, err := p.arg("distribution")
		if err != nil {
			return err
		}
		switch d {
		case "uniform":
			s.Distribution = Uniform
		case "normal":
			s.Distribution = Normal
		default:
			return fmt.Errorf("distribution %q: want uniform or normal", d)
		}
	}
	return nil
}

// loss reads `loss [random] PCT` or `loss gemodel p [r [1-h [1-k]]]`.
func (p *parser) loss(s *Spec) error {
	switch p.peek() {
	case "random":
		p.next()
	case "gemodel":
		p.next()
		return p.gemodel(&s.GE)
	case "state":
		return errors.New("loss state: the 4-state model is not supported (use gemodel)")
	}
	var err error
	if s.Loss, err = p.percent("loss"); err != nil {
		return err
	}
	if strings.HasSuffix(p.peek(), "%") {
		return fmt.Errorf("loss correlation %q: not supported (use loss gemodel for bursts)", p.peek())
	}
	return nil
}

// gemodel reads p [r [1-h [1-k]]] with tc's defaults: r = 1-p, 1-h = 100 %,
// 1-k = 0 %.
func (p *parser) gemodel(g *GilbertElliott) error {
	var err error
	*g = GilbertElliott{LossBad: 1, Configured: true}
	if g.P, err = p.percent("loss gemodel p"); err != nil {
		return err
	}
	g.R = 1 - g.P
	opt := []*float64{&g.R, &g.LossBad, &g.LossGood}
	names := []string{"loss gemodel r", "loss gemodel 1-h", "loss gemodel 1-k"}
	for i := 0; i < len(opt) && strings.HasSuffix(p.peek(), "%"); i++ {
		if *opt[i], err = p.percent(names[i]); err != nil {
			return err
		}
	}
	return nil
}

// reorder reads `reorder PCT [gap N]`; netem's gap defaults to 1 (any frame).
func (p *parser) reorder(s *Spec) error {
	var err error
	if s.Reorder, err = p.percent("reorder"); err != nil {
		return err
	}
	if strings.HasSuffix(p.peek(), "%") {
		return fmt.Errorf("reorder correlation %q: not supported", p.peek())
	}
	s.Gap = 1
	if p.peek() == "gap" {
		p.next()
		s.Gap, err = p.count("reorder gap", 1, 1<<30)
	}
	return err
}

// seed reads the random source's seed.
func (p *parser) seed(s *Spec) error {
	v, err := p.arg("seed")
	if err != nil {
		return err
	}
	if s.Seed, err = strconv.ParseUint(v, 0, 64); err != nil {
		return fmt.Errorf("seed %q: want an unsigned integer", v)
	}
	s.SeedSet = true
	return nil
}

// percent reads "N%" as a probability.
func (p *parser) percent(key string) (float64, error) {
	v, err := p.arg(key)
	if err != nil {
		return 0, err
	}
	num, ok := strings.CutSuffix(v, "%")
	f, perr := strconv.ParseFloat(num, 64)
	if !ok || perr != nil || f < 0 || f > 100 {
		return 0, fmt.Errorf("%s %q: want a percentage 0%%..100%%", key, v)
	}
	return f / 100, nil
}

// count reads an integer within [lo, hi].
func (p *parser) count(key string, lo, hi int) (int, error) {
	v, err := p.arg(key)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%s %q: want an integer %d..%d", key, v, lo, hi)
	}
	return n, nil
}

// timeUnits are tc's time suffixes.
var timeUnits = []struct {
	suffix string
	unit   time.Duration
}{{"usecs", time.Microsecond}, {"usec", time.Microsecond}, {"us", time.Microsecond},
	{"msecs", time.Millisecond}, {"msec", time.Millisecond}, {"ms", time.Millisecond},
	{"secs", time.Second}, {"sec", time.Second}, {"s", time.Second}}

// looksLikeTime reports whether a word starts with a digit or a point: a
// jitter after the delay.
func looksLikeTime(w string) bool {
	return w != "" && (w[0] >= '0' && w[0] <= '9' || w[0] == '.') && !strings.HasSuffix(w, "%")
}

// parseTime reads tc's "50ms", "1.5s", "200us"; a unit is required.
func parseTime(key, v string) (time.Duration, error) {
	for _, u := range timeUnits {
		num, ok := strings.CutSuffix(v, u.suffix)
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(num, 64)
		if err != nil || f < 0 || f*float64(u.unit) > float64(time.Hour) {
			break
		}
		return time.Duration(f * float64(u.unit)), nil
	}
	return 0, fmt.Errorf("%s %q: want a time such as 50ms, 200us or 1s (0..1h)", key, v)
}

// rateUnits are tc's rate suffixes, in bits per second; the "bps" ones
// are bytes per second, as in tc.
var rateUnits = []struct {
	suffix string
	bits   float64
}{{"kibit", 1024}, {"mibit", 1 << 20}, {"gibit", 1 << 30}, {"kbit", 1e3}, {"mbit", 1e6},
	{"gbit", 1e9}, {"bit", 1}, {"kibps", 8 * 1024}, {"mibps", 8 << 20}, {"gibps", 8 << 30},
	{"kbps", 8e3}, {"mbps", 8e6}, {"gbps", 8e9}, {"bps", 8}}

// rate reads tc's "10mbit", "1gbit", "500kbps"; a unit is required.
func (p *parser) rate() (uint64, error) {
	v, err := p.arg("rate")
	if err != nil {
		return 0, err
	}
	lv := strings.ToLower(v)
	for _, u := range rateUnits {
		num, ok := strings.CutSuffix(lv, u.suffix)
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(num, 64)
		if err != nil || f*u.bits < 8 || f*u.bits > 1e12 {
			break
		}
		return uint64(f * u.bits), nil
	}
	return 0, fmt.Errorf("rate %q: want a rate such as 10mbit, 512kbit or 1gbit (8bit..1tbit)", v)
}

// String writes the spec back in netem's words, canonical units, what
// Parse reads ("" for no impairment).
func (s Spec) String() string {
	var w []string
	if s.Delay > 0 || s.Jitter > 0 {
		w = append(w, "delay", tcTime(s.Delay))
		if s.Jitter > 0 {
			w = append(w, tcTime(s.Jitter), "distribution", s.Distribution.String())
		}
	}
	if s.Loss > 0 {
		w = append(w, "loss", pct(s.Loss))
	}
	if g := s.GE; g.Configured {
		w = append(w, "loss", "gemodel", pct(g.P), pct(g.R), pct(g.LossBad), pct(g.LossGood))
	}
	if s.Rate > 0 {
		w = append(w, "rate", strconv.FormatUint(s.Rate, 10)+"bit")
	}
	if s.Duplicate > 0 {
		w = append(w, "duplicate", pct(s.Duplicate))
	}
	if s.Corrupt > 0 {
		w = append(w, "corrupt", pct(s.Corrupt))
	}
	if s.Reorder > 0 {
		w = append(w, "reorder", pct(s.Reorder), "gap", strconv.Itoa(s.Gap))
	}
	if s.Limit > 0 {
		w = append(w, "limit", strconv.Itoa(s.Limit))
	}
	if s.SeedSet {
		w = append(w, "seed", strconv.FormatUint(s.Seed, 10))
	}
	return strings.Join(w, " ")
}

// tcTime writes a duration in ms, or us below a millisecond's precision.
func tcTime(d time.Duration) string {
	if d%time.Millisecond == 0 {
		return strconv.FormatInt(int64(d/time.Millisecond), 10) + "ms"
	}
	return strconv.FormatFloat(float64(d)/1e3, 'f', -1, 64) + "us"
}

// pct writes a probability as a percentage.
func pct(f float64) string { return strconv.FormatFloat(f*100, 'g', -1, 64) + "%" }
