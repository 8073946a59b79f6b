package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// qemuModel is a fake QEMU's NIC bookkeeping: it refuses what QEMU 7.2
// refuses (duplicates, unknown ids, with QEMU's words) and emits
// DEVICE_DELETED on device_del as the test asks.
type qemuModel struct {
	failDevice string // if set, device_add fails with this description
	// unplug says when DEVICE_DELETED comes: "before" or "after" the
	// device_del reply, "never" (a guest without hot-plug).
	unplug string

	mu      sync.Mutex // guards the maps
	chardev map[string]bool
	netdev  map[string]bool
	device  map[string]bool
}

// newModel returns an empty model.
func newModel() *qemuModel {
	return &qemuModel{unplug: "after", chardev: map[string]bool{}, netdev: map[string]bool{}, device: map[string]bool{}}
}

// handle answers one command as QEMU 7.2 would.
func (m *qemuModel) handle(s *fakeSession, req fakeRequest) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var a struct{ ID string }
	json.Unmarshal(req.Arguments, &a)
	switch req.Execute {
	case "chardev-add":
		m.add(s, req, m.chardev, a.ID, "attempt to add duplicate property '"+a.ID+"' to object (type 'container')")
	case "chardev-remove":
		m.del(s, req, m.chardev, a.ID, "GenericError", "Chardev '"+a.ID+"' not found")
	case "netdev_add":
		m.add(s, req, m.netdev, a.ID, "Duplicate ID '"+a.ID+"' for netdev")
	case "netdev_del":
		m.del(s, req, m.netdev, a.ID, "DeviceNotFound", "Device '"+a.ID+"' not found")
	case "device_add":
		if m.failDevice != "" {
			s.fail(req, "GenericError", m.failDevice)
			return
		}
		m.add(s, req, m.device, a.ID, "Duplicate device ID '"+a.ID+"'")
	case "device_del":
		if !m.device[a.ID] {
			s.fail(req, "DeviceNotFound", "Device '"+a.ID+"' not found")
			return
		}
		m.deviceDel(s, req, a.ID)
	default:
		s.fail(req, "CommandNotFound", "The command "+req.Execute+" has not been found")
	}
}

