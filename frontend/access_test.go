package frontend

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testlog"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump/pumptest"
	"golang.org/x/sys/unix"
)

// TestParseAccessKeys reads owner=, group=, mode= and allow-uid= on both
// front ends and refuses them where no socket file is ours.
func TestParseAccessKeys(t *testing.T) {
	a, err := ParseStreamAddr("unix:/run/x.sock,owner=107,group=0,mode=0660,allow-uid=107")
	if err != nil {
		t.Fatal(err)
	}
	want := Access{Owner: OptionalID{107, true}, Group: OptionalID{0, true}, Mode: 0o660, AllowUID: OptionalID{107, true}}
	if a.Access != want {
		t.Fatalf("got %+v, want %+v", a.Access, want)
	}
	if s := a.String(); s != "unix:/run/x.sock,server=on,owner=107,group=0,mode=0660,allow-uid=107" {
		t.Fatalf("String() = %q", s)
	}
	v, err := ParseVhostUserAddr("/run/v.sock,mode=640,allow-uid=root")
	if err != nil || v.Access != (Access{Mode: 0o640, AllowUID: OptionalID{0, true}}) {
		t.Fatalf("vhost-user: %+v, %v", v.Access, err)
	}
	bad := map[string]string{
		"unix:/a,mode=0":               "mode=0: want octal",
		"unix:/a,mode=1777":            "mode=1777: want octal",
		"unix:/a,mode=rw":              "mode=rw: want octal",
		"unix:/a,owner=nosuchuser9":    "owner=nosuchuser9: no such user",
		"unix:/a,group=nosuchgrp9":     "group=nosuchgrp9: no such group",
		"unix:/a,allow-uid=":           "allow-uid=: want a user name or number",
		"unix:/a,server=off,mode=0600": "apply only to a unix socket the sidecar listens on",
		"tcp:127.0.0.1:9,allow-uid=0":  "apply only to a unix socket",
	}
	for in, msg := range bad {
		if _, err := ParseStreamAddr(in); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("--stream %s: got %v, want %q", in, err, msg)
		}
	}
	if _, err := ParseVhostUserAddr("/v,server=off,owner=0"); err == nil || !strings.Contains(err.Error(), "apply only") {
		t.Errorf("--vhost-user server=off,owner=0: got %v", err)
	}
	if _, err := ParseVhostUserAddr("/v,colour=red"); err == nil || !strings.Contains(err.Error(), "allow-uid") {
		t.Errorf("--vhost-user colour=red: got %v", err)
	}
}

// sockMode stats a socket file.
func sockMode(t *testing.T, path string) (os.FileMode, uint32, uint32) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fi.Mode().Perm(), st.Uid, st.Gid
}

// TestSocketFilesPrivate: both front ends create their socket file 0600
// whatever the umask, or with the mode, owner and group asked for.
func TestSocketFilesPrivate(t *testing.T) {
	old := unix.Umask(0)
	defer unix.Umask(old)
	dir := t.TempDir()
	s, err := ListenStream(StreamAddr{Network: "unix", Address: dir + "/s.sock", Server: true}, 8, testlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if m, _, _ := sockMode(t, dir+"/s.sock"); m != 0o600 {
		t.Errorf("stream socket mode %#o under umask 0, want 0600", m)
	}
	v, err := ListenVhostUser(VhostUserAddr{Path: dir + "/v.sock", Server: true, Queues: 1}, 8, testlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if m, _, _ := sockMode(t, dir+"/v.sock"); m != 0o600 {
		t.Errorf("vhost-user socket mode %#o under umask 0, want 0600", m)
	}
	if os.Geteuid() != 0 {
		return
	}
	a, err := ParseStreamAddr("unix:" + dir + "/o.sock,owner=65534,group=65534,mode=0660")
	if err != nil {
		t.Fatal(err)
	}
	o, err := ListenStream(a, 8, testlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if m, uid, gid := sockMode(t, dir+"/o.sock"); m != 0o660 || uid != 65534 || gid != 65534 {
		t.Errorf("owner=65534,group=65534,mode=0660: got mode %#o uid %d gid %d", m, uid, gid)
	}
}

// TestAllowUIDStream: with allow-uid set to another user, our connection
// is closed unserved, counted, and logged once; with our own uid it is
// served.
func TestAllowUIDStream(t *testing.T) {
	dir := t.TempDir()
	other := uint32(os.Getuid() + 1)
	log := new(testlog.Buffer)
	addr := StreamAddr{Network: "unix", Address: dir + "/s.sock", Server: true,
		Access: Access{AllowUID: OptionalID{other, true}}}
	s, err := ListenStream(addr, 8, testlog.Text(log))
	if err != nil {
		t.Fatal(err)
	}
	pp := pump.NewPump(pumptest.NewNet(), nil)
	go s.Run(context.Background(), pp)
	defer s.Close()
	for range 3 {
		c, err := net.Dial("unix", addr.Address)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || os.IsTimeout(err) {
			t.Fatalf("refused peer: read %d, %v; want the connection closed", n, err)
		}
		c.Close()
	}
	fe := s.Status()
	if fe.RefusedPeers != 3 || fe.Connections != 0 {
		t.Fatalf("refused %d, connections %d; want 3 and 0", fe.RefusedPeers, fe.Connections)
	}
	if n := strings.Count(log.String(), "connection refused"); n != 1 {
		t.Fatalf("%d log lines for 3 refusals within a second, want 1:\n%s", n, log)
	}
	if !strings.Contains(log.String(), "peer_uid=") {
		t.Fatalf("log does not name the peer: %s", log)
	}

	own := StreamAddr{Network: "unix", Address: filepath.Join(dir, "own.sock"), Server: true,
		Access: Access{AllowUID: OptionalID{uint32(os.Getuid()), true}}}
	s2, err := ListenStream(own, 8, testlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	go s2.Run(context.Background(), pp)
	defer s2.Close()
	c, err := net.Dial("unix", own.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fe2 := s2
	deadline := time.Now().Add(5 * time.Second)
	for !fe2.Status().Connected && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := fe2.Status(); !st.Connected || st.RefusedPeers != 0 {
		t.Fatalf("own uid: %+v, want served", st)
	}
}

// TestAllowUIDVhostUser: the vhost-user socket refuses a peer of another
// uid before reading a message, and counts it.
func TestAllowUIDVhostUser(t *testing.T) {
	dir := t.TempDir()
	a := VhostUserAddr{Path: dir + "/v.sock", Server: true, Queues: 1,
		Access: Access{AllowUID: OptionalID{uint32(os.Getuid() + 1), true}}}
	v, err := ListenVhostUser(a, 8, testlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	go v.Run(context.Background(), pump.NewPump(pumptest.NewNet(), nil))
	defer v.Close()
	c, err := net.Dial("unix", a.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || os.IsTimeout(err) {
		t.Fatalf("refused peer: read %d, %v; want the connection closed", n, err)
	}
	if st := v.Status(); st.RefusedPeers != 1 || st.Connections != 0 {
		t.Fatalf("refused %d, connections %d; want 1 and 0", st.RefusedPeers, st.Connections)
	}
}
