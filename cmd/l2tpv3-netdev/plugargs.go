package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/frontend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/plug"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/qmp"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/vhostuser"
)

const plugUsage = `Usage: l2tpv3-netdev plug --qmp unix:PATH --id ID [--mac MAC] [--name PORT] [--admin PATH]
           (--vhost-user PATH[,queues=N][,mtu=N] | --stream unix:PATH) --l2tpv3 OPTIONS
           [--mtu N] [--bus BUS] [--prop KEY=VALUE]... [--batch N] [--timeout 30s]

Hot-plugs a virtio-net NIC into a running QEMU, carried by a new port of the
running daemon:
  1. the daemon opens port PORT (admin API): its socket listens before QEMU
     is told about it (QEMU waits inside netdev_add for a vhost-user back end);
  2. over QMP: chardev-add (vhost-user), netdev_add, device_add virtio-net-pci
     with the MAC, host_mtu = the port's MTU, mq=on for queues=N.
A step that fails undoes those before it (netdev_del, chardev-remove, the
port closed again) and prints QEMU's error with the command QEMU refused.

  --qmp unix:PATH    QEMU's QMP socket (-qmp unix:PATH,server=on,wait=off)
  --id ID            QEMU id of the device and the netdev (chardev chr-ID): a
                     letter, then letters, digits, '-', '.' or '_'
  --name PORT        the daemon's port (default: ID)
  --mac MAC          the guest NIC's unicast MAC (default: QEMU picks one)
  --vhost-user PATH[,queues=N][,mtu=N][,owner=,group=,mode=,allow-uid=]
                     a vhost-user port; QEMU connects to it (chardev reconnect=1);
                     guest RAM must be shared (memory-backend-memfd,share=on)
  --stream unix:PATH[,owner=,group=,mode=,allow-uid=]
                     a -netdev stream port; QEMU connects to it (QEMU 7.2 once, at
                     netdev_add)
  --l2tpv3 OPTIONS   the port's pseudowire (the daemon's --l2tpv3)
  --mtu N            the guest's MTU (host_mtu). Default: the port's, which is
                     what a 1500-byte underlay carries (1500 - overhead - 14);
                     for vhost-user it becomes the port's mtu= as well
  --bus BUS          PCI bus (q35: the id of a hot-plug capable pcie-root-port;
                     default: QEMU's choice, pci.0 on pc)
  --prop KEY=VALUE   one more device_add property (repeatable); whole numbers
                     and on/off/true/false are sent typed, e.g. --prop romfile=
  --batch N          the port's frames per batch (default 64)
  --timeout D        bound on reaching QEMU and the QMP steps (default 30s)
  --admin PATH       the daemon's admin socket (default $L2TPV3_NETDEV_ADMIN or ` + defaultAdminPath + `)

A vhost-user NIC gets vectors=0 (INTx) when QEMU runs without KVM (query-kvm
says so): QEMU 7.2 under TCG crashes (SIGSEGV) when the guest starts a
vhost-user NIC on MSI-X, with one queue pair or several. With KVM the NIC keeps
MSI-X (QEMU's default, 2*queues+2 vectors with mq). --prop vectors=N overrides.
`

const unplugUsage = `Usage: l2tpv3-netdev unplug --qmp unix:PATH --id ID [--name PORT] [--admin PATH] [--timeout 10s]

Removes a NIC that plug added: over QMP device_del, then waits for QEMU's
DEVICE_DELETED (the guest must release the device), netdev_del and
chardev-remove; then the daemon closes port PORT (its socket file removed).
If the guest does not release the device within --timeout, unplug says so and
leaves the port to QEMU: run unplug again later.

  --qmp unix:PATH    QEMU's QMP socket
  --id ID            the id given to plug
  --name PORT        the daemon's port (default: ID)
  --timeout D        how long to wait for the guest (default 10s)
  --admin PATH       the daemon's admin socket (default $L2TPV3_NETDEV_ADMIN or ` + defaultAdminPath + `)
`

// plugRequest is a validated plug command line.
type plugRequest = plug.Request

// unplugRequest is a validated unplug command line.
type unplugRequest = plug.UnplugRequest

// plugMain is `l2tpv3-netdev plug`; Ctrl-C during it undoes what was done.
func plugMain(args []string, out, _ io.Writer) error {
	r, err := parsePlugArgs(args, out)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return plug.Plug(ctx, r, out)
}

