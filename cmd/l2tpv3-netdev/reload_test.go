package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/admin"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
)

// reloadRig is a daemon on a config file of stream ports that share one
// UDP port (one tunnel), and the peer that sends to them.
type reloadRig struct {
	dir, config, admin string
	local, peerPort    int
	peer               *net.UDPConn
	d                  *daemonProc
	c                  *admin.Client
}

// newReloadRig starts the daemon on a config of the named sessions.
func newReloadRig(t *testing.T, sessions map[string]uint32) *reloadRig {
	r := &reloadRig{dir: t.TempDir(), local: freePort(t), peerPort: freePort(t)}
	r.config = filepath.Join(r.dir, "l2tpv3-netdev.toml")
	r.admin = filepath.Join(r.dir, "admin.sock")
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: r.peerPort})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	r.peer = pc
	r.write(t, r.portsText(sessions))
	r.d = startDaemon(t, "--config", r.config, "--admin", r.admin)
	r.d.waitLog(t, "admin API ready")
	r.c = admin.NewClient(r.admin)
	return r
}

// portsText is a config of stream ports, one per name, receiving the
// session given and sending it minus 0x10.
func (r *reloadRig) portsText(sessions map[string]uint32) string {
	var b strings.Builder
	for _, name := range []string{"a", "b", "c"} {
		s, ok := sessions[name]
		if !ok {
			continue
		}
		fmt.Fprintf(&b, "[[port]]\nname = %q\nstream = \"unix:%s/%s.sock\"\nl2tpv3 = \"src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=%d,rxsession=%d\"\n\n",
			name, r.dir, name, r.local, r.peerPort, s-0x10, s)
	}
	return b.String()
}

// write replaces the config file.
func (r *reloadRig) write(t *testing.T, text string) {
	if err := os.WriteFile(r.config, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// hup sends SIGHUP and waits for the reload's nth log line (accepted or
// refused) to contain want.
func (r *reloadRig) hup(t *testing.T, n int, want string) {
	t.Helper()
	r.d.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(r.d.log.String(), "msg=\"config reload") < n {
		if time.Now().After(deadline) {
			t.Fatalf("no reload line %d:\n%s", n, r.d.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	lines := strings.Split(r.d.log.String(), "\n")
	var got []string
	for _, l := range lines {
		if strings.Contains(l, "msg=\"config reload") {
			got = append(got, l)
		}
	}
	if !strings.Contains(got[n-1], want) {
		t.Fatalf("reload line %d: %s\nwant it to contain %s", n, got[n-1], want)
	}
}

// vm connects a VM (a stream client) to the named port.
func (r *reloadRig) vm(t *testing.T, name string) net.Conn {
	t.Helper()
	var vm net.Conn
	waitUntil(t, "VM "+name+" connected", func() bool {
		c, err := net.Dial("unix", filepath.Join(r.dir, name+".sock"))
		if err != nil {
			return false
		}
		vm = c
		return true
	})
	t.Cleanup(func() { vm.Close() })
	waitUntil(t, "port "+name+" sees its VM", func() bool {
		st, err := r.c.Port(context.Background(), name)
		return err == nil && st.FrontEnd.Connected
	})
	return vm
}

// sender returns a function sending the seq'th frame to session s.
func (r *reloadRig) sender(t *testing.T, s uint32) func(seq uint32) error {
	mirror, err := l2tp.ParseOptions(fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=%d,rxsession=%d",
		r.peerPort, r.local, s, s-0x10))
	if err != nil {
		t.Fatal(err)
	}
	enc, hl := l2tp.NewEncoder(mirror), mirror.HeaderLen()
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: r.local}
	buf := make([]byte, hl+60)
	return func(seq uint32) error {
		f := buf[hl:]
		copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x88, 0xb5})
		binary.BigEndian.PutUint32(f[20:], seq)
		_, err := r.peer.WriteToUDP(enc.Encap(buf, hl, 60), to)
		return err
	}
}

// readSeq reads one stream frame and returns its sequence number.
func readSeq(c net.Conn) (uint32, error) {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return 0, err
	}
	f := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	if _, err := io.ReadFull(c, f); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(f[20:]), nil
}

