package plug

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/admin"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testport"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/qmp"
)

// fakeQMP is a QEMU monitor on a unix socket: it greets, keeps QEMU 7.2's
// chardev/netdev/device bookkeeping (refusing duplicates and unknown ids
// in QEMU's words), records every command and sends DEVICE_DELETED after
// device_del unless the guest is told never to release the device.
type fakeQMP struct {
	path string
	ln   net.Listener
	kvm  bool              // query-kvm's "enabled"
	fail map[string]string // command → GenericError description it gets
	keep bool              // the guest never releases a device (no DEVICE_DELETED)

	mu      sync.Mutex // guards the fields below
	cmds    []fakeCmd
	objects map[string]bool // "chardev:ID", "netdev:ID", "device:ID"
	conns   []net.Conn      // stream netdevs' connections to their back ends
}

// fakeCmd is one command as the fake received it.
type fakeCmd struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments"`
	ID        json.RawMessage `json:"id"`
}

// newFakeQMP serves until the test ends.
func newFakeQMP(t *testing.T, dir string) *fakeQMP {
	t.Helper()
	f := &fakeQMP{path: filepath.Join(dir, "qmp.sock"), fail: map[string]string{}, objects: map[string]bool{}}
	ln, err := net.Listen("unix", f.path)
	if err != nil {
		t.Fatal(err)
	}
	f.ln = ln
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			f.serve(conn) // one client at a time, as QEMU
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range f.conns {
			c.Close()
		}
	})
	return f
}

// serve greets one client and answers its commands until it goes.
func (f *fakeQMP) serve(conn net.Conn) {
	defer conn.Close()
	var wmu sync.Mutex
	send := func(v any) {
		b, _ := json.Marshal(v)
		wmu.Lock()
		conn.Write(append(b, '\r', '\n'))
		wmu.Unlock()
	}
	send(map[string]any{"QMP": map[string]any{"version": map[string]any{
		"qemu": map[string]int{"major": 7, "minor": 2, "micro": 22}, "package": "fake"}, "capabilities": []string{}}})
	dec := json.NewDecoder(conn)
	for {
		var c fakeCmd
		if dec.Decode(&c) != nil {
			return
		}
		ret, class, desc, after := f.answer(c)
		if class != "" {
			send(map[string]any{"id": c.ID, "error": map[string]string{"class": class, "desc": desc}})
			continue
		}
		send(map[string]any{"id": c.ID, "return": ret})
		if after != "" {
			send(map[string]any{"event": "DEVICE_DELETED", "data": map[string]string{"device": after,
				"path": "/machine/peripheral/" + after}, "timestamp": map[string]int{"seconds": 1, "microseconds": 0}})
		}
	}
}

// answer runs one command on the model: its return value, or an error
// class and description; after names a device to announce as deleted.
func (f *fakeQMP) answer(c fakeCmd) (ret any, class, desc, after string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds = append(f.cmds, c)
	if d, ok := f.fail[c.Execute]; ok {
		return nil, "GenericError", d, ""
	}
	var a struct{ ID string }
	json.Unmarshal(c.Arguments, &a)
	add := func(kind, dup string) (any, string, string, string) {
		if f.objects[kind+":"+a.ID] {
			return nil, "GenericError", dup, ""
		}
		f.objects[kind+":"+a.ID] = true
		return struct{}{}, "", "", ""
	}
	del := func(kind, class, notFound string) (any, string, string, string) {
		if !f.objects[kind+":"+a.ID] {
			return nil, class, notFound, ""
		}
		delete(f.objects, kind+":"+a.ID)
		return struct{}{}, "", "", ""
	}
	switch c.Execute {
	case "qmp_capabilities":
		return struct{}{}, "", "", ""
	case "query-kvm":
		return map[string]bool{"enabled": f.kvm, "present": f.kvm}, "", "", ""
	case "chardev-add":
		return add("chardev", "attempt to add duplicate property '"+a.ID+"' to object (type 'container')")
	case "netdev_add":
		var nd struct {
			Type string
			Addr struct{ Path string }
		}
		json.Unmarshal(c.Arguments, &nd)
		if nd.Type == "stream" { // QEMU 7.2 connects once, at netdev_add
			if conn, err := net.Dial("unix", nd.Addr.Path); err == nil {
				f.conns = append(f.conns, conn)
			}
		}
		return add("netdev", "Duplicate ID '"+a.ID+"' for netdev")
	case "device_add":
		return add("device", "Duplicate device ID '"+a.ID+"'")
	case "chardev-remove":
		return del("chardev", "GenericError", "Chardev '"+a.ID+"' not found")
	case "netdev_del":
		return del("netdev", "DeviceNotFound", "Device '"+a.ID+"' not found")
	case "device_del":
		if !f.objects["device:"+a.ID] {
			return nil, "DeviceNotFound", "Device '" + a.ID + "' not found", ""
		}
		if f.keep {
			return struct{}{}, "", "", ""
		}
		delete(f.objects, "device:"+a.ID)
		return struct{}{}, "", "", a.ID
	}
	return nil, "CommandNotFound", "The command " + c.Execute + " has not been found", ""
}

