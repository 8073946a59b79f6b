package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
)

const lvL2TP = "src=192.0.2.1,dst=198.51.100.7,udp=on,srcport=1701,dstport=1701,txsession=0x10,rxsession=0x20"

// goldenInterface is the whole stdout and stderr for one command line: the
// interface element, then the advice.
const goldenInterface = `<interface type='vhostuser'>
  <!-- MAC generated from the id and socket path: locally administered, the same on every run -->
  <mac address='ae:1e:30:7d:ac:4b'/>
  <source type='unix' path='/run/l2tpv3-netdev/vm1-net1.sock' mode='client'>
    <reconnect enabled='yes' timeout='1'/>
  </source>
  <model type='virtio'/>
  <alias name='ua-net1'/>
</interface>
`

const goldenAdvice = `# vhost-user needs shared guest memory; add inside <domain>:
  <memoryBacking>
    <source type='memfd'/>
    <access mode='shared'/>
  </memoryBacking>
# MTU 1450: what the underlay carries whole (underlay 1500: the route toward dst on this host;
# underlay-mtu=N in --l2tpv3 to say otherwise).
# The guest MTU (1450) goes through a QEMU override (libvirt 9.0 cannot start a vhostuser
# <interface> with <mtu>); add xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0' to <domain> and inside it:
  <qemu:override>
    <qemu:device alias='ua-net1'>
      <qemu:frontend>
        <qemu:property name='host_mtu' type='unsigned' value='1450'/>
      </qemu:frontend>
    </qemu:device>
  </qemu:override>
# With <domain type='qemu'> (TCG, no KVM), QEMU 7.2 crashes starting this NIC unless its
# <qemu:override> also has <qemu:property name='vectors' type='unsigned' value='0'/>.
# Start the sidecar first (it listens; QEMU connects, and reconnects every second;
# virsh start waits until QEMU reaches it):
  l2tpv3-netdev --name net1 --vhost-user /run/l2tpv3-netdev/vm1-net1.sock,mtu=1450,owner=libvirt-qemu --l2tpv3 src=192.0.2.1,dst=198.51.100.7,udp=on,srcport=1701,dstport=1701,txsession=0x10,rxsession=0x20
# owner=libvirt-qemu: the socket is born mode 0600 and QEMU runs as libvirt-qemu (qemu.conf user=);
# chown needs a root sidecar, else use group=GROUP,mode=0660 with a group both share.
`

// The README's example, byte for byte: a change to the output is a change
// users see, so it must be deliberate.
func TestLibvirtXMLGolden(t *testing.T) {
	var out, errOut bytes.Buffer
	args := []string{"--id", "net1", "--vhost-user", "/run/l2tpv3-netdev/vm1-net1.sock", "--l2tpv3", lvL2TP}
	if err := libvirtXMLMain(args, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if out.String() != goldenInterface {
		t.Errorf("stdout:\n%s\nwant:\n%s", out.String(), goldenInterface)
	}
	if errOut.String() != goldenAdvice {
		t.Errorf("stderr:\n%s\nwant:\n%s", errOut.String(), goldenAdvice)
	}
}

// Every wrong command line is refused with a message naming the option.
func TestLibvirtXMLRefuses(t *testing.T) {
	sock := "/run/l2tpv3-netdev/vm1-net1.sock"
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--vhost-user", sock}, "--id is required"},
		{[]string{"--id", "net 1", "--vhost-user", sock}, `--id "net 1"`},
		{[]string{"--id", strings.Repeat("n", 65), "--vhost-user", sock}, "--id"},
		{[]string{"--id", "net1"}, "--vhost-user PATH is required"},
		{[]string{"--id", "net1", "--stream", "unix:/run/x.sock"}, "--stream: libvirt has no interface"},
		{[]string{"--id", "net1", "--stream", "unix:/run/x.sock"}, "use --vhost-user"},
		{[]string{"--id", "net1", "--vhost-user", sock, "--mac", "52:54:00:12:34"}, `--mac "52:54:00:12:34"`},
		{[]string{"--id", "net1", "--vhost-user", sock, "--mac", "zz:54:00:12:34:56"}, "--mac"},
		{[]string{"--id", "net1", "--vhost-user", sock, "--mac", "01:00:5e:00:00:01"}, "multicast"},
		{[]string{"--id", "net1", "--vhost-user", sock, "--mac", "00:00:00:00:00:00"}, "all-zero"},
		{[]string{"--id", "net1", "--vhost-user", sock + ",queues=0"}, "queues=0"},
		{[]string{"--id", "net1", "--vhost-user", sock + ",queues=17"}, "queues=17"},
		{[]string{"--id", "net1", "--vhost-user", sock + ",queues=many"}, "queues=many"},
		{[]string{"--id", "net1", "--vhost-user", sock + ",mtu=20"}, "mtu=20"},
		{[]string{"--id", "net1", "--vhost-user", sock + ",colour=red"}, "colour=red"},
		{[]string{"--id", "net1", "--vhost-user", sock + ",server=off,mode=0660"}, "server=on"},
		{[]string{"--id", "net1", "--vhost-user", "vm1.sock"}, "absolute"},
		{[]string{"--id", "net1", "--vhost-user", "/" + strings.Repeat("d", 110)}, "at most 107"},
		{[]string{"--id", "net1", "--vhost-user", sock, "--l2tpv3", "dst=127.0.0.1,txsession=1"}, "--l2tpv3: missing src"},
		{[]string{"--id", "net1", "--vhost-user", sock, "--domain", "a/b"}, "--domain"},
		{[]string{"--id", "net1", "--vhost-user", sock, "extra"}, `unexpected argument "extra"`},
		{[]string{"--id", "net1", "--vhost-user", sock, "--bogus"}, "-bogus"},
	}
	for _, c := range cases {
		var out, errOut bytes.Buffer
		err := libvirtXMLMain(c.args, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want an error containing %q", c.args, err, c.want)
		}
		if out.Len() != 0 {
			t.Errorf("%q: refused, yet printed %q", c.args, out.String())
		}
	}
}