// waitUntil polls cond for up to 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// A SIGHUP reload adds a session to a running shared tunnel, replaces it
// when its table changes, and removes another while a third carries traffic: the third loses nothing (every
// frame the peer sent arrives, in order, and its counters were never
// reset). A broken file, a file with one bad port and a port clashing with
// one added over the API change nothing and are refused naming the file;
// POST /v1/reload (the reload subcommand) does the same as SIGHUP.
func TestReloadSharedTunnel(t *testing.T) {
	r := newReloadRig(t, map[string]uint32{"a": 0x21, "c": 0x23})
	r.d.waitLog(t, "msg=ready port=c")
	vmC := r.vm(t, "c")

	// Traffic to c, at most 32 frames in flight so the loopback never
	// drops: a frame lost by the daemon stalls it and fails the test.
	var sent, got atomic.Uint32
	stop, senderDone := make(chan struct{}), make(chan error, 1)
	send := r.sender(t, 0x23)
	go func() {
		for {
			select {
			case <-stop:
				senderDone <- nil
				return
			default:
			}
			if sent.Load()-got.Load() >= 32 {
				time.Sleep(100 * time.Microsecond)
				continue
			}
			if err := send(sent.Load()); err != nil {
				senderDone <- err
				return
			}
			sent.Add(1)
		}
	}()
	readerDone := make(chan error, 1)
	go func() {
		for {
			seq, err := readSeq(vmC)
			if err != nil {
				readerDone <- err
				return
			}
			if seq != got.Load() {
				readerDone <- fmt.Errorf("frame %d arrived where %d was due", seq, got.Load())
				return
			}
			got.Add(1)
		}
	}()
	waitUntil(t, "traffic on c", func() bool { return got.Load() > 1000 })

	// Reload: a leaves, b joins, c stays.
	r.write(t, r.portsText(map[string]uint32{"b": 0x22, "c": 0x23}))
	r.hup(t, 1, `added=1 removed=1 replaced=0 kept=1 failed=0 changed="+b -a"`)
	if _, err := r.c.Port(context.Background(), "a"); err == nil {
		t.Error("port a still runs after the reload removed it")
	}
	vmB := r.vm(t, "b")
	stB, err := r.c.Port(context.Background(), "b")
	if err != nil || stB.Socket == nil || fmt.Sprint(stB.Socket.Sessions) != "[34 35]" {
		t.Fatalf("b did not join c's tunnel: %+v, %v", stB.Socket, err)
	}
	if err := r.sender(t, 0x22)(7); err != nil {
		t.Fatal(err)
	}
	if seq, err := readSeq(vmB); err != nil || seq != 7 {
		t.Fatalf("b's VM read %d, %v; want frame 7", seq, err)
	}

	// b's table changes: b is replaced, c kept.
	r.write(t, strings.Replace(r.portsText(map[string]uint32{"b": 0x22, "c": 0x23}), "txsession=18,", "txsession=24,", 1))
	r.hup(t, 2, `added=0 removed=0 replaced=1 kept=1 failed=0 changed=~b`)
	if st, err := r.c.Port(context.Background(), "b"); err != nil || !strings.Contains(st.L2TPv3, "txsession=0x18") {
		t.Fatalf("b after its replacement: %s, %v", st.L2TPv3, err)
	}

	// Refused reloads: each changes nothing.
	r.write(t, "[[port]\nname = \"c\"\n")
	r.hup(t, 3, `msg="config reload refused, nothing changed" config=`+r.config)
	r.write(t, r.portsText(map[string]uint32{"c": 0x23})+"[[port]]\nname = \"d\"\nstream = \"unix:/tmp/x.sock\"\nl2tpv3 = \"src=127.0.0.1,udp=on,srcport=1,dstport=9,txsession=1\"\n")
	r.hup(t, 4, "port d: --l2tpv3: missing dst")
	var out, errOut bytes.Buffer
	if code := realMain([]string{"reload", "--admin", r.admin}, &out, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), r.config) || !strings.Contains(errOut.String(), "port d: --l2tpv3: missing dst") {
		t.Errorf("reload subcommand on a bad file: exit %d: %s", code, errOut.String())
	}
	extra := backend.PortSpec{Name: "e", Stream: "unix:" + filepath.Join(r.dir, "e.sock"),
		L2TPv3: fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x14,rxsession=0x24", r.local, r.peerPort)}
	if _, err := r.c.AddPort(context.Background(), extra); err != nil {
		t.Fatal(err)
	}
	r.write(t, r.portsText(map[string]uint32{"b": 0x22, "c": 0x23})+fmt.Sprintf("[[port]]\nname = \"e\"\nstream = \"unix:%s/e2.sock\"\nl2tpv3 = %q\n", r.dir, extra.L2TPv3))
	r.hup(t, 6, "port e: a port of that name runs that the config did not start")
	for _, name := range []string{"b", "c", "e"} {
		if st, err := r.c.Port(context.Background(), name); err != nil || st.State != backend.PortRunning {
			t.Errorf("port %s after the refused reloads: %+v, %v", name, st.State, err)
		}
	}

	// The reload subcommand: the file without b; e, added over the API
	// and not in the file, is left alone.
	r.write(t, r.portsText(map[string]uint32{"c": 0x23}))
	out.Reset()
	if code := realMain([]string{"reload", "--admin", r.admin}, &out, &errOut); code != 0 ||
		!strings.Contains(out.String(), "added 0, removed 1, replaced 0, kept 1") || !strings.Contains(out.String(), "-b") {
		t.Fatalf("reload subcommand: exit %d: %s%s", code, out.String(), errOut.String())
	}
	if _, err := r.c.Port(context.Background(), "e"); err != nil {
		t.Errorf("port e, added over the API, after a reload: %v", err)
	}

	close(stop)
	if err := <-senderDone; err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "every frame sent to c", func() bool {
		select {
		case err := <-readerDone:
			t.Fatalf("c's VM: %v after %d of %d frames", err, got.Load(), sent.Load())
		default:
		}
		return got.Load() == sent.Load()
	})
	st, err := r.c.Port(context.Background(), "c")
	if err != nil || st.Session.RxPackets != uint64(sent.Load()) || st.Session.Dropped() != 0 {
		t.Fatalf("c: rx %d dropped %d, sent %d (%v)", st.Session.RxPackets, st.Session.Dropped(), sent.Load(), err)
	}
	if strings.Contains(r.d.log.String(), `msg="port removed" port=c`) {
		t.Error("the reloads touched port c")
	}
	t.Logf("c carried %d of %d frames through 6 reloads; b joined, was replaced, left; a left", got.Load(), sent.Load())
}
