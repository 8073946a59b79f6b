package main

import (
	"bytes"
	"strings"
	"testing"
)

// peerUDP is the UDP tunnel the golden peer-config sessions share.
const peerUDP = "src=192.0.2.1,dst=198.51.100.7,udp,srcport=1701,dstport=1702"

// peerSessions are three sessions in one UDP tunnel (seq, 64-bit cookies,
// cookies of 8 bytes out and 4 in on a 9000-byte underlay) and one over IP
// to another peer.
var peerSessions = []string{
	peerUDP + ",txsession=0x10,rxsession=0x20,l2spec=default,seq=both",
	peerUDP + ",txsession=0x11,rxsession=0x21,cookie64,txcookie=1,rxcookie=2",
	peerUDP + ",txsession=0x12,rxsession=0x22,txcookie64=on,rxcookie64=off,txcookie=0x1122334455667788,rxcookie=0x99aabbcc,underlay-mtu=9000",
	"src=192.0.2.1,dst=203.0.113.9,txsession=5,l2spec=default",
}

// TestPeerConfigGolden pins peer-config's output for each target.
func TestPeerConfigGolden(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"linux: a tunnel with three sessions, and another", append([]string{"--for", "linux"}, l2tpv3Flags(peerSessions)...), `
ip l2tp add tunnel tunnel_id 1 peer_tunnel_id 1 encap udp local 198.51.100.7 remote 192.0.2.1 udp_sport 1702 udp_dport 1701
ip l2tp add session name l2tpeth0 tunnel_id 1 session_id 16 peer_session_id 32 l2spec_type default seq both
ip link set l2tpeth0 up mtu 1446
ip l2tp add session name l2tpeth1 tunnel_id 1 session_id 17 peer_session_id 33 cookie 0000000000000002 peer_cookie 0000000000000001 l2spec_type none
ip link set l2tpeth1 up mtu 1442
ip l2tp add session name l2tpeth2 tunnel_id 1 session_id 18 peer_session_id 34 cookie 99aabbcc peer_cookie 1122334455667788 l2spec_type none
ip link set l2tpeth2 up mtu 8942
ip l2tp add tunnel tunnel_id 2 peer_tunnel_id 2 encap ip local 203.0.113.9 remote 192.0.2.1
ip l2tp add session name l2tpeth3 tunnel_id 2 session_id 5 peer_session_id 5 l2spec_type default
ip link set l2tpeth3 up mtu 1458
`},
		{"linux: names and tunnel id", []string{"--for", "linux", "--ifname", "pw", "--tunnel-id", "7", "--l2tpv3", peerSessions[3]}, `
ip l2tp add tunnel tunnel_id 7 peer_tunnel_id 7 encap ip local 203.0.113.9 remote 192.0.2.1
ip l2tp add session name pw0 tunnel_id 7 session_id 5 peer_session_id 5 l2spec_type default
ip link set pw0 up mtu 1458
`},
		{"vyos", []string{"--for", "vyos", "--l2tpv3", peerUDP + ",txsession=0x10,rxsession=0x20,counter", "--l2tpv3", peerSessions[3]}, `
set interfaces l2tpv3 l2tpeth0 encapsulation udp
set interfaces l2tpv3 l2tpeth0 source-address 198.51.100.7
set interfaces l2tpv3 l2tpeth0 remote 192.0.2.1
set interfaces l2tpv3 l2tpeth0 source-port 1702
set interfaces l2tpv3 l2tpeth0 destination-port 1701
set interfaces l2tpv3 l2tpeth0 tunnel-id 1
set interfaces l2tpv3 l2tpeth0 peer-tunnel-id 1
set interfaces l2tpv3 l2tpeth0 session-id 16
set interfaces l2tpv3 l2tpeth0 peer-session-id 32
set interfaces l2tpv3 l2tpeth0 mtu 1446
set interfaces l2tpv3 l2tpeth1 encapsulation ip
set interfaces l2tpv3 l2tpeth1 source-address 203.0.113.9
set interfaces l2tpv3 l2tpeth1 remote 192.0.2.1
set interfaces l2tpv3 l2tpeth1 tunnel-id 2
set interfaces l2tpv3 l2tpeth1 peer-tunnel-id 2
set interfaces l2tpv3 l2tpeth1 session-id 5
set interfaces l2tpv3 l2tpeth1 peer-session-id 5
set interfaces l2tpv3 l2tpeth1 mtu 1458
`},
		{"qemu", []string{"--for", "qemu", "--l2tpv3", peerSessions[1], "--l2tpv3", peerSessions[3],
			"--l2tpv3", "src=2001:db8::1,dst=2001:db8::2,ipv6,udp,srcport=1701,dstport=1701,txsession=5,rxsession=6,pincounter,txcookie=0x11223344,rxcookie=3,offset=4"}, `
l2tpv3,id=l2tpeth0,src=198.51.100.7,dst=192.0.2.1,udp=on,srcport=1702,dstport=1701,txsession=0x21,rxsession=0x11,cookie64=on,txcookie=0x2,rxcookie=0x1
l2tpv3,id=l2tpeth1,src=203.0.113.9,dst=192.0.2.1,txsession=0x5,rxsession=0x5,counter=on
l2tpv3,id=l2tpeth2,src=2001:db8::2,dst=2001:db8::1,udp=on,srcport=1701,dstport=1701,ipv6=on,txsession=0x6,rxsession=0x5,txcookie=0x3,rxcookie=0x11223344,counter=on,pincounter=on,offset=4
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := realMain(append([]string{"peer-config"}, tt.args...), &out, &errOut); code != 0 {
				t.Fatalf("exit %d: %s", code, errOut.String())
			}
			if want := strings.TrimPrefix(tt.want, "\n"); out.String() != want {
				t.Fatalf("output\n%s\nwant\n%s", out.String(), want)
			}
		})
	}
}

// TestPeerConfigRefuses: what the peer cannot express is refused with the
// reason, and so are bad command lines.
func TestPeerConfigRefuses(t *testing.T) {
	tests := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--for", "linux", "--l2tpv3", peerUDP + ",txsession=1,seq=recv"}, 1, "seq=recv has no Linux peer"},
		{[]string{"--for", "linux", "--l2tpv3", peerUDP + ",txsession=1,offset=2"}, 1, "offset=2 has no Linux peer"},
		{[]string{"--for", "linux", "--l2tpv3", peerUDP + ",txsession=1,rxsession=2", "--l2tpv3", peerUDP + ",txsession=1,rxsession=3"}, 1,
			"two sessions send txsession=1"},
		{[]string{"--for", "vyos", "--l2tpv3", peerSessions[1]}, 1, "VyOS l2tpv3 interfaces have no cookie setting"},
		{[]string{"--for", "vyos", "--l2tpv3", peerUDP + ",txsession=1"}, 1, "VyOS always sends the 4-byte default sublayer"},
		{[]string{"--for", "vyos", "--l2tpv3", peerSessions[0]}, 1, "seq=both: VyOS l2tpv3 interfaces have no sequencing"},
		{append([]string{"--for", "vyos"}, l2tpv3Flags(peerSessions[:2])...), 1, "VyOS makes one tunnel per l2tpv3 interface"},
		{[]string{"--for", "qemu", "--l2tpv3", peerSessions[2]}, 1, "QEMU has one cookie length for both directions (ours: 8 bytes out, 4 in)"},
		{[]string{"--for", "qemu", "--l2tpv3", peerSessions[0]}, 1, "seq=both: QEMU has no RFC 4719 sequencing"},
		{append([]string{"--for", "qemu"}, l2tpv3Flags(peerSessions[:2])...), 1, "QEMU opens a socket per -netdev"},
		{[]string{"--for", "bsd", "--l2tpv3", peerSessions[3]}, exitUsage, `--for "bsd": want linux, vyos or qemu`},
		{[]string{"--for", "linux"}, exitUsage, "no session: give --l2tpv3 OPTIONS, --config FILE or --port NAME"},
		{[]string{"--for", "linux", "--l2tpv3", "src=1"}, exitUsage, "--l2tpv3: l2tpv3: missing dst"},
		{[]string{"--for", "linux", "--l2tpv3", peerSessions[3], "--port", "a"}, exitUsage, "not with --config or --port"},
		{[]string{"--for", "linux", "--l2tpv3", peerSessions[3], "--tunnel-id", "0"}, exitUsage, `--tunnel-id "0": want 1..4294967295`},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		code := realMain(append([]string{"peer-config"}, tt.args...), &out, &errOut)
		if code != tt.code || !strings.Contains(errOut.String(), tt.msg) || out.Len() != 0 {
			t.Errorf("%q: exit %d, stderr %q, stdout %q; want exit %d and %q", tt.args, code, errOut.String(), out.String(), tt.code, tt.msg)
		}
	}
}

// TestPeerConfigFromConfigFile: the config file's ports, all or by name;
// an unknown name and a refused port are errors.
func TestPeerConfigFromConfigFile(t *testing.T) {
	file := writeConfig(t, `
[[port]]
name = "a"
stream = "unix:/tmp/x/a.sock"
l2tpv3 = "`+peerSessions[3]+`"

[[port]]
name = "b"
stream = "unix:/tmp/x/b.sock"
l2tpv3 = "`+peerUDP+`,txsession=0x10,rxsession=0x20,l2spec=default,seq=both"
`)
	var out, errOut bytes.Buffer
	if code := realMain([]string{"peer-config", "--for", "linux", "--config", file, "--port", "b"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	want := "ip l2tp add tunnel tunnel_id 1 peer_tunnel_id 1 encap udp local 198.51.100.7 remote 192.0.2.1 udp_sport 1702 udp_dport 1701\n" +
		"ip l2tp add session name l2tpeth0 tunnel_id 1 session_id 16 peer_session_id 32 l2spec_type default seq both\n" +
		"ip link set l2tpeth0 up mtu 1446\n"
	if out.String() != want {
		t.Fatalf("--port b:\n%s\nwant\n%s", out.String(), want)
	}
	out.Reset()
	if code := realMain([]string{"peer-config", "--for", "linux", "--config", file}, &out, &errOut); code != 0 ||
		strings.Count(out.String(), "ip l2tp add tunnel") != 2 {
		t.Fatalf("all ports: exit %d: %s%s", code, out.String(), errOut.String())
	}
	errOut.Reset()
	if code := realMain([]string{"peer-config", "--for", "linux", "--config", file, "--port", "c"}, &out, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), "--port c: no such port in "+file) {
		t.Fatalf("unknown port: exit %d, %s", code, errOut.String())
	}
}

// l2tpv3Flags is --l2tpv3 OPTS for each session.
func l2tpv3Flags(sessions []string) []string {
	var args []string
	for _, s := range sessions {
		args = append(args, "--l2tpv3", s)
	}
	return args
}