// left lists what is still plugged: chardevs, netdevs and devices.
func (m *qemuModel) left() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []string
	for _, set := range []map[string]bool{m.chardev, m.netdev, m.device} {
		for id := range set {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return strings.Join(ids, " ")
}

// add creates id in set, or refuses a duplicate.
func (m *qemuModel) add(s *fakeSession, req fakeRequest, set map[string]bool, id, dup string) {
	if set[id] {
		s.fail(req, "GenericError", dup)
		return
	}
	set[id] = true
	s.reply(req, struct{}{})
}

// del removes id from set, or says it is not there.
func (m *qemuModel) del(s *fakeSession, req fakeRequest, set map[string]bool, id, class, notFound string) {
	if !set[id] {
		s.fail(req, class, notFound)
		return
	}
	delete(set, id)
	s.reply(req, struct{}{})
}

// deviceDel answers device_del and sends DEVICE_DELETED (with a path-only
// one for the device's inner part first, as QEMU does) when the model says.
func (m *qemuModel) deviceDel(s *fakeSession, req fakeRequest, id string) {
	deleted := func() {
		delete(m.device, id)
		s.event("DEVICE_DELETED", map[string]string{"path": "/machine/peripheral/" + id + "/virtio-backend"})
		s.event("DEVICE_DELETED", map[string]string{"device": id, "path": "/machine/peripheral/" + id})
	}
	switch m.unplug {
	case "before":
		deleted()
		s.reply(req, struct{}{})
	case "after":
		s.reply(req, struct{}{})
		go func() { // the guest takes a moment to eject the device
			time.Sleep(30 * time.Millisecond)
			m.mu.Lock()
			defer m.mu.Unlock()
			deleted()
		}()
	default:
		s.reply(req, struct{}{})
	}
}

// listening makes a unix socket that a back end would listen on.
func listening(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "be.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return path
}

// args decodes the i-th command's arguments as a generic map.
func args(t *testing.T, f *fakeQEMU, i int) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(f.request(i).Arguments, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// wantJSON compares got with the JSON text want.
func wantJSON(t *testing.T, what string, got map[string]any, want string) {
	t.Helper()
	var w map[string]any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, w) {
		g, _ := json.Marshal(got)
		t.Errorf("%s:\n got %s\nwant %s", what, g, want)
	}
}

// wantCommands checks the commands the fake received after qmp_capabilities.
func wantCommands(t *testing.T, f *fakeQEMU, want ...string) {
	t.Helper()
	if got := f.commands()[1:]; !slices.Equal(got, want) {
		t.Errorf("commands %v, want %v", got, want)
	}
}

// TestPlugVhostUser: chardev-add, netdev_add and device_add with the
// shapes QEMU 7.2 takes (checked against its query-qmp-schema).
func TestPlugVhostUser(t *testing.T) {
	m := newModel()
	f := newFakeQEMU(t, m.handle)
	c := dial(t, f)
	sock := listening(t)
	err := Plug(testCtx(t), c, NIC{ID: "net1", MAC: "52:54:00:4c:00:01", Kind: VhostUser, SocketPath: sock,
		Queues: 2, HostMTU: 1450, Bus: "pci.0", Props: map[string]any{"romfile": ""}})
	if err != nil {
		t.Fatal(err)
	}
	wantCommands(t, f, "chardev-add", "netdev_add", "device_add")
	wantJSON(t, "chardev-add", args(t, f, 1), `{"id":"chr-net1","backend":{"type":"socket","data":{
		"addr":{"type":"unix","data":{"path":"`+sock+`"}},"server":false,"reconnect":1}}}`)
	wantJSON(t, "netdev_add", args(t, f, 2), `{"type":"vhost-user","id":"net1","chardev":"chr-net1","queues":2}`)
	wantJSON(t, "device_add", args(t, f, 3), `{"driver":"virtio-net-pci","id":"net1","netdev":"net1",
		"mac":"52:54:00:4c:00:01","host_mtu":1450,"bus":"pci.0","mq":true,"vectors":6,"romfile":""}`)
}

// TestPlugStream: a stream NIC is netdev_add (client of the sidecar's
// socket) and device_add; Props override the defaults.
func TestPlugStream(t *testing.T) {
	m := newModel()
	f := newFakeQEMU(t, m.handle)
	c := dial(t, f)
	sock := listening(t)
	if err := Plug(testCtx(t), c, NIC{ID: "s1", Kind: Stream, SocketPath: sock, Props: map[string]any{"vectors": 0}}); err != nil {
		t.Fatal(err)
	}
	wantCommands(t, f, "netdev_add", "device_add")
	wantJSON(t, "netdev_add", args(t, f, 1), `{"type":"stream","id":"s1","server":false,"addr":{"type":"unix","path":"`+sock+`"}}`)
	wantJSON(t, "device_add", args(t, f, 2), `{"driver":"virtio-net-pci","id":"s1","netdev":"s1","vectors":0}`)
}

// TestPlugRollback: a failed step undoes the ones before it, last first,
// and the caller gets QEMU's error for the failed step.
func TestPlugRollback(t *testing.T) {
	t.Run("device_add", func(t *testing.T) {
		m := newModel()
		m.failDevice = "Bus 'rp9' not found"
		f := newFakeQEMU(t, m.handle)
		c := dial(t, f)
		err := Plug(testCtx(t), c, NIC{ID: "net1", Kind: VhostUser, SocketPath: listening(t), Bus: "rp9"})
		var qe *Error
		if !errors.As(err, &qe) || qe.Command != "device_add" || qe.Desc != "Bus 'rp9' not found" {
			t.Fatalf("Plug: %v, want device_add's error", err)
		}
		wantCommands(t, f, "chardev-add", "netdev_add", "device_add", "netdev_del", "chardev-remove")
		wantJSON(t, "netdev_del", args(t, f, 4), `{"id":"net1"}`)
		wantJSON(t, "chardev-remove", args(t, f, 5), `{"id":"chr-net1"}`)
		if left := m.left(); left != "" {
			t.Errorf("left behind: %s", left)
		}
	})
	t.Run("netdev_add", func(t *testing.T) {
		m := newModel()
		m.netdev["net1"] = true // taken by someone else
		f := newFakeQEMU(t, m.handle)
		c := dial(t, f)
		err := Plug(testCtx(t), c, NIC{ID: "net1", Kind: VhostUser, SocketPath: listening(t)})
		if err == nil || err.Error() != "qmp netdev_add: Duplicate ID 'net1' for netdev" {
			t.Fatalf("Plug: %v", err)
		}
		wantCommands(t, f, "chardev-add", "netdev_add", "chardev-remove")
		if left := m.left(); left != "net1" {
			t.Errorf("after rollback %q is plugged, want the other user's netdev net1 alone", left)
		}
	})
	t.Run("stream-device_add", func(t *testing.T) {
		m := newModel()
		m.device["s1"] = true
		f := newFakeQEMU(t, m.handle)
		c := dial(t, f)
		err := Plug(testCtx(t), c, NIC{ID: "s1", Kind: Stream, SocketPath: listening(t)})
		if err == nil || err.Error() != "qmp device_add: Duplicate device ID 's1'" {
			t.Fatalf("Plug: %v", err)
		}
		wantCommands(t, f, "netdev_add", "device_add", "netdev_del")
	})
}

// TestPlugRefusals: a NIC QEMU would refuse, or hang on, sends nothing.
func TestPlugRefusals(t *testing.T) {
	sock := listening(t)
	notSock := filepath.Join(t.TempDir(), "missing.sock")
	for _, tc := range []struct {
		name string
		nic  NIC
		want string
	}{
		{"empty-id", NIC{Kind: Stream, SocketPath: sock}, "ID must be"},
		{"digit-id", NIC{ID: "1net", Kind: Stream, SocketPath: sock}, "ID must be"},
		{"comma-id", NIC{ID: "n,1", Kind: Stream, SocketPath: sock}, "ID must be"},
		{"kind", NIC{ID: "n1", Kind: "tap", SocketPath: sock}, "Kind"},
		{"mac", NIC{ID: "n1", Kind: Stream, SocketPath: sock, MAC: "52:54:00"}, "MAC"},
		{"stream-mq", NIC{ID: "n1", Kind: Stream, SocketPath: sock, Queues: 2}, "Queues"},
		{"mtu", NIC{ID: "n1", Kind: Stream, SocketPath: sock, HostMTU: 67}, "HostMTU"},
		{"no-backend", NIC{ID: "n1", Kind: VhostUser, SocketPath: notSock}, "start the back end first"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeQEMU(t, newModel().handle)
			c := dial(t, f)
			err := Plug(testCtx(t), c, tc.nic)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Plug: %v, want an error about %s", err, tc.want)
			}
			wantCommands(t, f)
		})
	}
}