// commands lists the commands received so far, qmp_capabilities left out.
func (f *fakeQMP) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var names []string
	for _, c := range f.cmds {
		if c.Execute != "qmp_capabilities" {
			names = append(names, c.Execute)
		}
	}
	return names
}

// args decodes the arguments of the last command called name.
func (f *fakeQMP) args(t *testing.T, name string) map[string]any {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.cmds) - 1; i >= 0; i-- {
		if f.cmds[i].Execute == name {
			var m map[string]any
			if err := json.Unmarshal(f.cmds[i].Arguments, &m); err != nil {
				t.Fatal(err)
			}
			return m
		}
	}
	t.Fatalf("no %s among %v", name, f.cmds)
	return nil
}

// left lists what QEMU still has, sorted.
func (f *fakeQMP) left() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var l []string
	for k := range f.objects {
		l = append(l, k)
	}
	sort.Strings(l)
	return l
}

// plugRig is a fake QEMU and a real daemon's admin API (real ports) in
// one short temporary directory (unix socket paths are limited to 108 bytes).
type plugRig struct {
	t     *testing.T
	dir   string
	admin string
	qemu  *fakeQMP
	ac    *admin.Client
}

// newPlugRig starts the fake QEMU and the admin API.
func newPlugRig(t *testing.T) *plugRig {
	t.Helper()
	dir, err := os.MkdirTemp("", "l2p-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	r := &plugRig{t: t, dir: dir, admin: filepath.Join(dir, "admin.sock")}
	wait := ConnectWait
	ConnectWait = 200 * time.Millisecond // a fake QEMU starts no vhost-user queue pair
	t.Cleanup(func() { ConnectWait = wait })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ports := backend.NewPorts(log)
	srv := admin.NewServer(ports, log, nil)
	ln, err := admin.Listen(r.admin, log)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close(); ports.Close() })
	r.qemu = newFakeQMP(t, dir)
	r.ac = admin.NewClient(r.admin)
	return r
}

// l2tpv3 is an option string on fresh loopback UDP ports, with a 1500-byte
// underlay as on an Ethernet host (loopback's own route MTU is 65536).
func (r *plugRig) l2tpv3() string {
	return fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x10,underlay-mtu=1500",
		testport.UDP(r.t, "127.0.0.1"), testport.UDP(r.t, "127.0.0.1"))
}

// sock is a socket path in the rig's directory.
func (r *plugRig) sock(name string) string { return filepath.Join(r.dir, name) }

// vhostUser is a request to plug NIC id on a vhost-user port of the same
// name listening at path (options may follow), on fresh UDP ports.
func (r *plugRig) vhostUser(id, path string) Request {
	return r.request(id, qmp.VhostUser, backend.PortSpec{VhostUser: path})
}

// stream is likewise for a stream port listening at addr ("unix:PATH").
func (r *plugRig) stream(id, addr string) Request {
	return r.request(id, qmp.Stream, backend.PortSpec{Stream: addr})
}

// request is what the plug command line makes of --id, the front end and
// --l2tpv3 (--qmp and --admin the rig's): the port named after the NIC,
// with QEMU's QMP socket for its link, no props, a 30 s timeout.
func (r *plugRig) request(id string, kind qmp.Kind, spec backend.PortSpec) Request {
	spec.Name, spec.L2TPv3, spec.QMP, spec.QMPID = id, r.l2tpv3(), "unix:"+r.qemu.path, id
	return Request{QMP: "unix:" + r.qemu.path, Admin: r.admin, NIC: qmp.NIC{ID: id, Kind: kind},
		Spec: spec, Props: map[string]any{}, Timeout: 30 * time.Second}
}

