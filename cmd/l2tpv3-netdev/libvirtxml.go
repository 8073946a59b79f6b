package main

import (
	"crypto/sha256"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/frontend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
)

const libvirtXMLUsage = `Usage: l2tpv3-netdev libvirt-xml --id ID --vhost-user PATH[,server=on|off][,queues=N][,mtu=N]
                                [--mac MAC] [--l2tpv3 OPTIONS] [--domain NAME]

Prints, on standard output, the libvirt <interface type='vhostuser'> element
for one sidecar port, ready for virsh edit or virsh attach-device; on standard
error, what the domain needs besides (shared guest memory) and the command
that starts the sidecar for that interface.

  --id ID          the interface's name: libvirt alias ua-ID, sidecar --name ID
                   (1..64 letters, digits, '-', '_' or '.'); required
  --vhost-user PATH[,server=on|off][,queues=N][,mtu=N]
                   the sidecar's vhost-user socket, as the sidecar takes it; PATH
                   absolute. server=on (default): the sidecar listens and libvirt
                   connects (mode='client', reconnect every second); server=off:
                   libvirt listens (mode='server') and the sidecar dials
  --mac MAC        the guest NIC's MAC (default: generated from ID and PATH,
                   locally administered, the same on every run)
  --l2tpv3 OPTIONS the sidecar's --l2tpv3 string; without mtu=, the interface MTU
                   is then what a 1500-byte underlay carries (1500 - overhead - 14)
  --domain NAME    print a whole minimal domain (type qemu, 512 MiB, a vCPU per queue
                   pair, shared memory, serial console, the interface) instead of
                   the element alone
  --qemu-user USER the user libvirt runs QEMU as (qemu.conf user=; default
                   libvirt-qemu, Debian's): the printed sidecar command gives it the
                   socket with owner=USER unless --vhost-user has owner, group or mode
`

// libvirtRequest is a validated libvirt-xml command line.
type libvirtRequest struct {
	ID        string
	MAC       net.HardwareAddr
	Generated bool // MAC derived from ID and socket path, not given
	Vhost     frontend.VhostUserAddr
	MTU       int            // interface MTU; 0: none
	Underlay  *l2tp.Underlay // what MTU was derived from; nil: mtu= given, or no --l2tpv3
	L2TPv3    string         // the --l2tpv3 string, "" if not given
	Domain    string         // --domain NAME, "" for the interface element alone
	Spec      string         // the --vhost-user string as given
	QEMUUser  string         // --qemu-user: who QEMU runs as, "" to leave the socket as it is
}

// libvirtXMLMain is the libvirt-xml subcommand: XML on out (pastable as it
// is), advice for the user on errOut; a refused command line is an error.
func libvirtXMLMain(args []string, out, errOut io.Writer) error {
	r, err := parseLibvirtArgs(args, out)
	if errors.Is(err, errHelpShown) {
		return nil
	}
	if err != nil {
		return usageError{err}
	}
	if r.Domain != "" {
		_, err = io.WriteString(out, domainXML(r))
	} else {
		_, err = io.WriteString(out, interfaceXML(r, ""))
	}
	if err != nil {
		return err
	}
	_, err = io.WriteString(errOut, libvirtAdvice(r))
	return err
}

