package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestPlugArgsRefused: every wrong plug line is a usage error naming the
// option.
func TestPlugArgsRefused(t *testing.T) {
	l2 := "src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=5000,dstport=5001,txsession=1"
	base := func(extra ...string) []string {
		return append([]string{"--qmp", "unix:/q.sock", "--id", "net1", "--l2tpv3", l2}, extra...)
	}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no qmp", []string{"--id", "net1", "--stream", "unix:/s", "--l2tpv3", l2}, "--qmp unix:PATH is required"},
		{"qmp tcp", []string{"--qmp", "tcp:localhost:4444", "--id", "n", "--stream", "unix:/s", "--l2tpv3", l2}, `--qmp "tcp:localhost:4444": want unix:PATH`},
		{"no id", []string{"--qmp", "unix:/q", "--stream", "unix:/s", "--l2tpv3", l2}, "--id is required"},
		{"bad id", []string{"--qmp", "unix:/q", "--id", "1net", "--stream", "unix:/s", "--l2tpv3", l2}, `--id "1net": want a letter`},
		{"id with blank", []string{"--qmp", "unix:/q", "--id", "net 1", "--stream", "unix:/s", "--l2tpv3", l2}, `--id "net 1"`},
		{"neither", base(), "--vhost-user PATH or --stream unix:PATH is required"},
		{"both", base("--stream", "unix:/s", "--vhost-user", "/v"), "--vhost-user and --stream are exclusive"},
		{"bad mac", base("--stream", "unix:/s", "--mac", "52:54:00:12:34"), `--mac "52:54:00:12:34": want a unicast`},
		{"multicast mac", base("--stream", "unix:/s", "--mac", "01:00:5e:00:00:01"), `--mac "01:00:5e:00:00:01"`},
		{"8-byte mac", base("--stream", "unix:/s", "--mac", "52:54:00:12:34:56:78:9a"), "--mac"},
		{"no l2tpv3", []string{"--qmp", "unix:/q", "--id", "n", "--stream", "unix:/s"}, "--l2tpv3 is required"},
		{"bad l2tpv3", []string{"--qmp", "unix:/q", "--id", "n", "--stream", "unix:/s", "--l2tpv3", "src=127.0.0.1,udp=on"}, "--l2tpv3"},
		{"stream tcp", base("--stream", "tcp:127.0.0.1:5555"), `--stream "tcp:127.0.0.1:5555": want unix:PATH`},
		{"stream client", base("--stream", "unix:/s,server=off"), "server=on"},
		{"bad stream", base("--stream", "unix:/s,sever=on"), `unknown key "sever"`},
		{"vhost client", base("--vhost-user", "/v,server=off"), "server=off cannot be plugged"},
		{"bad vhost", base("--vhost-user", "/v,queues=99"), "queues"},
		{"mtu clash", base("--vhost-user", "/v,mtu=1400", "--mtu", "1450"), "--mtu 1450 differs from --vhost-user mtu=1400"},
		{"mtu range", base("--stream", "unix:/s", "--mtu", "40"), "--mtu 40: want 68..65535"},
		{"bad name", base("--stream", "unix:/s", "--name", "a/b"), `port name "a/b"`},
		{"bad prop", base("--stream", "unix:/s", "--prop", "romfile"), `invalid value "romfile" for flag -prop: want KEY=VALUE`},
		{"prop id", base("--stream", "unix:/s", "--prop", "netdev=x"), "netdev is set by plug itself"},
		{"bad timeout", base("--stream", "unix:/s", "--timeout", "0s"), "--timeout 0s"},
		{"unknown flag", base("--stream", "unix:/s", "--queues", "2"), "flag provided but not defined: -queues"},
		{"argument", base("--stream", "unix:/s", "extra"), `unexpected argument "extra"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := parsePlugArgs(c.args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to contain %q", err, c.want)
			}
			if !errors.As(err, new(usageError)) {
				t.Errorf("%v is not a usage error", err)
			}
		})
	}
}

// TestUnplugArgsRefused: likewise for unplug.
func TestUnplugArgsRefused(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--id", "net1"}, "--qmp unix:PATH is required"},
		{[]string{"--qmp", "unix:/q"}, "--id is required"},
		{[]string{"--qmp", "unix:/q", "--id", "-x"}, `--id "-x"`},
		{[]string{"--qmp", "unix:/q", "--id", "n", "--timeout", "soon"}, `invalid value "soon" for flag -timeout`},
		{[]string{"--qmp", "unix:/q", "--id", "n", "--timeout", "-1s"}, "--timeout -1s"},
		{[]string{"--qmp", "unix:/q", "--id", "n", "--vhost-user", "/v"}, "flag provided but not defined: -vhost-user"},
	}
	for _, c := range cases {
		_, err := parseUnplugArgs(c.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) || !errors.As(err, new(usageError)) {
			t.Errorf("unplug %v: err = %v, want a usage error containing %q", c.args, err, c.want)
		}
	}
}

// TestPlugCommandLine: --help for both, exit status 2 and the option named
// for a refused line, paths made absolute, --name defaulting to --id.
func TestPlugCommandLine(t *testing.T) {
	for _, sub := range []string{"plug", "unplug"} {
		var out, errOut bytes.Buffer
		if code := realMain([]string{sub, "--help"}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "Usage: l2tpv3-netdev "+sub+" --qmp") {
			t.Errorf("%s --help: exit %d, output %q", sub, code, out.String())
		}
		out.Reset()
		if code := realMain([]string{sub, "--id", "n"}, &out, &errOut); code != exitUsage ||
			!strings.Contains(errOut.String(), "l2tpv3-netdev "+sub+": --qmp unix:PATH is required") {
			t.Errorf("%s without --qmp: exit %d, stderr %q", sub, code, errOut.String())
		}
	}
	cwd, _ := os.Getwd()
	r, err := parsePlugArgs([]string{"--qmp", "unix:q.sock", "--id", "net1", "--vhost-user", "v.sock,queues=2",
		"--l2tpv3", "src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=5000,dstport=5001,txsession=1", "--mtu", "9000"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(cwd, "v.sock") + ",queues=2,mtu=9000"; r.Spec.VhostUser != want || r.Spec.Name != "net1" {
		t.Errorf("spec %+v, want vhost_user %q and name net1", r.Spec, want)
	}
	r, err = parsePlugArgs([]string{"--qmp", "/abs/q.sock", "--id", "net1", "--stream", "unix:s.sock,mode=0660", "--name", "vm2-net1",
		"--l2tpv3", "src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=5000,dstport=5001,txsession=1", "--prop", "romfile=", "--prop", "vectors=4", "--prop", "x-on=on"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := "unix:" + filepath.Join(cwd, "s.sock") + ",mode=0660"; r.Spec.Stream != want || r.Spec.Name != "vm2-net1" {
		t.Errorf("spec %+v, want stream %q, name vm2-net1", r.Spec, want)
	}
	if want := map[string]any{"romfile": "", "vectors": int64(4), "x-on": true}; !reflect.DeepEqual(r.Props, want) {
		t.Errorf("props %#v, want %#v", r.Props, want)
	}
}