// plug runs Plug on req, its Config and DefaultMTU completed from its Spec
// as the command line does.
func (r *plugRig) plug(req Request) (string, error) {
	r.t.Helper()
	cfg, err := req.Spec.Parse()
	if err != nil {
		r.t.Fatalf("plug %+v: %v", req.Spec, err)
	}
	req.Config = cfg
	req.DefaultMTU = cfg.L2TP.InnerMTU(l2tp.ProbeUnderlay(cfg.L2TP).MTU)
	var out bytes.Buffer
	err = Plug(context.Background(), req, &out)
	return out.String(), err
}

// unplug runs Unplug for NIC id and the port of the same name, with
// timeout (the command line's default: 10 s).
func (r *plugRig) unplug(id string, timeout time.Duration) (string, error) {
	r.t.Helper()
	var out bytes.Buffer
	err := Unplug(context.Background(), UnplugRequest{QMP: "unix:" + r.qemu.path, Admin: r.admin, ID: id, Name: id, Timeout: timeout}, &out)
	return out.String(), err
}

// port returns the daemon's port name, ok false if it has none.
func (r *plugRig) port(name string) (backend.PortStatus, bool) {
	st, err := r.ac.Port(context.Background(), name)
	if errors.Is(err, backend.ErrNoPort) {
		return st, false
	}
	if err != nil {
		r.t.Fatal(err)
	}
	return st, true
}

// wantCommands compares the commands QEMU received with want.
func (r *plugRig) wantCommands(want ...string) {
	r.t.Helper()
	if got := r.qemu.commands(); !reflect.DeepEqual(got, want) {
		r.t.Errorf("QMP commands:\n got %v\nwant %v", got, want)
	}
}

// wantProps checks device_add's arguments: want's keys with their values
// (JSON numbers are float64), and absent's keys missing.
func (r *plugRig) wantProps(want map[string]any, absent ...string) {
	r.t.Helper()
	got := r.qemu.args(r.t, "device_add")
	for k, v := range want {
		if !reflect.DeepEqual(got[k], v) {
			r.t.Errorf("device_add %s = %#v, want %#v (all: %v)", k, got[k], v, got)
		}
	}
	for _, k := range absent {
		if v, ok := got[k]; ok {
			r.t.Errorf("device_add has %s = %v, want none", k, v)
		}
	}
}

