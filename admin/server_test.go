package admin

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testlog"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testport"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/metrics"
)

// rig is a daemon's admin API on a unix socket in a temporary directory,
// over real ports.
type rig struct {
	t     *testing.T
	dir   string
	sock  string
	ports *backend.Ports
	srv   *Server
	c     *Client
}

// newRig serves the admin API and returns a client of it.
func newRig(t *testing.T) *rig {
	t.Helper()
	dir := t.TempDir()
	r := &rig{t: t, dir: dir, sock: filepath.Join(dir, "run", "admin.sock")}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r.ports = backend.NewPorts(log)
	r.srv = NewServer(r.ports, log, nil)
	r.srv.metrics = metrics.Handler(r.ports.Statuses)
	ln, err := Listen(r.sock, log)
	if err != nil {
		t.Fatal(err)
	}
	go r.srv.Serve(ln)
	t.Cleanup(func() { r.srv.Close(); r.ports.Close() })
	r.c = NewClient(r.sock)
	return r
}

// peer is the far end of a port's pseudowire: a UDP socket that speaks
// the mirror session.
type peer struct {
	conn *net.UDPConn
	enc  *l2tp.Encoder
	hl   int
}

// spec returns a stream port spec on a fresh socket and UDP ports, and
// the peer that talks to it.
func (r *rig) spec(name string) (backend.PortSpec, *peer) {
	r.t.Helper()
	mine, theirs := freeUDP(r.t), freeUDP(r.t)
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: theirs})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { pc.Close() })
	mirror, err := l2tp.ParseOptions(fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x20,rxsession=0x10", theirs, mine))
	if err != nil {
		r.t.Fatal(err)
	}
	return backend.PortSpec{
		Name:   name,
		Stream: "unix:" + filepath.Join(r.dir, name+".sock"),
		L2TPv3: fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x10,rxsession=0x20", mine, theirs),
	}, &peer{conn: pc, enc: l2tp.NewEncoder(mirror), hl: mirror.HeaderLen()}
}

// connectedPort adds a stream port named name over the API and connects a
// VM (a stream client, closed at the end of the test) to it.
func (r *rig) connectedPort(t *testing.T, name string) (backend.PortStatus, *peer, net.Conn) {
	t.Helper()
	spec, peer := r.spec(name)
	st, err := r.c.AddPort(ctx(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := net.Dial("unix", strings.TrimPrefix(spec.Stream, "unix:"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	waitFor(t, "VM connected", func() bool { s, _ := r.c.Port(ctx(t), name); return s.FrontEnd.Connected })
	return st, peer, vm
}

// send sends one Ethernet frame over the pseudowire to the port.
func (p *peer) send(t *testing.T, port int, frame []byte) {
	t.Helper()
	buf := make([]byte, p.hl+len(frame))
	copy(buf[p.hl:], frame)
	pkt := p.enc.Encap(buf, p.hl, len(frame))
	if _, err := p.conn.WriteToUDP(pkt, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}); err != nil {
		t.Fatal(err)
	}
}

// freeUDP returns a UDP port free on 127.0.0.1, never one it returned before.
func freeUDP(t *testing.T) int { return testport.UDP(t, "127.0.0.1") }

// localPort is the UDP port a port's tunnel listens on.
func localPort(t *testing.T, st backend.PortStatus) int {
	_, port, err := net.SplitHostPort(st.Local)
	if err != nil {
		t.Fatalf("local %q: %v", st.Local, err)
	}
	var n int
	fmt.Sscan(port, &n)
	return n
}

// icmpFrame is a recognisable Ethernet frame (broadcast, IPv4 ethertype).
func icmpFrame(i byte) []byte {
	f := make([]byte, 60)
	copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0, 0, 0, 1, 0x08, 0x00})
	f[20] = i
	return f
}

// ctx bounds a test request.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// The socket is created 0600 in a directory created 0700, and a second
// daemon on the same socket is refused while a stale file is replaced.
func TestListen(t *testing.T) {
	r := newRig(t)
	fi, err := os.Stat(r.sock)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	di, _ := os.Stat(filepath.Dir(r.sock))
	if di.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v", di.Mode())
	}
	if _, err := Listen(r.sock, quiet); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second listener: %v", err)
	}
	stale := filepath.Join(r.dir, "stale.sock")
	ln, _ := net.Listen("unix", stale)
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ln2, err := Listen(stale, quiet)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	ln2.Close()
	plain := filepath.Join(r.dir, "plain")
	os.WriteFile(plain, nil, 0o600)
	if _, err := Listen(plain, quiet); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("plain file: %v", err)
	}
}

