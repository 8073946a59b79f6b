package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeConfig writes a config file into a temporary directory.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "l2tpv3-netdev.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const goodConfig = `
admin = "/tmp/x/admin.sock"
metrics = "127.0.0.1:9469"
log-level = "warn"

[[port]]
name = "vm1-net0"
stream = "unix:/tmp/x/vm1.sock"
l2tpv3 = "src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=1701,dstport=1702,txsession=0x10,rxsession=0x20"
batch = 32
pcap = "/tmp/x/vm1.pcap"

[[port]]
name = "vm2-net0"
vhost-user = "/tmp/x/vm2.sock"
l2tpv3 = "src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=1703,dstport=1704,txsession=0x11"
`

// A good file gives every port and the daemon settings.
func TestConfigGood(t *testing.T) {
	o, err := parseArgs([]string{"--config", writeConfig(t, goodConfig)}, new(bytes.Buffer))
	if err != nil {
		t.Fatal(err)
	}
	if len(o.ports) != 2 || len(o.daemon.refused) != 0 {
		t.Fatalf("ports %d refused %v", len(o.ports), o.daemon.refused)
	}
	p1, p2 := o.ports[0], o.ports[1]
	if p1.Name != "vm1-net0" || p1.Stream == nil || p1.Batch != 32 || p1.L2TP.SessionID != 0x20 {
		t.Errorf("port 1: %+v", p1)
	}
	if p2.Name != "vm2-net0" || p2.VhostUser == nil || p2.VhostUser.Path != "/tmp/x/vm2.sock" || p2.Batch != 64 {
		t.Errorf("port 2: %+v", p2)
	}
	d := o.daemon
	if d.admin != "/tmp/x/admin.sock" || d.metrics != "127.0.0.1:9469" || o.logLevel != slog.LevelWarn {
		t.Errorf("daemon settings: admin %q metrics %q level %v", d.admin, d.metrics, o.logLevel)
	}
	if d.pcaps["vm1-net0"] != "/tmp/x/vm1.pcap" {
		t.Errorf("pcap: %v", d.pcaps)
	}
}

// Flags win over the file; the single-port flags add a port beside the
// file's.
func TestConfigFlagsOverride(t *testing.T) {
	args := []string{"--config", writeConfig(t, goodConfig), "--log-level", "debug", "--admin", "/tmp/y.sock",
		"--name", "extra", "--stream", "unix:/tmp/x/extra.sock", "--l2tpv3", goodL2TP}
	o, err := parseArgs(args, new(bytes.Buffer))
	if err != nil {
		t.Fatal(err)
	}
	if o.logLevel != slog.LevelDebug || o.daemon.admin != "/tmp/y.sock" || o.daemon.metrics != "127.0.0.1:9469" {
		t.Errorf("level %v admin %q metrics %q", o.logLevel, o.daemon.admin, o.daemon.metrics)
	}
	if len(o.ports) != 3 || o.ports[2].Name != "extra" {
		t.Errorf("ports: %d", len(o.ports))
	}
}

// Unknown keys are refused with the key named: at the top the whole file,
// in a [[port]] that port.
func TestConfigUnknownKeys(t *testing.T) {
	_, err := parseArgs([]string{"--config", writeConfig(t, "metric = \"127.0.0.1:1\"\n"+goodConfig)}, new(bytes.Buffer))
	if err == nil || !strings.Contains(err.Error(), `unknown key "metric" (did you mean "metrics"?)`) {
		t.Fatalf("top-level typo: %v", err)
	}
	typo := strings.Replace(goodConfig, "batch = 32", "bacth = 32", 1)
	o, err := parseArgs([]string{"--config", writeConfig(t, typo)}, new(bytes.Buffer))
	if err != nil {
		t.Fatal(err)
	}
	if len(o.ports) != 1 || len(o.daemon.refused) != 1 {
		t.Fatalf("ports %d refused %d", len(o.ports), len(o.daemon.refused))
	}
	r := o.daemon.refused[0]
	if r.spec.Name != "vm1-net0" || !strings.Contains(r.err.Error(), `unknown key "port.bacth" (did you mean "port.batch"?)`) {
		t.Errorf("refused %s: %v", r.spec.Name, r.err)
	}
}

// A syntax error refuses the file with its line.
func TestConfigSyntaxError(t *testing.T) {
	_, err := parseArgs([]string{"--config", writeConfig(t, "[[port]]\nname = \"a\nx")}, new(bytes.Buffer))
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("got %v", err)
	}
}

const brokenConfig = `
[[port]]
name = "good1"
stream = "unix:/tmp/x/good1.sock"
l2tpv3 = "src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=1701,dstport=1702,txsession=1"

