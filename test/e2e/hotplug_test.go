package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/qmp"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/test/guest"
)

// hotplugTimeout bounds one plug or unplug, guest included, under TCG.
const hotplugTimeout = 60 * time.Second

// TestHotplugVhostUser: VM A boots with no NIC at all; a NIC on the
// sidecar's vhost-user socket is plugged into it over QMP and pings VM B
// (QEMU's own l2tpv3) through the pseudowire, is unplugged (the guest
// releases it: DEVICE_DELETED, and its ethX is gone), and is plugged again
// under the same id and pings again.
func TestHotplugVhostUser(t *testing.T) {
	hotplugScenario(t, qmp.VhostUser)
}

// TestHotplugStream: the same with a -netdev stream NIC, QEMU the client
// of the sidecar's --stream unix:PATH listener (QEMU 7.2 connects once, at
// netdev_add: the sidecar listens first).
func TestHotplugStream(t *testing.T) {
	hotplugScenario(t, qmp.Stream)
}

// hotplugScenario runs plug, ping, unplug, plug, ping for one kind of NIC.
func hotplugScenario(t *testing.T, kind qmp.Kind) {
	guest.Require(t)
	sock := filepath.Join(guest.SocketDir(t), "nic.sock")
	ps, pn := guest.FreeUDPPort(), guest.FreeUDPPort()
	opts := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x41,rxsession=0x42", ps, pn)
	native := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x42,rxsession=0x41", pn, ps)
	nic := qmp.NIC{ID: "net1", MAC: guest.MAC(1), Kind: kind, SocketPath: sock,
		Bus:   "pci.0", // pc machine: ACPI PCI hot-plug on the root bus
		Props: map[string]any{"romfile": ""}}
	var sc *sidecar
	if kind == qmp.VhostUser {
		sc = startSidecar(t, "--vhost-user", sock, "--l2tpv3", opts)
		nic.Props["vectors"] = 0 // QEMU 7.2 under TCG crashes starting an MSI-X vhost-user NIC
	} else {
		sc = startSidecar(t, "--stream", "unix:"+sock, "--l2tpv3", opts)
	}
	a := guest.Start(t, guest.Options{Name: "vmA", QMP: true, SharedMemory: true})
	b := guest.Start(t, guest.Options{Name: "vmB", IPs: []string{"169.254.101.2/24"},
		Args: append(guest.NativeL2TPv3(native), guest.NIC("n0", 2)...)})
	a.MustWaitReady(bootTimeout)
	b.MustWaitReady(bootTimeout)
	if got := guestNICs(t, a); len(got) != 0 {
		t.Fatalf("VM A booted with NICs %v, want none", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*hotplugTimeout)
	defer cancel()
	c, err := qmp.Dial(ctx, "unix:"+a.QMPPath())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Logf("QMP: QEMU %s", c.Version())

	for round := 1; round <= 2; round++ {
		start := time.Now()
		if err := qmp.Plug(ctx, c, nic); err != nil {
			t.Fatalf("round %d: Plug: %v", round, err)
		}
		eth := waitNICs(t, a, 1)[0]
		t.Logf("round %d: guest sees %s %v after Plug", round, eth, time.Since(start).Round(time.Millisecond))
		a.MustRun(fmt.Sprintf("ip link set %s up && ip addr add 169.254.101.1/24 dev %s", eth, eth), 10*time.Second)
		if err := a.Ping("169.254.101.2", 3, pingTimeout); err != nil {
			t.Fatalf("round %d: A→B over the plugged NIC: %v\n%s", round, err, sc.counters())
		}
		if err := b.Ping("169.254.101.1", 2, pingTimeout); err != nil {
			t.Fatalf("round %d: B→A: %v", round, err)
		}
		if round == 2 {
			break
		}
		unplug(t, c, a, nic.ID)
	}
	t.Logf("counters: %s", sc.counters())
}

// unplug removes the NIC id over QMP and checks that QEMU said
// DEVICE_DELETED for it and that the guest no longer has it.
func unplug(t *testing.T, c *qmp.Client, vm *guest.VM, id string) {
	t.Helper()
	sub := c.Subscribe("DEVICE_DELETED", nil) // the test's own witness, besides Unplug's
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), hotplugTimeout)
	defer cancel()
	start := time.Now()
	if err := qmp.Unplug(ctx, c, id); err != nil {
		t.Fatalf("Unplug: %v", err)
	}
	t.Logf("unplugged %s in %v", id, time.Since(start).Round(time.Millisecond))
	var seen []string
	for {
		ev, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("no DEVICE_DELETED for %s (saw %v): %v", id, seen, err)
		}
		var d struct{ Device, Path string }
		json.Unmarshal(ev.Data, &d)
		seen = append(seen, d.Device+"@"+d.Path)
		if d.Device == id {
			break
		}
	}
	waitNICs(t, vm, 0)
}

// guestNICs lists the guest's network interfaces other than lo.
func guestNICs(t *testing.T, vm *guest.VM) []string {
	t.Helper()
	var nics []string
	for _, n := range strings.Fields(vm.MustRun("ls /sys/class/net", 10*time.Second)) {
		if n != "lo" {
			nics = append(nics, n)
		}
	}
	return nics
}

// waitNICs polls the guest until it has exactly n interfaces besides lo
// (a hot-plug or unplug takes the guest a moment) and returns them.
func waitNICs(t *testing.T, vm *guest.VM, n int) []string {
	t.Helper()
	deadline := time.Now().Add(hotplugTimeout)
	for {
		nics := guestNICs(t, vm)
		if len(nics) == n {
			return nics
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: interfaces %v, want %d besides lo after %v; dmesg:\n%s",
				vm.Name, nics, n, hotplugTimeout, vm.MustRun("dmesg | tail -n 30", 10*time.Second))
		}
		time.Sleep(500 * time.Millisecond)
	}
}