// unplugMain is `l2tpv3-netdev unplug`.
func unplugMain(args []string, out, _ io.Writer) error {
	r, err := parseUnplugArgs(args, out)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return plug.Unplug(ctx, r, out)
}

// propFlag collects repeated --prop KEY=VALUE into typed device properties.
type propFlag map[string]any

// String is required by flag.Value.
func (p propFlag) String() string { return "" }

// Set reads one KEY=VALUE: whole numbers and booleans typed as QEMU's
// device_add wants them (it takes JSON types), anything else a string.
func (p propFlag) Set(kv string) error {
	key, val, ok := strings.Cut(kv, "=")
	switch {
	case !ok || key == "":
		return fmt.Errorf("want KEY=VALUE, e.g. romfile=")
	case key == "driver" || key == "id" || key == "netdev":
		return fmt.Errorf("%s is set by plug itself", key)
	}
	if n, err := strconv.ParseInt(val, 10, 64); err == nil {
		p[key] = n
		return nil
	}
	switch val {
	case "on", "true", "yes":
		p[key] = true
	case "off", "false", "no":
		p[key] = false
	default:
		p[key] = val
	}
	return nil
}

// parsePlugArgs validates the plug command line; every refusal names the
// option. The spec is also parsed here, so a bad --l2tpv3 never reaches
// the daemon.
func parsePlugArgs(args []string, out io.Writer) (plugRequest, error) {
	r := plugRequest{Props: map[string]any{}}
	fs := newFlagSet("plug")
	adminPath := adminFlag(fs)
	fs.StringVar(&r.QMP, "qmp", "", "")
	fs.StringVar(&r.NIC.ID, "id", "", "")
	fs.StringVar(&r.Spec.Name, "name", "", "")
	fs.StringVar(&r.NIC.MAC, "mac", "", "")
	fs.StringVar(&r.Spec.VhostUser, "vhost-user", "", "")
	fs.StringVar(&r.Spec.Stream, "stream", "", "")
	fs.StringVar(&r.Spec.L2TPv3, "l2tpv3", "", "")
	fs.IntVar(&r.MTU, "mtu", 0, "")
	fs.StringVar(&r.NIC.Bus, "bus", "", "")
	fs.Var(propFlag(r.Props), "prop", "")
	fs.IntVar(&r.Spec.Batch, "batch", 0, "")
	fs.DurationVar(&r.Timeout, "timeout", 30*time.Second, "")
	if err := fs.Parse(args); err != nil {
		return r, flagError(err, plugUsage, out)
	}
	r.Admin = *adminPath
	if err := checkQMPAndID(fs, r.QMP, r.NIC.ID, r.Timeout); err != nil {
		return r, err
	}
	if r.Spec.Name == "" {
		r.Spec.Name = r.NIC.ID
	}
	switch {
	case r.NIC.MAC != "" && !unicastMAC(r.NIC.MAC):
		return r, usagef("--mac %q: want a unicast Ethernet address such as 52:54:00:12:34:56", r.NIC.MAC)
	case r.Spec.VhostUser != "" && r.Spec.Stream != "":
		return r, usagef("--vhost-user and --stream are exclusive: one back end per NIC")
	case r.Spec.VhostUser == "" && r.Spec.Stream == "":
		return r, usagef("--vhost-user PATH or --stream unix:PATH is required (the port QEMU connects to)")
	case r.Spec.L2TPv3 == "":
		return r, usagef("--l2tpv3 is required (the port's pseudowire)")
	case r.MTU != 0 && (r.MTU < vhostuser.MinMTU || r.MTU > vhostuser.MaxMTU):
		return r, usagef("--mtu %d: want %d..%d", r.MTU, vhostuser.MinMTU, vhostuser.MaxMTU)
	}
	if err := frontEnd(&r); err != nil {
		return r, usageError{err}
	}
	// The daemon gets QEMU's QMP socket too, so that port link NAME down
	// takes the guest NIC's carrier down (set_link on the device id).
	qmpAddr, err := absFirst(r.QMP, "unix:")
	if err != nil {
		return r, usageError{err}
	}
	r.Spec.QMP, r.Spec.QMPID = qmpAddr, r.NIC.ID
	cfg, err := r.Spec.Parse()
	if err != nil {
		return r, usageError{err}
	}
	r.Config = cfg
	r.DefaultMTU, _ = innerMTU(cfg.L2TP)
	return r, nil
}