[[port]]
name = "nodst"
stream = "unix:/tmp/x/nodst.sock"
l2tpv3 = "src=127.0.0.1,udp=on,srcport=1703,dstport=1704,txsession=2"

[[port]]
name = "good2"
vhost-user = "/tmp/x/good2.sock"
l2tpv3 = "src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=1705,dstport=1706,txsession=3"

[[port]]
name = "twofronts"
stream = "unix:/tmp/x/a.sock"
vhost-user = "/tmp/x/b.sock"
l2tpv3 = "src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=1707,dstport=1708,txsession=4"

[[port]]
name = "good1"
stream = "unix:/tmp/x/dup.sock"
l2tpv3 = "src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=1709,dstport=1710,txsession=5"

[[port]]
name = "samesock"
stream = "unix:/tmp/x/good1.sock"
l2tpv3 = "src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=1711,dstport=1712,txsession=6"

[[port]]
stream = "unix:/tmp/x/anon.sock"
batch = "many"
`

// One broken port among good ones: the good ones are kept, every broken
// one is refused by name with its reason.
func TestConfigBrokenPorts(t *testing.T) {
	o, err := parseArgs([]string{"--config", writeConfig(t, brokenConfig)}, new(bytes.Buffer))
	if err != nil {
		t.Fatal(err)
	}
	var good []string
	for _, p := range o.ports {
		good = append(good, p.Name)
	}
	if strings.Join(good, ",") != "good1,good2" {
		t.Errorf("good ports: %v", good)
	}
	want := []struct{ name, msg string }{
		{"nodst", "--l2tpv3: missing dst"},
		{"twofronts", "exclusive"},
		{"good1", "name good1 is also [[port]] 1's"},
		{"samesock", "socket /tmp/x/good1.sock is also port good1's"},
		{"[[port]] 7", "port.name is required"},
		{"[[port]] 7", "port.batch: want an integer"},
	}
	got := map[string]string{}
	for _, r := range o.daemon.refused {
		got[r.spec.Name] += r.err.Error()
	}
	for _, w := range want {
		if !strings.Contains(got[w.name], w.msg) {
			t.Errorf("port %s: got %q, want %q", w.name, got[w.name], w.msg)
		}
	}
}

// --check names every bad port and exits 1; a good file exits 0. Nothing
// is opened.
func TestCheck(t *testing.T) {
	var out, errOut bytes.Buffer
	code := realMain([]string{"--config", writeConfig(t, brokenConfig), "--check"}, &out, &errOut)
	if code != 1 {
		t.Errorf("exit %d, want 1\n%s%s", code, out.String(), errOut.String())
	}
	for _, want := range []string{"port good1: ok", "port good2: ok", "port nodst: --l2tpv3: missing dst",
		"port twofronts: ", "port samesock: ", "port [[port]] 7: ", "7 ports, 2 good, 5 refused"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--check output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := realMain([]string{"--config", writeConfig(t, goodConfig), "--check"}, &out, &errOut); code != 0 {
		t.Errorf("good config: exit %d\n%s", code, out.String())
	}
	if !strings.Contains(out.String(), "2 ports, 2 good, 0 refused") {
		t.Errorf("good config output:\n%s", out.String())
	}
	out.Reset()
	if code := realMain([]string{"--config", writeConfig(t, "colour = 1\n"), "--check"}, &out, &errOut); code != 1 {
		t.Errorf("unknown key: exit %d", code)
	}
	if !strings.Contains(out.String(), `unknown key "colour"`) {
		t.Errorf("unknown key output: %s", out.String())
	}
}

// --check prints each port's inner MTU and where the underlay MTU came
// from (the route is pinned to 1500 by TestMain), and flags an mtu= above it.
func TestCheckMTU(t *testing.T) {
	const l2 = "src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=%d"
	cfg := fmt.Sprintf(`
