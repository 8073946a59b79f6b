package impair_test

import (
	"strings"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/impair"
)

func TestParse(t *testing.T) {
	cases := []struct {
		in   string
		want impair.Spec
		back string // String() of the result
	}{
		{"", impair.Spec{}, ""},
		{"delay 50ms", impair.Spec{Delay: 50 * time.Millisecond}, "delay 50ms"},
		{"delay 50ms 10ms distribution normal", impair.Spec{Delay: 50 * time.Millisecond, Jitter: 10 * time.Millisecond,
			Distribution: impair.Normal}, "delay 50ms 10ms distribution normal"},
		{"delay=1.5s 200us", impair.Spec{Delay: 1500 * time.Millisecond, Jitter: 200 * time.Microsecond},
			"delay 1500ms 200us distribution uniform"},
		{"loss 1%", impair.Spec{Loss: 0.01}, "loss 1%"},
		{"loss random 20%", impair.Spec{Loss: 0.2}, "loss 20%"},
		{"loss gemodel 1% 25%", impair.Spec{GE: impair.GilbertElliott{P: 0.01, R: 0.25, LossBad: 1, Configured: true}},
			"loss gemodel 1% 25% 100% 0%"},
		{"loss gemodel 10%", impair.Spec{GE: impair.GilbertElliott{P: 0.1, R: 0.9, LossBad: 1, Configured: true}},
			"loss gemodel 10% 90% 100% 0%"},
		{"loss gemodel 1% 10% 70% 0.1%", impair.Spec{GE: impair.GilbertElliott{P: 0.01, R: 0.1, LossBad: 0.7,
			LossGood: 0.001, Configured: true}}, "loss gemodel 1% 10% 70% 0.1%"},
		{"rate 10mbit", impair.Spec{Rate: 10e6}, "rate 10000000bit"},
		{"rate 1kbps", impair.Spec{Rate: 8000}, "rate 8000bit"},
		{"rate 1Gbit", impair.Spec{Rate: 1e9}, "rate 1000000000bit"},
		{"duplicate 1% corrupt 0.1%", impair.Spec{Duplicate: 0.01, Corrupt: 0.001}, "duplicate 1% corrupt 0.1%"},
		{"delay 10ms reorder 25% gap 5", impair.Spec{Delay: 10 * time.Millisecond, Reorder: 0.25, Gap: 5},
			"delay 10ms reorder 25% gap 5"},
		{"delay 10ms reorder 25%", impair.Spec{Delay: 10 * time.Millisecond, Reorder: 0.25, Gap: 1},
			"delay 10ms reorder 25% gap 1"},
		{"limit 50 seed 7", impair.Spec{Limit: 50, Seed: 7, SeedSet: true}, "limit 50 seed 7"},
		{"seed=0", impair.Spec{SeedSet: true}, "seed 0"},
	}
	for _, c := range cases {
		got, err := impair.Parse(c.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.in, err)
			continue
		}
		if got != c.want {
			t.Errorf("Parse(%q) = %+v, want %+v", c.in, got, c.want)
		}
		if s := got.String(); s != c.back {
			t.Errorf("Parse(%q).String() = %q, want %q", c.in, s, c.back)
		}
		if again, err := impair.Parse(got.String()); err != nil || again != got {
			t.Errorf("Parse(%q) does not read its String back: %+v, %v", got.String(), again, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct{ in, want string }{
		{"delay", "delay: missing value"},
		{"delay 50", `delay "50": want a time`},
		{"delay 50ms 10", `delay jitter "10": want a time`},
		{"delay 50ms 10ms 25%", `delay correlation "25%": not supported`},
		{"delay 50ms 10ms distribution pareto", `distribution "pareto": want uniform or normal`},
		{"loss 1", `loss "1": want a percentage`},
		{"loss 101%", `loss "101%": want a percentage`},
		{"loss 1% 25%", `loss correlation "25%"`},
		{"loss state 1% 2%", "loss state: the 4-state model is not supported"},
		{"loss gemodel x", `loss gemodel p "x"`},
		{"loss 1% loss gemodel 1%", "random and gemodel are exclusive"},
		{"rate 10", `rate "10": want a rate`},
		{"rate 10furlongs", `rate "10furlongs"`},
		{"reorder 25%", "reorder: needs a delay"},
		{"delay 1ms reorder 25% gap 0", `reorder gap "0": want an integer 1..`},
		{"limit 0", `limit "0": want an integer 1..100000`},
		{"seed -1", `seed "-1": want an unsigned integer`},
		{"jitter 5ms", `impairment "jitter": want delay, loss,`},
		{"delay 2h", `delay "2h": want a time`},
	}
	for _, c := range cases {
		_, err := impair.Parse(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", c.in, err, c.want)
		}
	}
}