// checkQMPAndID refuses a plug or unplug line without --qmp or --id, with
// an id QEMU would refuse, extra arguments or a useless --timeout.
func checkQMPAndID(fs *flag.FlagSet, qmpAddr, id string, timeout time.Duration) error {
	switch {
	case fs.NArg() > 0:
		return usagef("unexpected argument %q", fs.Arg(0))
	case qmpAddr == "":
		return usagef("--qmp unix:PATH is required (QEMU's -qmp unix:PATH,server=on,wait=off)")
	case !strings.HasPrefix(qmpAddr, "unix:") && strings.Contains(qmpAddr, ":"):
		return usagef("--qmp %q: want unix:PATH (a QMP unix socket)", qmpAddr)
	case id == "":
		return usagef("--id is required (QEMU's id of the NIC)")
	case !qemuID(id):
		return usagef("--id %q: want a letter, then letters, digits, '-', '.' or '_'", id)
	case timeout <= 0:
		return usagef("--timeout %v: want a positive duration such as 10s", timeout)
	}
	return nil
}

// frontEnd checks the front end is one QEMU can be told to connect to (a
// unix socket the daemon listens on), makes its path absolute (the daemon
// and QEMU have working directories of their own), folds --mtu into a
// vhost-user spec and sets the NIC's kind.
func frontEnd(r *plugRequest) error {
	if r.Spec.VhostUser != "" {
		a, err := frontend.ParseVhostUserAddr(r.Spec.VhostUser)
		if err != nil {
			return err
		}
		if !a.Server {
			return fmt.Errorf("--vhost-user %q: server=off cannot be plugged: QEMU's hot-plugged chardev is the client, the daemon must listen", r.Spec.VhostUser)
		}
		switch {
		case r.MTU != 0 && a.MTU == 0:
			r.Spec.VhostUser += ",mtu=" + strconv.Itoa(r.MTU)
		case r.MTU != 0 && a.MTU != r.MTU:
			return fmt.Errorf("--mtu %d differs from --vhost-user mtu=%d: the guest's MTU and the port's offer must match", r.MTU, a.MTU)
		}
		r.NIC.Kind = qmp.VhostUser
		r.Spec.VhostUser, err = absFirst(r.Spec.VhostUser, "")
		return err
	}
	a, err := frontend.ParseStreamAddr(r.Spec.Stream)
	if err != nil {
		return err
	}
	if a.Network != "unix" || !a.Server {
		return fmt.Errorf("--stream %q: want unix:PATH with the daemon listening (server=on, the default): QEMU's hot-plugged stream netdev connects to it", r.Spec.Stream)
	}
	r.NIC.Kind = qmp.Stream
	r.Spec.Stream, err = absFirst(r.Spec.Stream, "unix:")
	return err
}

// absFirst makes the path in "PREFIXPATH[,k=v...]" absolute.
func absFirst(spec, prefix string) (string, error) {
	path, rest, _ := strings.Cut(strings.TrimPrefix(spec, prefix), ",")
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if rest != "" {
		rest = "," + rest
	}
	return prefix + abs + rest, nil
}

// qemuID is QEMU's id_wellformed: a letter, then [A-Za-z0-9._-].
func qemuID(id string) bool {
	for i, c := range id {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (i == 0 || !(c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_')) {
			return false
		}
	}
	return id != "" && len(id) <= 64
}

// unicastMAC reports whether s is a 6-byte Ethernet address a NIC can own
// (not multicast or broadcast).
func unicastMAC(s string) bool {
	hw, err := net.ParseMAC(s)
	return err == nil && len(hw) == 6 && hw[0]&1 == 0
}

// parseUnplugArgs validates the unplug command line.
func parseUnplugArgs(args []string, out io.Writer) (unplugRequest, error) {
	var r unplugRequest
	fs := newFlagSet("unplug")
	adminPath := adminFlag(fs)
	fs.StringVar(&r.QMP, "qmp", "", "")
	fs.StringVar(&r.ID, "id", "", "")
	fs.StringVar(&r.Name, "name", "", "")
	fs.DurationVar(&r.Timeout, "timeout", 10*time.Second, "")
	if err := fs.Parse(args); err != nil {
		return r, flagError(err, unplugUsage, out)
	}
	r.Admin = *adminPath
	if err := checkQMPAndID(fs, r.QMP, r.ID, r.Timeout); err != nil {
		return r, err
	}
	if r.Name == "" {
		r.Name = r.ID
	}
	return r, nil
}