// quiet is a logger for tests that do not read the log.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// The admin socket takes the front ends' access keys: group= and mode=
// shape the file, owner= chowns it (root only), allow-uid= serves only that
// peer UID (another is closed unanswered and logged). A client given the
// same string, keys and all, connects to the path. Bad keys are refused
// naming the option and value.
func TestListenAccess(t *testing.T) {
	dir := t.TempDir()
	ports := backend.NewPorts(quiet)
	defer ports.Close()
	serve := func(spec string, log *slog.Logger) *Client {
		t.Helper()
		ln, err := Listen(spec, log)
		if err != nil {
			t.Fatal(err)
		}
		srv := NewServer(ports, log, nil)
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		return NewClient(spec)
	}
	gid := os.Getgid()
	spec := fmt.Sprintf("%s/a.sock,group=%d,mode=0660", dir, gid)
	os.Chmod(dir, 0o700)
	var warn testlog.Buffer
	if _, err := serve(spec, slog.New(slog.NewTextHandler(&warn, nil))).Ports(ctx(t)); err != nil {
		t.Fatalf("client of %q: %v", spec, err)
	}
	fi, err := os.Stat(dir + "/a.sock")
	if err != nil || fi.Mode().Perm() != 0o660 || fi.Sys().(*syscall.Stat_t).Gid != uint32(gid) {
		t.Fatalf("a.sock: %v, %v", fi.Mode(), err)
	}
	if !strings.Contains(warn.String(), "its directory lets no one else reach it") {
		t.Errorf("no warning for a 0660 socket in a 0700 directory: %q", warn.String())
	}
	os.Chmod(dir, 0o711)
	var quietDir testlog.Buffer
	serve(dir+"/c.sock,mode=0666", slog.New(slog.NewTextHandler(&quietDir, nil)))
	if quietDir.String() != "" {
		t.Errorf("a warning with the directory 0711: %q", quietDir.String())
	}
	if os.Geteuid() == 0 {
		serve(dir+"/o.sock,owner=4242,group=4343", quiet)
		fi, _ := os.Stat(dir + "/o.sock")
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 4242 || st.Gid != 4343 || fi.Mode().Perm() != 0o600 {
			t.Errorf("o.sock: uid %d gid %d mode %v", st.Uid, st.Gid, fi.Mode())
		}
	}
	if _, err := serve(fmt.Sprintf("%s/me.sock,allow-uid=%d", dir, os.Geteuid()), quiet).Ports(ctx(t)); err != nil {
		t.Errorf("allow-uid=self: %v", err)
	}
	var log testlog.Buffer
	other := serve(fmt.Sprintf("%s/other.sock,allow-uid=%d", dir, os.Geteuid()+1), slog.New(slog.NewTextHandler(&log, nil)))
	if _, err := other.Ports(ctx(t)); err == nil {
		t.Error("allow-uid=another: served")
	}
	if !strings.Contains(log.String(), "connection refused: peer not allowed") {
		t.Errorf("refusal not logged: %q", log.String())
	}
	for spec, want := range map[string]string{
		dir + "/b.sock,mode=9":      `admin socket "` + dir + `/b.sock,mode=9": mode=9: want octal permission bits`,
		dir + "/b.sock,colour=red":  `unknown key "colour" (want owner, group, mode or allow-uid)`,
		dir + "/b.sock,owner=nosu9": "owner=nosu9: no such user",
		",mode=0600":                "want PATH[,owner=USER|UID][,group=GROUP|GID]",
	} {
		if _, err := Listen(spec, quiet); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", spec, err, want)
		}
	}
	if got := SocketPath("/run/a.sock,group=kvm,mode=0660"); got != "/run/a.sock" {
		t.Errorf("SocketPath = %q", got)
	}
}

