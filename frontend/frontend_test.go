package frontend

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testlog"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump/pumptest"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/vhostuser/vhosttest"
)

// brokenNet is a network side whose sends fail, as a closed or broken
// socket's do.
type brokenNet struct{ *pumptest.Net }

// WriteFrames fails.
func (brokenNet) WriteFrames([][]byte, []int, int) error { return errors.New("send: broken") }

// runUntilFailed runs fe on a pump over a broken network, lets send make
// the VM send one frame, and returns what Run returned.
func runUntilFailed(t *testing.T, fe FrontEnd, send func()) error {
	t.Helper()
	p := pump.NewPump(brokenNet{pumptest.NewNet()}, nil)
	if err := p.SetQueues(fe.Queues()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- fe.Run(context.Background(), p) }()
	defer fe.Close()
	send()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the network side failed")
		return nil
	}
}

// A network error ends either front end's Run with that error: the one
// policy of both (vhost-user used to log it and serve on).
func TestNetworkErrorEndsFrontEnd(t *testing.T) {
	t.Run("vhost-user", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "v.sock")
		v, err := ListenVhostUser(VhostUserAddr{Path: path, Server: true, Queues: 1}, 8, testlog.Discard())
		if err != nil {
			t.Fatal(err)
		}
		err = runUntilFailed(t, v, func() {
			fe, err := vhosttest.Dial(path)
			if err != nil {
				t.Fatal(err)
			}
			g, err := vhosttest.NewGuest(fe, vhosttest.GuestOptions{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(g.Close)
			g.Pairs[0].Send(1, func(f []byte) int { return copy(f, pumptest.FrameN(1, 60)) })
		})
		if !pump.IsNetworkError(err) {
			t.Fatalf("Run = %v, want the network error", err)
		}
	})
	t.Run("stream", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "s.sock")
		s, err := ListenStream(StreamAddr{Network: "unix", Address: path, Server: true}, 8, testlog.Discard())
		if err != nil {
			t.Fatal(err)
		}
		err = runUntilFailed(t, s, func() {
			c, err := net.Dial("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			c.Write(pumptest.EncodeStream(pumptest.FrameN(1, 60)))
		})
		if !pump.IsNetworkError(err) {
			t.Fatalf("Run = %v, want the network error", err)
		}
	})
}