[[port]]
name = "a"
stream = "unix:/tmp/x/a.sock"
l2tpv3 = "`+l2+`"

[[port]]
name = "b"
vhost-user = "/tmp/x/b.sock,mtu=9000"
l2tpv3 = "`+l2+`,l2spec=default"

[[port]]
name = "c"
vhost-user = "/tmp/x/c.sock,mtu=8900"
l2tpv3 = "`+l2+`,ipv6=off,underlay-mtu=9000,oversize=drop"
`, 1, 2, 1, 3, 4, 2, 5, 6, 3)
	var out bytes.Buffer
	if code := realMain([]string{"--config", writeConfig(t, cfg), "--check"}, &out, &out); code != 0 {
		t.Fatalf("exit %d:\n%s", code, out.String())
	}
	for _, want := range []string{
		"port a: ok (stream unix:/tmp/x/a.sock,server=on, session 1, inner MTU 1450 (underlay 1500: the route toward dst on this host))\n",
		"port b: ok (vhost-user /tmp/x/b.sock, session 2, inner MTU 1446 (underlay 1500: the route toward dst on this host); mtu=9000 is above it)\n",
		"port c: ok (vhost-user /tmp/x/c.sock, session 3, inner MTU 8950 (underlay-mtu=9000))\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--check output lacks %q:\n%s", want, out.String())
		}
	}
}

// Daemon settings are checked: a --pcap for no port, a bad metrics address.
func TestConfigDaemonRefusals(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--stream", "unix:/tmp/x", "--l2tpv3", goodL2TP, "--pcap", "nosuch=/tmp/a.pcap"}, "--pcap nosuch=/tmp/a.pcap: no port named nosuch"},
		{[]string{"--stream", "unix:/tmp/x", "--l2tpv3", goodL2TP, "--pcap", "x"}, "want PORT=FILE"},
		{[]string{"--stream", "unix:/tmp/x", "--l2tpv3", goodL2TP, "--metrics", "9100"}, "--metrics \"9100\": want HOST:PORT"},
		{[]string{"--config", "/nonexistent/file.toml"}, "--config: open /nonexistent/file.toml"},
		{[]string{"--stream", "unix:/tmp/x", "--l2tpv3", goodL2TP, "--admin", "/tmp/a.sock,mode=9"},
			`--admin "/tmp/a.sock,mode=9": mode=9: want octal permission bits`},
		{[]string{"--stream", "unix:/tmp/x", "--l2tpv3", goodL2TP, "--admin", "/tmp/a.sock,group"},
			`--admin "/tmp/a.sock,group": group=: want a group name or number`},
	}
	for _, c := range cases {
		_, err := parseArgs(c.args, new(bytes.Buffer))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want %q", c.args, err, c.want)
		}
	}
}

// The sample config in contrib/ passes --check.
func TestSampleConfig(t *testing.T) {
	var out bytes.Buffer
	if code := realMain([]string{"--config", "../../contrib/l2tpv3-netdev.toml", "--check"}, &out, &out); code != 0 {
		t.Fatalf("exit %d:\n%s", code, out.String())
	}
}