// parseLibvirtArgs validates the command line; every refusal names the
// option, so the user knows what to change.
func parseLibvirtArgs(args []string, out io.Writer) (libvirtRequest, error) {
	var r libvirtRequest
	fs := flag.NewFlagSet("libvirt-xml", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&r.ID, "id", "", "")
	mac := fs.String("mac", "", "")
	fs.StringVar(&r.Spec, "vhost-user", "", "")
	stream := fs.String("stream", "", "")
	fs.StringVar(&r.L2TPv3, "l2tpv3", "", "")
	fs.StringVar(&r.Domain, "domain", "", "")
	fs.StringVar(&r.QEMUUser, "qemu-user", "libvirt-qemu", "")
	help := fs.Bool("help", false, "")
	fs.BoolVar(help, "h", false, "")
	if err := fs.Parse(args); err != nil {
		return r, err
	}
	switch {
	case *help:
		fmt.Fprint(out, libvirtXMLUsage)
		return r, errHelpShown
	case fs.NArg() > 0:
		return r, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case *stream != "":
		return r, errors.New("--stream: libvirt has no interface for a QEMU -netdev stream socket of your own " +
			"(its type='user' + passt backend runs passt itself); use --vhost-user PATH " +
			"(libvirt <interface type='vhostuser'>) and start the sidecar with the same --vhost-user")
	case r.ID == "":
		return r, errors.New("--id is required (the interface's name: alias ua-ID)")
	case !backend.ValidPortName(r.ID): // also a libvirt alias after "ua-"
		return r, fmt.Errorf("--id %q: want 1..64 letters, digits, '-', '_' or '.'", r.ID)
	case r.Spec == "":
		return r, errors.New("--vhost-user PATH is required (the socket libvirt and the sidecar meet on)")
	}
	var err error
	if r.Vhost, err = parseLibvirtVhost(r.Spec); err != nil {
		return r, err
	}
	if r.MAC, r.Generated, err = libvirtMAC(*mac, r.ID, r.Vhost.Path); err != nil {
		return r, err
	}
	if r.MTU, r.Underlay, err = libvirtMTU(r.Vhost, r.L2TPv3); err != nil {
		return r, err
	}
	if err := validDomainName(r.Domain); err != nil {
		return r, err
	}
	return r, nil
}

// parseLibvirtVhost takes the sidecar's own --vhost-user syntax (so what is
// printed is what the sidecar accepts) plus libvirt's limits on the path.
func parseLibvirtVhost(spec string) (frontend.VhostUserAddr, error) {
	a, err := frontend.ParseVhostUserAddr(spec)
	switch {
	case err != nil:
		return a, err
	case !filepath.IsAbs(a.Path):
		return a, fmt.Errorf("--vhost-user %q: libvirt needs an absolute socket path", a.Path)
	case len(a.Path) >= 108:
		return a, fmt.Errorf("--vhost-user %q: %d bytes, a unix socket path holds at most 107", a.Path, len(a.Path))
	}
	return a, nil
}

// validDomainName refuses what libvirt refuses in a domain name ('/', control
// characters), so the error comes now and not at virsh define.
func validDomainName(s string) error {
	if strings.ContainsAny(s, "/") || strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
		return fmt.Errorf("--domain %q: a libvirt domain name has no '/' and no control characters", s)
	}
	return nil
}

// libvirtMAC returns the given MAC, checked as libvirt checks it, or one
// derived from the id and socket path so that re-running the command (and
// re-defining the domain) keeps the guest's NIC the same.
func libvirtMAC(s, id, path string) (net.HardwareAddr, bool, error) {
	if s == "" {
		return generatedMAC(id, path), true, nil
	}
	m, err := net.ParseMAC(s)
	switch {
	case err != nil || len(m) != 6:
		return nil, false, fmt.Errorf("--mac %q: want six hex bytes, 52:54:00:12:34:56", s)
	case m[0]&1 != 0:
		return nil, false, fmt.Errorf("--mac %q: a multicast address (lowest bit of the first byte set); a NIC needs unicast", s)
	case string(m) == "\x00\x00\x00\x00\x00\x00":
		return nil, false, fmt.Errorf("--mac %q: the all-zero address", s)
	}
	return m, false, nil
}

// generatedMAC hashes id and path into a unicast, locally administered MAC:
// the path is in it so that net1 of two VMs (two sockets) differ.
func generatedMAC(id, path string) net.HardwareAddr {
	h := sha256.Sum256([]byte("l2tpv3-netdev libvirt-xml\x00" + id + "\x00" + path))
	m := net.HardwareAddr(h[:6])
	m[0] = m[0]&^0x01 | 0x02
	return m
}

// libvirtMTU is the interface MTU: the one given to the sidecar, else the
// one the sidecar offers by default for the --l2tpv3 options (what the
// underlay MTU carries: underlay-mtu=, else the route toward dst on this
// host), with that underlay; else none.
func libvirtMTU(a frontend.VhostUserAddr, l2tpv3 string) (int, *l2tp.Underlay, error) {
	if l2tpv3 == "" {
		return a.MTU, nil, nil
	}
	cfg, err := l2tp.ParseOptions(l2tpv3)
	if err != nil {
		return 0, nil, fmt.Errorf("--%w", err) // "--l2tpv3: missing dst"
	}
	if a.MTU != 0 {
		return a.MTU, nil, nil
	}
	mtu, u := innerMTU(cfg)
	return mtu, &u, nil
}