// TestUnplug: device_del, wait for this device's DEVICE_DELETED whether it
// comes before or after the reply, then netdev_del and chardev-remove.
func TestUnplug(t *testing.T) {
	for _, when := range []string{"before", "after"} {
		t.Run(when, func(t *testing.T) {
			m := newModel()
			m.unplug = when
			f := newFakeQEMU(t, m.handle)
			c := dial(t, f)
			if err := Plug(testCtx(t), c, NIC{ID: "net1", Kind: VhostUser, SocketPath: listening(t)}); err != nil {
				t.Fatal(err)
			}
			if err := Unplug(testCtx(t), c, "net1"); err != nil {
				t.Fatal(err)
			}
			wantCommands(t, f, "chardev-add", "netdev_add", "device_add", "device_del", "netdev_del", "chardev-remove")
			if left := m.left(); left != "" {
				t.Errorf("left behind: %s", left)
			}
			// Plugging the same id again works.
			if err := Plug(testCtx(t), c, NIC{ID: "net1", Kind: VhostUser, SocketPath: listening(t)}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestUnplugStream: a stream NIC has no chardev; chardev-remove's "not
// found" is no error.
func TestUnplugStream(t *testing.T) {
	m := newModel()
	f := newFakeQEMU(t, m.handle)
	c := dial(t, f)
	if err := Plug(testCtx(t), c, NIC{ID: "s1", Kind: Stream, SocketPath: listening(t)}); err != nil {
		t.Fatal(err)
	}
	if err := Unplug(testCtx(t), c, "s1"); err != nil {
		t.Fatal(err)
	}
	wantCommands(t, f, "netdev_add", "device_add", "device_del", "netdev_del", "chardev-remove")
}

// TestUnplugGuestNeverReleases: without DEVICE_DELETED, Unplug gives up with
// ctx, says why, and leaves the back end alone.
func TestUnplugGuestNeverReleases(t *testing.T) {
	m := newModel()
	m.unplug = "never"
	f := newFakeQEMU(t, m.handle)
	c := dial(t, f)
	if err := Plug(testCtx(t), c, NIC{ID: "net1", Kind: VhostUser, SocketPath: listening(t)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := Unplug(ctx, c, "net1")
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "hot-plug") {
		t.Fatalf("Unplug: %v, want a deadline error about hot-plug support", err)
	}
	wantCommands(t, f, "chardev-add", "netdev_add", "device_add", "device_del")
}

// TestUnplugUnknown: an id with neither device nor netdev is QEMU's error;
// a device already gone with its netdev still there is cleaned up.
func TestUnplugUnknown(t *testing.T) {
	m := newModel()
	f := newFakeQEMU(t, m.handle)
	c := dial(t, f)
	err := Unplug(testCtx(t), c, "ghost")
	var qe *Error
	if !errors.As(err, &qe) || qe.Command != "device_del" || qe.Class != "DeviceNotFound" {
		t.Fatalf("Unplug(ghost): %v", err)
	}
	m.mu.Lock()
	m.netdev["half"], m.chardev["chr-half"] = true, true
	m.mu.Unlock()
	if err := Unplug(testCtx(t), c, "half"); err != nil {
		t.Fatalf("Unplug(half): %v", err)
	}
	if left := m.left(); left != "" {
		t.Errorf("left behind: %s", left)
	}
}