func TestLibvirtXMLHelp(t *testing.T) {
	var out bytes.Buffer
	if err := libvirtXMLMain([]string{"--help"}, &out, new(bytes.Buffer)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--id", "--vhost-user", "--mac", "--l2tpv3", "--domain"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

// A generated MAC is unicast and locally administered, the same on every
// run, and different for another id or another socket.
func TestGeneratedMAC(t *testing.T) {
	a := generatedMAC("net1", "/run/vm1-net1.sock")
	if a[0]&1 != 0 || a[0]&2 == 0 {
		t.Errorf("%s: want unicast, locally administered", a)
	}
	if b := generatedMAC("net1", "/run/vm1-net1.sock"); b.String() != a.String() {
		t.Errorf("not stable: %s then %s", a, b)
	}
	for _, other := range [][2]string{{"net2", "/run/vm1-net1.sock"}, {"net1", "/run/vm2-net1.sock"}} {
		if b := generatedMAC(other[0], other[1]); b.String() == a.String() {
			t.Errorf("%v gives the same MAC %s", other, b)
		}
	}
	m, gen, err := libvirtMAC("52:54:00:AB:CD:EF", "net1", "/x")
	if err != nil || gen || m.String() != "52:54:00:ab:cd:ef" {
		t.Errorf("given MAC: %v %v %v", m, gen, err)
	}
}

// The MTU is the one given, else what the encapsulation leaves of the
// underlay MTU (underlay-mtu=, else the route's: pinned to 1500 by
// TestMain), the sidecar's own inner MTU; else none.
func TestLibvirtMTU(t *testing.T) {
	cases := []struct {
		vhost, l2tpv3 string
		want          int
		underlay      int
	}{
		{"/s", "", 0, 0},
		{"/s,mtu=9000", "", 9000, 0},
		{"/s,mtu=1400", lvL2TP, 1400, 0},
		{"/s", lvL2TP, 1450, 1500},
		{"/s", lvL2TP + ",l2spec=default", 1446, 1500},
		{"/s", lvL2TP + ",underlay-mtu=9000", 8950, 9000},
		{"/s", "src=192.0.2.1,dst=198.51.100.7,txsession=0x10", 1462, 1500},
		{"/s", "src=192.0.2.1,dst=198.51.100.7,txsession=0x10,txcookie=1,rxcookie=2,cookie64=on", 1454, 1500},
		{"/s", "src=2001:db8::1,dst=2001:db8::2,ipv6=on,udp=on,srcport=1,dstport=2,txsession=1", 1430, 1500},
		{"/s", "src=2001:db8::1,dst=2001:db8::2,ipv6=on,udp=on,srcport=1,dstport=2,txsession=1,underlay-mtu=1280", 1210, 1280},
	}
	for _, c := range cases {
		a, err := parseLibvirtVhost(c.vhost)
		if err != nil {
			t.Fatal(err)
		}
		got, u, err := libvirtMTU(a, c.l2tpv3)
		if err != nil || got != c.want || (u == nil) != (c.underlay == 0) || u != nil && u.MTU != c.underlay {
			t.Errorf("%s %s: got %d, %v, %v; want %d on %d", c.vhost, c.l2tpv3, got, u, err, c.want, c.underlay)
		}
		if u != nil {
			cfg, _ := l2tp.ParseOptions(c.l2tpv3)
			if sidecar := cfg.InnerMTU(u.MTU); got != sidecar {
				t.Errorf("%s: %d, the sidecar offers inner_mtu=%d", c.l2tpv3, got, sidecar)
			}
		}
	}
}

// Paths and names with XML's special characters are escaped; commands with
// the shell's are quoted.
func TestLibvirtXMLEscapes(t *testing.T) {
	r := mustLibvirtRequest(t, "--id", "n.1", "--vhost-user", "/run/a&b'c<d.sock", "--domain", "vm<&>'1")
	x := domainXML(r)
	for _, want := range []string{"path='/run/a&amp;b&#39;c&lt;d.sock'", "<name>vm&lt;&amp;&gt;&#39;1</name>"} {
		if !strings.Contains(x, want) {
			t.Errorf("domain lacks %s:\n%s", want, x)
		}
	}
	if got := sidecarCommand(r); !strings.Contains(got, `--vhost-user '/run/a&b'\''c<d.sock,owner=libvirt-qemu'`) {
		t.Errorf("command not quoted for sh: %s", got)
	}
}

// The printed sidecar command serves what the XML describes: the same
// socket and queues, the MTU QEMU's host_mtu gets, and a socket QEMU may
// open; the user's own access keys are kept as written.
func TestLibvirtSidecarCommand(t *testing.T) {
	sock := "/run/vm1-net1.sock"
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--vhost-user", sock, "--l2tpv3", lvL2TP}, "--vhost-user " + sock + ",mtu=1450,owner=libvirt-qemu --l2tpv3"},
		{[]string{"--vhost-user", sock + ",queues=2,mtu=1400", "--l2tpv3", lvL2TP}, "--vhost-user " + sock + ",queues=2,mtu=1400,owner=libvirt-qemu --l2tpv3"},
		{[]string{"--vhost-user", sock, "--qemu-user", "qemu"}, "--vhost-user " + sock + ",owner=qemu --l2tpv3 'src=…"},
		{[]string{"--vhost-user", sock, "--qemu-user", ""}, "--vhost-user " + sock + " --l2tpv3"},
		{[]string{"--vhost-user", sock + ",mode=0666"}, "--vhost-user " + sock + ",mode=0666 --l2tpv3"},
		{[]string{"--vhost-user", sock + ",allow-uid=0"}, "--vhost-user " + sock + ",allow-uid=0,owner=libvirt-qemu --l2tpv3"},
		{[]string{"--vhost-user", sock + ",server=off", "--l2tpv3", lvL2TP}, "--vhost-user " + sock + ",server=off,mtu=1450 --l2tpv3"},
	}
	for _, c := range cases {
		r := mustLibvirtRequest(t, append([]string{"--id", "net1"}, c.args...)...)
		if got := sidecarCommand(r); !strings.Contains(got, c.want) {
			t.Errorf("%q: %s\nwant it to contain %s", c.args, got, c.want)
		}
	}
}

// mustLibvirtRequest parses a libvirt-xml command line that must be valid.
func mustLibvirtRequest(t *testing.T, args ...string) libvirtRequest {
	t.Helper()
	r, err := parseLibvirtArgs(args, new(bytes.Buffer))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// libvirtVariants are the requests the schema test validates: sidecar
// listening or dialling, one queue pair or four, MTU given, derived or none.
func libvirtVariants(t *testing.T) map[string]libvirtRequest {
	sock := "/run/l2tpv3-netdev/vm1-net1.sock"
	return map[string]libvirtRequest{
		"server-q1-derived": mustLibvirtRequest(t, "--id", "net1", "--vhost-user", sock, "--l2tpv3", lvL2TP, "--domain", "vm1"),
		"server-q4-derived": mustLibvirtRequest(t, "--id", "net1", "--vhost-user", sock+",queues=4", "--l2tpv3", lvL2TP, "--domain", "vm1"),
		"client-q1-given": mustLibvirtRequest(t, "--id", "net1", "--vhost-user", sock+",server=off,mtu=9000",
			"--l2tpv3", lvL2TP, "--mac", "52:54:00:12:34:56", "--domain", "vm1"),
		"client-q4-given": mustLibvirtRequest(t, "--id", "net1", "--vhost-user", sock+",server=off,queues=4,mtu=9000", "--domain", "vm1"),
		"server-q1-none":  mustLibvirtRequest(t, "--id", "uplink.0", "--vhost-user", sock+",mode=0666", "--domain", "vm-2"),
		"client-q1-none":  mustLibvirtRequest(t, "--id", "n_1", "--vhost-user", sock+",server=off", "--domain", "vm1"),
	}
}

// The printed XML is valid libvirt XML: every variant's whole domain, and
// the bare interface element (with the advice's memoryBacking and
// override) inside a domain, pass virt-xml-validate against libvirt's own
// schema.
func TestLibvirtXMLValidates(t *testing.T) {
	validate := virtXMLValidator(t)
	for name, r := range libvirtVariants(t) {
		t.Run(name, func(t *testing.T) {
			dom := domainXML(r)
			if r.Vhost.Queues == 4 && !strings.Contains(dom, "<driver queues='4'/>") {
				t.Errorf("no <driver queues='4'/>:\n%s", dom)
			}
			validate(t, "domain", dom)
			r.Domain = ""
			validate(t, "interface in a domain", wrapInDomain(r))
		})
	}
	// The validator is not vacuous: a wrong mode is refused.
	r := libvirtVariants(t)["server-q1-derived"]
	bad := strings.Replace(domainXML(r), "mode='client'", "mode='sideways'", 1)
	if err := runVirtXMLValidate(t, bad); err == nil {
		t.Error("virt-xml-validate accepted mode='sideways'")
	}
}

// wrapInDomain puts the bare interface element, and the snippets the advice
// prints, into a domain as a user following it would.
func wrapInDomain(r libvirtRequest) string {
	return "<domain type='kvm' xmlns:qemu='" + qemuNamespace + "'>\n<name>vm1</name>\n<memory unit='MiB'>512</memory>\n" +
		"<os><type arch='x86_64'>hvm</type></os>\n" + memoryBackingXML +
		"<devices>\n" + interfaceXML(r, "") + "</devices>\n" + overrideXML(r, "", false) + "</domain>\n"
}

// virtXMLValidator returns a check that XML validates as a libvirt domain,
// or skips the test when virt-xml-validate cannot run here.
func virtXMLValidator(t *testing.T) func(t *testing.T, what, xml string) {
	if _, err := exec.LookPath("virt-xml-validate"); err != nil {
		t.Skip("virt-xml-validate not installed (Debian package libvirt-clients; test/install-deps.sh installs it)")
	}
	if _, err := exec.LookPath("xmllint"); err != nil {
		t.Skip("virt-xml-validate cannot run: it needs xmllint (Debian package libxml2-utils; test/install-deps.sh installs it)")
	}
	return func(t *testing.T, what, xml string) {
		t.Helper()
		if err := runVirtXMLValidate(t, xml); err != nil {
			t.Errorf("%s does not validate: %v\n%s", what, err, xml)
		}
	}
}

// runVirtXMLValidate validates xml against libvirt's domain schema.
func runVirtXMLValidate(t *testing.T, xml string) error {
	t.Helper()
	f := filepath.Join(t.TempDir(), "domain.xml")
	if err := os.WriteFile(f, []byte(xml), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("virt-xml-validate", f, "domain").CombinedOutput()
	if err != nil {
		return errors.New(strings.TrimSpace(string(out)))
	}
	return nil
}