// interfaceXML renders the <interface> element, each line after indent.
// The MTU is not in it: libvirt 9.0 fails to start a vhostuser interface
// with <mtu> ("Cannot set interface MTU on '(null)'"), see overrideXML.
func interfaceXML(r libvirtRequest, indent string) string {
	var b strings.Builder
	line := func(format string, args ...any) {
		b.WriteString(indent)
		fmt.Fprintf(&b, format, args...)
		b.WriteByte('\n')
	}
	line("<interface type='vhostuser'>")
	if r.Generated {
		line("  <!-- MAC generated from the id and socket path: locally administered, the same on every run -->")
	}
	line("  <mac address='%s'/>", r.MAC)
	if r.Vhost.Server { // the sidecar listens: libvirt's QEMU connects, and reconnects
		line("  <source type='unix' path='%s' mode='client'>", attr(r.Vhost.Path))
		line("    <reconnect enabled='yes' timeout='1'/>")
		line("  </source>")
	} else {
		line("  <source type='unix' path='%s' mode='server'/>", attr(r.Vhost.Path))
	}
	line("  <model type='virtio'/>")
	if r.Vhost.Queues > 1 {
		line("  <driver queues='%d'/>", r.Vhost.Queues)
	}
	if r.Domain != "" { // the minimal domain boots nothing from the network: no iPXE ROM needed
		line("  <rom enabled='no'/>")
	}
	line("  <alias name='ua-%s'/>", r.ID)
	line("</interface>")
	return b.String()
}

// overrideXML renders the <qemu:override> of the interface's device:
// host_mtu (the guest's MTU, which libvirt 9.0 cannot set on vhostuser) and,
// for a TCG domain, vectors=0 (QEMU 7.2 under TCG crashes starting an MSI-X
// vhost-user NIC). "" when there is nothing to override.
func overrideXML(r libvirtRequest, indent string, tcg bool) string {
	var props []string
	if r.MTU > 0 {
		props = append(props, fmt.Sprintf("<qemu:property name='host_mtu' type='unsigned' value='%d'/>", r.MTU))
	}
	if tcg {
		props = append(props, "<qemu:property name='vectors' type='unsigned' value='0'/>")
	}
	if len(props) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString(indent + "<qemu:override>\n")
	b.WriteString(indent + "  <qemu:device alias='ua-" + r.ID + "'>\n")
	b.WriteString(indent + "    <qemu:frontend>\n")
	for _, p := range props {
		b.WriteString(indent + "      " + p + "\n")
	}
	b.WriteString(indent + "    </qemu:frontend>\n")
	b.WriteString(indent + "  </qemu:device>\n")
	b.WriteString(indent + "</qemu:override>\n")
	return b.String()
}

// attr escapes an attribute value (quotes included) for XML.
func attr(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

// qemuNamespace is libvirt's namespace for QEMU-specific elements.
const qemuNamespace = "http://libvirt.org/schemas/domain/qemu/1.0"

// memoryBackingXML is what every domain with a vhost-user NIC needs: the
// sidecar reads the rings in guest memory, so that memory must be shared.
const memoryBackingXML = `<memoryBacking>
  <source type='memfd'/>
  <access mode='shared'/>
</memoryBacking>
`

// domainXML renders a whole minimal TCG domain around the interface: what
// a user starting from scratch, or a test, defines as it is.
func domainXML(r libvirtRequest) string {
	var b strings.Builder
	fmt.Fprintf(&b, "<domain type='qemu' xmlns:qemu='%s'>\n", qemuNamespace)
	fmt.Fprintf(&b, "  <name>%s</name>\n", attr(r.Domain))
	b.WriteString("  <memory unit='MiB'>512</memory>\n")
	fmt.Fprintf(&b, "  <vcpu>%d</vcpu>\n", r.Vhost.Queues) // a Linux guest uses one queue pair per vCPU
	b.WriteString(`  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
  </os>
  <!-- vhost-user: the sidecar reads the rings in guest memory, which must be shared -->
`)
	b.WriteString(indentLines(memoryBackingXML, "  "))
	b.WriteString(`  <devices>
    <serial type='pty'/>
    <console type='pty'/>
`)
	b.WriteString(interfaceXML(r, "    "))
	b.WriteString("  </devices>\n")
	b.WriteString("  <!-- type='qemu' (TCG): QEMU 7.2 crashes starting an MSI-X vhost-user NIC, vectors=0 gives it INTx -->\n")
	b.WriteString(overrideXML(r, "  ", true))
	b.WriteString("</domain>\n")
	return b.String()
}

// indentLines puts indent before every line of s.
func indentLines(s, indent string) string {
	lines := strings.SplitAfter(s, "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = indent + l
		}
	}
	return strings.Join(lines, "")
}

