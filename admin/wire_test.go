package admin

import (
	"strings"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
)

// A link cut over the API drops both ways and counts link_down; up again,
// frames flow.
func TestLinkDownUp(t *testing.T) {
	r := newRig(t)
	st, peer, vm := r.connectedPort(t, "p1")
	ans, err := r.c.SetLink(ctx(t), "p1", LinkRequest{Up: false})
	if err != nil {
		t.Fatal(err)
	}
	if len(ans.Wires) != 2 || ans.Wires[0].LinkUp || ans.Wires[1].LinkUp || ans.QMPError != "" {
		t.Fatalf("after link down: %+v", ans)
	}
	peer.send(t, localPort(t, st), icmpFrame(1))
	sendStreamFrame(t, vm, icmpFrame(2))
	waitFor(t, "link_down drops", func() bool {
		s, _ := r.c.Port(ctx(t), "p1")
		return s.Session.Drops[l2tp.DropLinkDown] == 2
	})
	peer.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, _, err := peer.conn.ReadFromUDP(make([]byte, 2048)); err == nil {
		t.Error("the peer got a frame through a cut link")
	}
	if _, err := r.c.SetLink(ctx(t), "p1", LinkRequest{Up: true}); err != nil {
		t.Fatal(err)
	}
	peer.send(t, localPort(t, st), icmpFrame(3))
	if f := readStreamFrame(t, vm); f[20] != 3 {
		t.Errorf("after link up the VM got frame %d, want 3", f[20])
	}
	body := r.get(t, "/metrics")
	for _, want := range []string{`l2tpv3_netdev_drops_total{port="p1",reason="link_down",session="32"} 2`,
		`l2tpv3_netdev_link_up{direction="to_vm",port="p1",session="32"} 1`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// One direction cut: the other still carries frames.
func TestLinkDownOneDirection(t *testing.T) {
	r := newRig(t)
	st, peer, vm := r.connectedPort(t, "p1")
	if _, err := r.c.SetLink(ctx(t), "p1", LinkRequest{Direction: "out"}); err != nil {
		t.Fatal(err)
	}
	peer.send(t, localPort(t, st), icmpFrame(1))
	if f := readStreamFrame(t, vm); f[20] != 1 {
		t.Errorf("VM got frame %d, want 1", f[20])
	}
	s, _ := r.c.Port(ctx(t), "p1")
	if s.Wires[0].Direction != "to_network" || s.Wires[0].LinkUp || !s.Wires[1].LinkUp {
		t.Errorf("wires after link down out: %+v", s.Wires)
	}
}

// A port whose QMP socket is unreachable still cuts its wire; the answer
// says why the guest's link was not set.
func TestLinkQMPUnreachable(t *testing.T) {
	r := newRig(t)
	spec, _ := r.spec("p1")
	spec.QMP = "unix:" + r.dir + "/no-qmp.sock"
	if _, err := r.c.AddPort(ctx(t), spec); err != nil {
		t.Fatal(err)
	}
	ans, err := r.c.SetLink(ctx(t), "p1", LinkRequest{Up: false})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ans.QMPError, "no-qmp.sock") || ans.Wires[0].LinkUp {
		t.Errorf("answer %+v: want the wire cut and a QMP error naming the socket", ans)
	}
}

// A delay set over the API holds frames; a bad spec or direction is refused
// naming the token; clearing shows no impairment.
func TestImpairment(t *testing.T) {
	r := newRig(t)
	st, peer, vm := r.connectedPort(t, "p1")
	ans, err := r.c.SetImpairment(ctx(t), "p1", ImpairRequest{Direction: "in", Spec: "delay 150ms"})
	if err != nil {
		t.Fatal(err)
	}
	if ans.Wires[1].Impairment != "delay 150ms" || ans.Wires[0].Impairment != "" {
		t.Fatalf("wires after impair in: %+v", ans.Wires)
	}
	start := time.Now()
	peer.send(t, localPort(t, st), icmpFrame(1))
	readStreamFrame(t, vm)
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("frame arrived after %v, want >= 150ms", d)
	}
	_, err = r.c.SetImpairment(ctx(t), "p1", ImpairRequest{Spec: "delay 5"})
	wantAPIError(t, err, 400, `delay "5": want a time`)
	_, err = r.c.SetImpairment(ctx(t), "p1", ImpairRequest{Direction: "sideways", Spec: "loss 1%"})
	wantAPIError(t, err, 400, `direction "sideways"`)
	body := r.get(t, "/metrics")
	if want := `l2tpv3_netdev_impairment_delay_seconds{direction="to_vm",port="p1",session="32"} 0.15`; !strings.Contains(body, want) {
		t.Errorf("/metrics lacks %s", want)
	}
	if ans, err = r.c.SetImpairment(ctx(t), "p1", ImpairRequest{Direction: "both"}); err != nil {
		t.Fatal(err)
	}
	if ans.Wires[1].Impairment != "" {
		t.Errorf("after clearing: %+v", ans.Wires)
	}
	_, err = r.c.SetImpairment(ctx(t), "nope", ImpairRequest{})
	wantAPIError(t, err, 404, "nope")
}