// Add, list, get, duplicate (409), bad spec (400), delete (socket file
// removed, then 404).
func TestPortsLifecycle(t *testing.T) {
	r := newRig(t)
	spec, _ := r.spec("p1")
	st, err := r.c.AddPort(ctx(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	if st.Name != "p1" || st.State != backend.PortRunning || st.SessionID != 0x20 || st.FrontEnd.Kind != "stream" {
		t.Errorf("added: %+v", st)
	}
	sockFile := strings.TrimPrefix(spec.Stream, "unix:")
	if _, err := os.Stat(sockFile); err != nil {
		t.Fatalf("socket file: %v", err)
	}
	list, err := r.c.Ports(ctx(t))
	if err != nil || len(list) != 1 || list[0].Name != "p1" {
		t.Fatalf("list: %v %+v", err, list)
	}
	if _, err := r.c.Port(ctx(t), "p1"); err != nil {
		t.Error(err)
	}

	_, err = r.c.AddPort(ctx(t), spec)
	wantAPIError(t, err, http.StatusConflict, "a port of that name exists")
	if !errors.Is(err, backend.ErrPortExists) {
		t.Error("409 does not unwrap to ErrPortExists")
	}
	other, _ := r.spec("p2")
	other.Stream = spec.Stream
	_, err = r.c.AddPort(ctx(t), other)
	wantAPIError(t, err, http.StatusConflict, "is port p1's")

	bad, _ := r.spec("p3")
	bad.L2TPv3 = "src=127.0.0.1,txsession=1"
	_, err = r.c.AddPort(ctx(t), bad)
	wantAPIError(t, err, http.StatusBadRequest, "port p3: --l2tpv3: missing dst")

	_, err = r.c.Port(ctx(t), "nosuch")
	wantAPIError(t, err, http.StatusNotFound, "port nosuch: no such port")

	if _, err := r.c.RemovePort(ctx(t), "p1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sockFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after delete: %v", err)
	}
	_, err = r.c.RemovePort(ctx(t), "p1")
	wantAPIError(t, err, http.StatusNotFound, "no such port")
	if !errors.Is(err, backend.ErrNoPort) {
		t.Error("404 does not unwrap to ErrNoPort")
	}
}

// A port whose UDP port and session are taken is refused with 409, naming
// the cause (another session on the same port joins the tunnel).
func TestAddPortInUse(t *testing.T) {
	r := newRig(t)
	spec, _ := r.spec("p1")
	st, err := r.c.AddPort(ctx(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	spec2, _ := r.spec("p2")
	spec2.L2TPv3 = fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=9,txsession=0x20", localPort(t, st))
	_, err = r.c.AddPort(ctx(t), spec2)
	wantAPIError(t, err, http.StatusConflict, "address already in use")
}

// A second port on the same UDP port with another session joins the
// tunnel: both run, each status names the socket's sessions, and removing
// one leaves the other running on the socket.
func TestAddPortJoinsTunnel(t *testing.T) {
	r := newRig(t)
	spec, _ := r.spec("p1")
	st, err := r.c.AddPort(ctx(t), spec)
	if err != nil {
		t.Fatal(err)
	}
	spec2, _ := r.spec("p2")
	spec2.L2TPv3 = fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=9,txsession=0x21", localPort(t, st))
	st2, err := r.c.AddPort(ctx(t), spec2)
	if err != nil {
		t.Fatal(err)
	}
	if st2.Socket == nil || fmt.Sprint(st2.Socket.Sessions) != "[32 33]" || st2.Local != st.Local {
		t.Fatalf("p2 on %s, socket %+v; want sessions [32 33] on %s", st2.Local, st2.Socket, st.Local)
	}
	if _, err := r.c.RemovePort(ctx(t), "p2"); err != nil {
		t.Fatal(err)
	}
	st, err = r.c.Port(ctx(t), "p1")
	if err != nil || st.State != backend.PortRunning || st.Socket != nil {
		t.Fatalf("p1 after p2 left: %+v, %v", st, err)
	}
}

// Raw HTTP: unknown JSON fields and unknown endpoints are refused with a
// JSON error.
func TestRawRequests(t *testing.T) {
	r := newRig(t)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return net.Dial("unix", r.sock)
	}}}
	resp, err := hc.Post("http://x/v1/ports", "application/json", strings.NewReader(`{"name":"a","strem":"unix:/x"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), `"error": "POST /v1/ports: body: json: unknown field \"strem\""`) {
		t.Errorf("unknown field: %d %s", resp.StatusCode, body)
	}
	resp, err = hc.Get("http://x/v2/nothing")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 404 || !strings.Contains(string(body), `"error"`) {
		t.Errorf("unknown endpoint: %d %s", resp.StatusCode, body)
	}
}

// Counters move with traffic: a datagram to the port's UDP socket reaches
// the VM (a stream client) and shows in the list and in /metrics scraped
// through the admin socket.
func TestCountersMove(t *testing.T) {
	r := newRig(t)
	st, peer, vm := r.connectedPort(t, "p1")
	peer.send(t, localPort(t, st), icmpFrame(1))
	readStreamFrame(t, vm)
	waitFor(t, "rx counter", func() bool { s, _ := r.c.Port(ctx(t), "p1"); return s.Session.RxPackets == 1 })

	sendStreamFrame(t, vm, icmpFrame(2))
	peer.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := peer.conn.ReadFromUDP(make([]byte, 2048)); err != nil {
		t.Fatalf("peer did not receive the VM's frame: %v", err)
	}
	waitFor(t, "tx counter", func() bool { s, _ := r.c.Port(ctx(t), "p1"); return s.Session.TxPackets == 1 })

	body := r.get(t, "/metrics")
	for _, want := range []string{
		`l2tpv3_netdev_packets_total{direction="to_vm",port="p1",session="32"} 1`,
		`l2tpv3_netdev_packets_total{direction="to_network",port="p1",session="32"} 1`,
		`l2tpv3_netdev_bytes_total{direction="to_vm",port="p1",session="32"} 60`,
		`l2tpv3_netdev_frontend_connected{port="p1",session="32"} 1`,
		`l2tpv3_netdev_port_state{port="p1",session="32",state="running"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// A capture started and stopped over the API holds both directions' frames
// in a pcap that pcapgo reads; a streamed capture does too.
func TestCapture(t *testing.T) {
	r := newRig(t)
	st, peer, vm := r.connectedPort(t, "p1")

	file := filepath.Join(r.dir, "p1.pcap")
	_, err := r.c.StartCapture(ctx(t), "p1", CaptureRequest{Path: "relative.pcap"})
	wantAPIError(t, err, http.StatusBadRequest, "want an absolute file name")
	if _, err := r.c.StartCapture(ctx(t), "p1", CaptureRequest{Path: file}); err != nil {
		t.Fatal(err)
	}
	_, err = r.c.StartCapture(ctx(t), "p1", CaptureRequest{Path: file + "2"})
	wantAPIError(t, err, http.StatusConflict, "capture of this port is running")
	if s, _ := r.c.Port(ctx(t), "p1"); s.Capture == nil || s.Capture.Target != file {
		t.Errorf("status capture: %+v", s.Capture)
	}
	peer.send(t, localPort(t, st), icmpFrame(1))
	readStreamFrame(t, vm)
	sendStreamFrame(t, vm, icmpFrame(2))
	waitFor(t, "tx counter", func() bool { s, _ := r.c.Port(ctx(t), "p1"); return s.Session.TxPackets == 1 })
	cs, err := r.c.StopCapture(ctx(t), "p1")
	if err != nil || cs.Captured != 2 {
		t.Fatalf("stop: %+v %v", cs, err)
	}
	frames := readPcap(t, file)
	if len(frames) != 2 || frames[0][20] != 1 || frames[1][20] != 2 {
		t.Errorf("pcap frames: %d", len(frames))
	}
	_, err = r.c.StopCapture(ctx(t), "p1")
	wantAPIError(t, err, http.StatusNotFound, "no capture")
	_, err = r.c.StartCapture(ctx(t), "p1", CaptureRequest{Path: file})
	wantAPIError(t, err, http.StatusConflict, "file exists")

	// Streamed: GET with a time limit while a frame passes.
	done := make(chan string)
	go func() { done <- r.get(t, "/v1/ports/p1/capture?seconds=1.5") }()
	waitFor(t, "stream capture", func() bool { s, _ := r.c.Port(ctx(t), "p1"); return s.Capture != nil })
	peer.send(t, localPort(t, st), icmpFrame(3))
	readStreamFrame(t, vm)
	stream := filepath.Join(r.dir, "stream.pcap")
	os.WriteFile(stream, []byte(<-done), 0o600)
	if frames := readPcap(t, stream); len(frames) != 1 || frames[0][20] != 3 {
		t.Errorf("streamed pcap: %d frames", len(frames))
	}
}

// Ports that could not start are listed as failed and can be deleted.
func TestRefusedListed(t *testing.T) {
	r := newRig(t)
	spec, _ := r.spec("bad")
	spec.L2TPv3 = "src=127.0.0.1,txsession=7"
	_, err := spec.Parse()
	r.ports.Refuse(spec, err)
	list, _ := r.c.Ports(ctx(t))
	if len(list) != 1 || list[0].State != backend.PortFailed || !strings.Contains(list[0].Error, "missing dst") {
		t.Fatalf("list: %+v", list)
	}
	if body := r.get(t, "/metrics"); !strings.Contains(body, `l2tpv3_netdev_port_state{port="bad",session="0",state="failed"} 1`) {
		t.Error("/metrics lacks the failed port")
	}
	if _, err := r.c.RemovePort(ctx(t), "bad"); err != nil {
		t.Fatal(err)
	}
	if list, _ := r.c.Ports(ctx(t)); len(list) != 0 {
		t.Errorf("after delete: %+v", list)
	}
}

// get fetches a path over the admin socket and returns the body.
func (r *rig) get(t *testing.T, path string) string {
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return net.Dial("unix", r.sock)
	}}}
	resp, err := hc.Get("http://x" + path)
	if err != nil {
		t.Error(err)
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// wantAPIError checks a refused request's status and message.
func wantAPIError(t *testing.T, err error, status int, msg string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != status || !strings.Contains(e.Message, msg) {
		t.Errorf("got %v, want %d %q", err, status, msg)
	}
}

// waitFor polls cond for up to five seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readStreamFrame reads one length-prefixed frame as QEMU would.
func readStreamFrame(t *testing.T, c net.Conn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		t.Fatalf("VM read: %v", err)
	}
	f := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	if _, err := io.ReadFull(c, f); err != nil {
		t.Fatalf("VM read: %v", err)
	}
	return f
}

// sendStreamFrame writes one length-prefixed frame as QEMU would.
func sendStreamFrame(t *testing.T, c net.Conn, f []byte) {
	t.Helper()
	b := binary.BigEndian.AppendUint32(nil, uint32(len(f)))
	if _, err := c.Write(append(b, f...)); err != nil {
		t.Fatal(err)
	}
}

// readPcap returns the frames of a pcap file, checking it is Ethernet.
func readPcap(t *testing.T, path string) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pr, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if pr.LinkType() != layers.LinkTypeEthernet {
		t.Errorf("link type %v", pr.LinkType())
	}
	var out [][]byte
	for {
		data, _, err := pr.ReadPacketData()
		if err != nil {
			return out
		}
		out = append(out, data)
	}
}

// POST /v1/reload answers 404 without a reload (no config file), 400 with
// a refused reload's error, and 200 with what changed.
func TestReloadEndpoint(t *testing.T) {
	r := newRig(t)
	_, err := r.c.Reload(ctx(t))
	wantAPIError(t, err, http.StatusNotFound, "runs without --config")
	r.srv.SetReload(func() (backend.Change, error) {
		return backend.Change{}, errors.New("--config /x.toml: toml: line 2: bad")
	})
	_, err = r.c.Reload(ctx(t))
	wantAPIError(t, err, http.StatusBadRequest, "--config /x.toml: toml: line 2: bad")
	r.srv.SetReload(func() (backend.Change, error) { return backend.Change{Added: []string{"b"}, Kept: []string{"c"}}, nil })
	ch, err := r.c.Reload(ctx(t))
	if err != nil || fmt.Sprint(ch.Added, ch.Kept, len(ch.Removed)) != "[b] [c] 0" {
		t.Fatalf("reload: %+v, %v", ch, err)
	}
}