// TestPlugVhostUserTCG: the port opens first, then chardev-add, netdev_add,
// device_add with the MAC, the port's MTU and vectors=0 (QEMU without KVM).
func TestPlugVhostUserTCG(t *testing.T) {
	r := newPlugRig(t)
	req := r.vhostUser("net1", r.sock("net1.sock"))
	req.NIC.MAC = "52:54:00:00:00:01"
	out, err := r.plug(req)
	if err != nil {
		t.Fatalf("plug: %v\n%s", err, out)
	}
	t.Logf("output:\n%s", out)
	r.wantCommands("query-kvm", "chardev-add", "netdev_add", "device_add")
	r.wantProps(map[string]any{"driver": "virtio-net-pci", "netdev": "net1", "mac": "52:54:00:00:00:01",
		"host_mtu": 1450.0, "vectors": 0.0}, "mq")
	chardev := r.qemu.args(t, "chardev-add")
	if got := fmt.Sprint(chardev["backend"]); !strings.Contains(got, r.sock("net1.sock")) || !strings.Contains(got, "reconnect:1") {
		t.Errorf("chardev-add backend %s", got)
	}
	st, ok := r.port("net1")
	if !ok || st.State != backend.PortRunning || st.FrontEnd.Kind != "vhost-user" {
		t.Fatalf("port net1: %+v", st)
	}
	for _, want := range []string{"port net1 added: vhost-user " + r.sock("net1.sock") + " queues=1 mtu=1450",
		"net1 plugged into QEMU 7.2.22: virtio-net-pci mac 52:54:00:00:00:01, vhost-user, host_mtu 1450, vectors=0 (INTx: no KVM)"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestPlugVhostUserKVMQueues: with KVM, MSI-X stays (2*queues+2 vectors)
// and --mtu becomes both host_mtu and the port's offer.
func TestPlugVhostUserKVMQueues(t *testing.T) {
	r := newPlugRig(t)
	r.qemu.kvm = true
	req := r.vhostUser("net2", r.sock("n2.sock")+",queues=2,mtu=9000") // --mtu 9000 folded in
	req.Spec.Name, req.MTU = "vm-net2", 9000
	out, err := r.plug(req)
	if err != nil {
		t.Fatalf("plug: %v\n%s", err, out)
	}
	r.wantProps(map[string]any{"host_mtu": 9000.0, "mq": true, "vectors": 6.0}, "mac")
	if q := r.qemu.args(t, "netdev_add")["queues"]; q != 2.0 {
		t.Errorf("netdev_add queues = %v, want 2", q)
	}
	st, ok := r.port("vm-net2")
	if !ok || st.FrontEnd.OfferedMTU != 9000 || len(st.FrontEnd.Queues) != 2 {
		t.Errorf("port vm-net2: %v, offered MTU %d, %d queue pairs; want 9000 and 2", ok, st.FrontEnd.OfferedMTU, len(st.FrontEnd.Queues))
	}
	if strings.Contains(out, "vectors=0") {
		t.Errorf("vectors=0 under KVM:\n%s", out)
	}
}

// TestPlugStream: a stream NIC has no chardev, no vectors=0 (no vhost),
// host_mtu what a 1500-byte underlay carries; --prop values are typed.
func TestPlugStream(t *testing.T) {
	r := newPlugRig(t)
	req := r.stream("net3", "unix:"+r.sock("n3.sock"))
	req.Spec.L2TPv3 += ",l2spec=default"
	req.Props["romfile"], req.NIC.Bus = "", "pci.0"
	out, err := r.plug(req)
	if err != nil {
		t.Fatalf("plug: %v\n%s", err, out)
	}
	r.wantCommands("query-kvm", "netdev_add", "device_add")
	r.wantProps(map[string]any{"host_mtu": 1446.0, "romfile": "", "bus": "pci.0"}, "vectors", "mq")
	nd := r.qemu.args(t, "netdev_add")
	if nd["type"] != "stream" || fmt.Sprint(nd["addr"]) != "map[path:"+r.sock("n3.sock")+" type:unix]" {
		t.Errorf("netdev_add %v", nd)
	}
	if _, ok := r.port("net3"); !ok {
		t.Error("no port net3")
	}
	if !strings.Contains(out, "port net3: QEMU connected") {
		t.Errorf("output:\n%s", out)
	}
}

// TestPlugRollback: QEMU refuses device_add; the netdev and chardev are
// removed again, so is the daemon's port and its socket file, and the
// user reads QEMU's words with the command's name.
func TestPlugRollback(t *testing.T) {
	r := newPlugRig(t)
	r.qemu.fail["device_add"] = "Bus 'pcie.0' does not support hotplugging"
	req := r.vhostUser("net1", r.sock("net1.sock"))
	req.NIC.Bus = "pcie.0"
	out, err := r.plug(req)
	if err == nil {
		t.Fatalf("plug succeeded:\n%s", out)
	}
	want := "qmp device_add: Bus 'pcie.0' does not support hotplugging (port net1 removed again from the daemon)"
	if err.Error() != want {
		t.Errorf("error:\n %v\nwant\n %s", err, want)
	}
	r.wantCommands("query-kvm", "chardev-add", "netdev_add", "device_add", "netdev_del", "chardev-remove")
	if left := r.qemu.left(); len(left) != 0 {
		t.Errorf("QEMU still has %v", left)
	}
	if _, ok := r.port("net1"); ok {
		t.Error("port net1 still in the daemon")
	}
	if _, err := os.Stat(r.sock("net1.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after rollback: %v", err)
	}

	// A failure at netdev_add: only the chardev to undo.
	delete(r.qemu.fail, "device_add")
	r.qemu.fail["netdev_add"] = "vhost-user requires shared memory"
	_, err = r.plug(r.vhostUser("net1", r.sock("net1.sock")))
	if err == nil || !strings.HasPrefix(err.Error(), "qmp netdev_add: vhost-user requires shared memory (port net1 removed again") {
		t.Errorf("error: %v", err)
	}
	if _, ok := r.port("net1"); ok || len(r.qemu.left()) != 0 {
		t.Errorf("left: port %v, QEMU %v", ok, r.qemu.left())
	}
}

// TestPlugPortRefused: the daemon refuses the port (name taken): QEMU is
// not touched beyond query-kvm and the existing port stays.
func TestPlugPortRefused(t *testing.T) {
	r := newPlugRig(t)
	if _, err := r.ac.AddPort(context.Background(), backend.PortSpec{Name: "net1", Stream: "unix:" + r.sock("a.sock"), L2TPv3: r.l2tpv3()}); err != nil {
		t.Fatal(err)
	}
	_, err := r.plug(r.vhostUser("net1", r.sock("b.sock")))
	if err == nil || !strings.Contains(err.Error(), "(nothing was plugged)") || !errors.Is(err, backend.ErrPortExists) {
		t.Fatalf("err = %v", err)
	}
	r.wantCommands("query-kvm")
	if st, ok := r.port("net1"); !ok || st.FrontEnd.Kind != "stream" {
		t.Errorf("the existing port net1 was touched: %v %+v", ok, st)
	}
}

// TestPlugQEMUUnreachable: no QMP socket, no port opened.
func TestPlugQEMUUnreachable(t *testing.T) {
	r := newPlugRig(t)
	req := r.stream("net1", "unix:"+r.sock("s.sock"))
	req.QMP, req.Timeout = "unix:"+r.sock("none.sock"), 2*time.Second
	_, err := r.plug(req)
	if err == nil || !strings.HasPrefix(err.Error(), "--qmp unix:"+r.sock("none.sock")+": ") {
		t.Fatalf("err = %v", err)
	}
	if _, ok := r.port("net1"); ok {
		t.Error("a port was opened for an unreachable QEMU")
	}
}

// TestUnplug: device_del, DEVICE_DELETED, netdev_del, chardev-remove, then
// the port and its socket file are gone; a second unplug finds nothing.
func TestUnplug(t *testing.T) {
	r := newPlugRig(t)
	if out, err := r.plug(r.vhostUser("net1", r.sock("net1.sock"))); err != nil {
		t.Fatalf("plug: %v\n%s", err, out)
	}
	out, err := r.unplug("net1", 10*time.Second)
	if err != nil {
		t.Fatalf("unplug: %v\n%s", err, out)
	}
	t.Logf("output:\n%s", out)
	r.wantCommands("query-kvm", "chardev-add", "netdev_add", "device_add", "device_del", "netdev_del", "chardev-remove")
	if _, ok := r.port("net1"); ok || len(r.qemu.left()) != 0 {
		t.Errorf("left: port %v, QEMU %v", ok, r.qemu.left())
	}
	if _, err := os.Stat(r.sock("net1.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after unplug: %v", err)
	}
	if !strings.Contains(out, "net1 unplugged from QEMU") || !strings.Contains(out, "port net1 removed: ") {
		t.Errorf("output:\n%s", out)
	}
	_, err = r.unplug("net1", 10*time.Second)
	if err == nil || err.Error() != "nothing to unplug: QEMU has no NIC net1 and the daemon no port net1" {
		t.Errorf("second unplug: %v", err)
	}
}

// TestUnplugGuestKeepsDevice: a guest that never releases the device: the
// user is told, and the port stays for QEMU.
func TestUnplugGuestKeepsDevice(t *testing.T) {
	r := newPlugRig(t)
	r.qemu.keep = true
	if out, err := r.plug(r.stream("net1", "unix:"+r.sock("s.sock"))); err != nil {
		t.Fatalf("plug: %v\n%s", err, out)
	}
	start := time.Now()
	_, err := r.unplug("net1", 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "the guest did not release the device") ||
		!strings.Contains(err.Error(), "port net1 left in the daemon") {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("unplug took %v with --timeout 300ms", d)
	}
	if _, ok := r.port("net1"); !ok {
		t.Error("the port was removed while QEMU still has the device")
	}
	r.wantCommands("query-kvm", "netdev_add", "device_add", "device_del")
}

// TestUnplugQEMUSideGone: QEMU has nothing by the id (an earlier unplug
// got that far): the port is still removed.
func TestUnplugQEMUSideGone(t *testing.T) {
	r := newPlugRig(t)
	if _, err := r.ac.AddPort(context.Background(), backend.PortSpec{Name: "net1", Stream: "unix:" + r.sock("a.sock"), L2TPv3: r.l2tpv3()}); err != nil {
		t.Fatal(err)
	}
	out, err := r.unplug("net1", 10*time.Second)
	if err != nil || !strings.Contains(out, "QEMU has no NIC net1 (already unplugged?)") || !strings.Contains(out, "port net1 removed") {
		t.Fatalf("unplug: %v\n%s", err, out)
	}
	if _, ok := r.port("net1"); ok {
		t.Error("port net1 still there")
	}
}
