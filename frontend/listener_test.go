package frontend

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testlog"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump/pumptest"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/vhostuser/vhosttest"
)

// TestListenStaleSocket replaces a dead socket file but never a regular
// file (the vhost-user front end; the stream one shares the listener).
func TestListenStaleSocket(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // the file stays, nobody listens
	v, err := ListenVhostUser(VhostUserAddr{Path: stale, Server: true, Queues: 1}, 8, testlog.Discard())
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	v.Close()
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenVhostUser(VhostUserAddr{Path: plain, Server: true, Queues: 1}, 8, testlog.Discard()); err == nil {
		t.Fatal("Listen replaced a regular file")
	}
	if b, _ := os.ReadFile(plain); string(b) != "keep" {
		t.Fatal("regular file damaged")
	}
}

// TestDial connects to a front end that starts listening late, serves it,
// and redials (vhost-user server=off).
func TestDial(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qemu.sock")
	v, err := ListenVhostUser(VhostUserAddr{Path: path, Queues: 1}, 8, testlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- v.Run(context.Background(), pump.NewPump(pumptest.NewNet(), nil)) }()
	time.Sleep(80 * time.Millisecond)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for range 2 {
		c, err := ln.AcceptUnix()
		if err != nil {
			t.Fatal(err)
		}
		fe := &vhosttest.FrontEnd{Conn: c}
		if n, err := fe.Get(vhosttest.GetQueueNum, nil); err != nil || n != 1 {
			t.Fatalf("GET_QUEUE_NUM = %d, %v", n, err)
		}
		fe.Close()
	}
	v.Close()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}
