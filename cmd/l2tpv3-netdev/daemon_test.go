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

// The config package's sample files: two good ports; five broken among two good.
const (
	goodConfigFile   = "../../config/testdata/good.toml"
	brokenConfigFile = "../../config/testdata/broken.toml"
)

// Flags win over the file; the single-port flags add a port beside the
// file's.
func TestConfigFlagsOverride(t *testing.T) {
	args := []string{"--config", goodConfigFile, "--log-level", "debug", "--admin", "/tmp/y.sock",
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
	if o.daemon.pcaps["vm1-net0"] != "/tmp/x/vm1.pcap" {
		t.Errorf("pcap from the file: %v", o.daemon.pcaps)
	}
}

// --check names every bad port and exits 1; a good file exits 0. Nothing
// is opened.
func TestCheck(t *testing.T) {
	var out, errOut bytes.Buffer
	code := realMain([]string{"--config", brokenConfigFile, "--check"}, &out, &errOut)
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
	if code := realMain([]string{"--config", goodConfigFile, "--check"}, &out, &errOut); code != 0 {
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
