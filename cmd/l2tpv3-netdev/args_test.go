package main

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testport"
)

const goodL2TP = "src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=1701,dstport=1702,txsession=1"

// Every wrong command line is refused with a message naming the option.
func TestParseArgsRefuses(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--l2tpv3", goodL2TP}, "--stream or --vhost-user is required"},
		{[]string{"--stream", "unix:/a", "--vhost-user", "/b", "--l2tpv3", goodL2TP}, "exclusive"},
		{[]string{"--vhost-user", "/b,queues=17", "--l2tpv3", goodL2TP}, "queues=17: must be 1..16"},
		{[]string{"--vhost-user", "/b,mtu=20", "--l2tpv3", goodL2TP}, "mtu=20: must be 68..65535"},
		{[]string{"--stream", "unix:/tmp/x"}, "--l2tpv3 is required"},
		{[]string{"--stream", "/tmp/x", "--l2tpv3", goodL2TP}, "want unix:PATH or tcp:HOST:PORT"},
		{[]string{"--stream", "unix:/tmp/x,server=perhaps", "--l2tpv3", goodL2TP}, "server=perhaps"},
		{[]string{"--stream", "unix:/tmp/x", "--l2tpv3", goodL2TP, "--batch", "0"}, "--batch 0: must be 1..1024"},
		{[]string{"--stream", "unix:/tmp/x", "--l2tpv3", goodL2TP, "--log-level", "loud"}, `--log-level "loud"`},
		{[]string{"--stream", "unix:/tmp/x", "--l2tpv3", goodL2TP, "extra"}, `unexpected argument "extra"`},
		{[]string{"--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"--stream", "unix:/tmp/x", "--l2tpv3", "dst=127.0.0.1,txsession=1"}, "--l2tpv3: missing src"},
		{[]string{"--stream", "unix:/tmp/x", "--l2tpv3", "src=127.0.0.1,txsession=1"}, "--l2tpv3: missing dst"},
		{[]string{"--stream", "unix:/tmp/x", "--l2tpv3", "src=127.0.0.1,dst=127.0.0.1"}, "--l2tpv3: missing txsession"},
		{[]string{"--stream", "unix:/tmp/x", "--l2tpv3", "src=127.0.0.1,dst=127.0.0.1,srcport=5,txsession=1"}, "srcport"},
		{[]string{"--stream", "unix:/tmp/x", "--l2tpv3", goodL2TP + ",txcookie=0x1"}, "txcookie"},
		{[]string{"--stream", "unix:/tmp/x", "--l2tpv3", goodL2TP + ",txcookie=0x1ffffffff,rxcookie=1"}, "wider than 32 bits"},
		{[]string{"--stream", "unix:/tmp/x", "--l2tpv3", goodL2TP + ",offset=300"}, "offset"},
		{[]string{"--stream", "unix:/tmp/x", "--l2tpv3", goodL2TP + ",colour=red"}, `unknown key "colour"`},
		{[]string{"--stream", "unix:/tmp/x", "--l2tpv3", "src=127.0.0.1,dst=127.0.0.1,txsession=12x"}, "txsession"},
	}
	for _, c := range cases {
		_, err := parseArgs(c.args, new(bytes.Buffer))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want an error containing %q", c.args, err, c.want)
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	var out bytes.Buffer
	if _, err := parseArgs([]string{"--help"}, &out); !errors.Is(err, errHelpShown) {
		t.Fatal(err)
	}
	for _, want := range []string{"--stream", "--l2tpv3", "txsession", "cookie64", "seq=", "SIGUSR1"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
	out.Reset()
	if _, err := parseArgs([]string{"--version"}, &out); !errors.Is(err, errHelpShown) || !strings.HasPrefix(out.String(), "l2tpv3-netdev ") {
		t.Fatalf("--version: %v %q", err, out.String())
	}
}

// Start-up failures that only the system can tell (a port in use, an
// address that does not resolve) are refused with the option named and a
// non-zero exit, before anything is served.
func TestRunRefusesAtStart(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "l2tpv3-netdev")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	busy, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.LocalAddr().(*net.UDPAddr).Port
	sock := filepath.Join(t.TempDir(), "s.sock")
	plain := filepath.Join(t.TempDir(), "plain")
	os.WriteFile(plain, nil, 0o600)
	cases := []struct {
		l2tp, stream, want string
	}{
		{"src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=" + itoa(port) + ",dstport=9,txsession=1", "unix:" + sock, "address already in use"},
		{"src=no-such-host.invalid,dst=127.0.0.1,udp=on,srcport=9,dstport=9,txsession=1", "unix:" + sock, "src="},
		{"src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=" + itoa(freePort(t)) + ",dstport=9,txsession=1", "unix:" + plain, "not a socket"},
	}
	for _, c := range cases {
		cmd := exec.Command(bin, "--stream", c.stream, "--l2tpv3", c.l2tp)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 || !strings.Contains(string(out), c.want) {
			t.Errorf("%s: exit %v, output %q; want failure mentioning %q", c.l2tp, err, out, c.want)
		}
	}
}

// itoa formats a port for an option string.
func itoa(n int) string { return strconv.Itoa(n) }

// freePort returns a UDP port free on 127.0.0.1, never one it returned before.
func freePort(t *testing.T) int { return testport.UDP(t, "127.0.0.1") }
