package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
)

const wireConfig = `
[[port]]
name = "lab1"
stream = "unix:/tmp/x/lab1.sock"
l2tpv3 = "src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=1701,dstport=1702,txsession=0x10"
link = "down out"
impair = "loss 1%"
impair-in = "delay 50ms 10ms distribution normal"
qmp = "unix:/tmp/x/qmp.sock"
qmp-id = "net0"

[[port]]
name = "lab2"
stream = "unix:/tmp/x/lab2.sock"
l2tpv3 = "src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=1703,dstport=1704,txsession=0x11"
impair-out = "delay 5"
`

// The wire keys of a [[port]]: link, impair (both ways, then impair-in
// and impair-out override one direction), qmp; a bad spec refuses that
// port naming the key and the token.
func TestConfigWireKeys(t *testing.T) {
	o, err := parseArgs([]string{"--config", writeConfig(t, wireConfig)}, new(bytes.Buffer))
	if err != nil {
		t.Fatal(err)
	}
	if len(o.ports) != 1 {
		t.Fatalf("ports %d, want lab1 only", len(o.ports))
	}
	w := o.ports[0].Wire
	if !w[pump.ToNetwork].Down || w[pump.ToVM].Down {
		t.Errorf("link = \"down out\": %+v", w)
	}
	if w[pump.ToVM].Spec.Delay != 50*time.Millisecond || w[pump.ToVM].Spec.Loss != 0 {
		t.Errorf("to_vm: %+v, want impair-in's delay replacing impair", w[pump.ToVM].Spec)
	}
	if w[pump.ToNetwork].Spec.Loss != 0.01 {
		t.Errorf("to_network: %+v, want impair's loss", w[pump.ToNetwork].Spec)
	}
	if o.ports[0].QMP != "unix:/tmp/x/qmp.sock" || o.ports[0].QMPID != "net0" {
		t.Errorf("qmp %q id %q", o.ports[0].QMP, o.ports[0].QMPID)
	}
	msg := ""
	for _, r := range o.daemon.refused {
		msg += r.Err.Error()
	}
	if !strings.Contains(msg, `impair-out: delay "5": want a time`) {
		t.Errorf("refusals %q do not name impair-out and its token", msg)
	}
}

// The ports table notes a cut or impaired wire.
func TestWireNote(t *testing.T) {
	got := wireNote([]pump.WireStatus{{Direction: "to_network", LinkUp: false, Impairment: "loss 1%"},
		{Direction: "to_vm", LinkUp: true, Impairment: "delay 50ms"}})
	if want := "to_network link down; to_vm delay 50ms"; got != want {
		t.Errorf("wireNote = %q, want %q", got, want)
	}
	if got := wireNote([]pump.WireStatus{{Direction: "to_network", LinkUp: true}, {Direction: "to_vm", LinkUp: true}}); got != "" {
		t.Errorf("a plain wire noted %q", got)
	}
}