// libvirtAdvice is what the user must do besides pasting the interface:
// share the domain's memory, pass the MTU, and start the sidecar on the
// same socket, reachable by libvirt's QEMU.
func libvirtAdvice(r libvirtRequest) string {
	var b strings.Builder
	if r.Domain == "" {
		b.WriteString("# vhost-user needs shared guest memory; add inside <domain>:\n")
		b.WriteString(indentLines(memoryBackingXML, "  "))
		if r.Underlay != nil {
			fmt.Fprintf(&b, "# MTU %d: what the underlay carries whole (%s;\n", r.MTU, underlayNote(*r.Underlay))
			b.WriteString("# underlay-mtu=N in --l2tpv3 to say otherwise).\n")
		}
		if r.MTU > 0 {
			fmt.Fprintf(&b, "# The guest MTU (%d) goes through a QEMU override (libvirt 9.0 cannot start a vhostuser\n", r.MTU)
			fmt.Fprintf(&b, "# <interface> with <mtu>); add xmlns:qemu='%s' to <domain> and inside it:\n", qemuNamespace)
			b.WriteString(overrideXML(r, "  ", false))
		}
		b.WriteString("# With <domain type='qemu'> (TCG, no KVM), QEMU 7.2 crashes starting this NIC unless its\n")
		b.WriteString("# <qemu:override> also has <qemu:property name='vectors' type='unsigned' value='0'/>.\n")
	}
	if r.Vhost.Server {
		b.WriteString("# Start the sidecar first (it listens; QEMU connects, and reconnects every second;\n")
		b.WriteString("# virsh start waits until QEMU reaches it):\n")
	} else {
		b.WriteString("# Start the sidecar (it dials QEMU's socket every second; virsh start waits for it):\n")
	}
	b.WriteString("  " + sidecarCommand(r) + "\n")
	switch {
	case addsOwner(r):
		fmt.Fprintf(&b, "# owner=%s: the socket is born mode 0600 and QEMU runs as %s (qemu.conf user=);\n", r.QEMUUser, r.QEMUUser)
		b.WriteString("# chown needs a root sidecar, else use group=GROUP,mode=0660 with a group both share.\n")
	case !r.Vhost.Server:
		b.WriteString("# QEMU creates the socket: its directory must be writable by the user libvirt runs QEMU as.\n")
	}
	return b.String()
}

// addsOwner reports whether the printed command adds owner=QEMU-USER: the
// sidecar listens and the user said nothing about the socket file's owner,
// group or mode, so it would be born 0600 for the sidecar's user alone.
func addsOwner(r libvirtRequest) bool {
	a := r.Vhost.Access
	return r.Vhost.Server && r.QEMUUser != "" && !a.Owner.Set && !a.Group.Set && a.Mode == 0
}

// sidecarCommand is the shell command that serves this interface: the
// user's --vhost-user as given, plus the MTU (so QEMU's host_mtu and the
// sidecar's offer agree) and the socket's owner (so QEMU may connect).
func sidecarCommand(r libvirtRequest) string {
	spec := r.Spec
	if r.MTU > 0 && r.Vhost.MTU == 0 {
		spec += ",mtu=" + strconv.Itoa(r.MTU)
	}
	if addsOwner(r) {
		spec += ",owner=" + r.QEMUUser
	}
	l2tpv3 := r.L2TPv3
	if l2tpv3 == "" {
		l2tpv3 = "src=…,dst=…,txsession=…"
	}
	return "l2tpv3-netdev --name " + shellQuote(r.ID) + " --vhost-user " + shellQuote(spec) + " --l2tpv3 " + shellQuote(l2tpv3)
}

// shellQuote quotes s for sh when it holds anything beyond plain characters.
func shellQuote(s string) string {
	plain := s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./,=:@+%", r))
	}) < 0
	if plain {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
