package l2tp

import (
	"errors"
	"strings"
	"testing"
)

// TestLinuxPeerSeq: each seq mode's kernel session line (golden), and
// seq=recv, which no kernel setting can serve, refused with the reason and
// warned about.
func TestLinuxPeerSeq(t *testing.T) {
	const opts = "src=192.0.2.1,dst=198.51.100.7,udp,srcport=1701,dstport=1702,txsession=0x10,rxsession=0x20"
	const session = "ip l2tp add session name l2tpeth0 tunnel_id 1 session_id 16 peer_session_id 32"
	for seq, want := range map[string]string{
		"":          session + " l2spec_type none",
		",seq=none": session + " l2spec_type none",
		",seq=send": session + " l2spec_type default seq recv",
		",seq=both": session + " l2spec_type default seq both",
	} {
		c, err := ParseOptions(opts + seq)
		if err != nil {
			t.Fatal(err)
		}
		cmds, err := c.LinuxPeerCommands("l2tpeth0", 1)
		if err != nil {
			t.Fatalf("%s: %v", seq, err)
		}
		if cmds[1] != want {
			t.Errorf("%s: %q, want %q", seq, cmds[1], want)
		}
		if w := c.Warnings(); len(w) != 0 {
			t.Errorf("%s: warnings %q", seq, w)
		}
	}
	c, err := ParseOptions(opts + ",seq=recv")
	if err != nil {
		t.Fatal(err)
	}
	if cmds, err := c.LinuxPeerCommands("l2tpeth0", 1); !errors.Is(err, ErrSeqRecvLinux) || cmds != nil {
		t.Fatalf("seq=recv: %q, %v; want ErrSeqRecvLinux", cmds, err)
	}
	if w := c.Warnings(); len(w) != 1 || !strings.Contains(w[0], "not with Linux") || !strings.Contains(w[0], "seq=both") {
		t.Fatalf("seq=recv: warnings %q", w)
	}
}

// TestLinuxPeerCookies: the kernel's cookie is our rxcookie and its
// peer_cookie our txcookie, each at its own length (golden).
func TestLinuxPeerCookies(t *testing.T) {
	const opts = "src=192.0.2.1,dst=198.51.100.7,udp,srcport=1701,dstport=1702,txsession=0x10,rxsession=0x20"
	const session = "ip l2tp add session name l2tpeth0 tunnel_id 1 session_id 16 peer_session_id 32"
	for cookies, want := range map[string]string{
		",txcookie=0x11223344,rxcookie=0x55667788":                                      " cookie 55667788 peer_cookie 11223344",
		",cookie64,txcookie=1,rxcookie=2":                                               " cookie 0000000000000002 peer_cookie 0000000000000001",
		",txcookie64=on,rxcookie64=off,txcookie=0x1122334455667788,rxcookie=0x99aabbcc": " cookie 99aabbcc peer_cookie 1122334455667788",
		",txcookie64=off,rxcookie64=on,txcookie=0x99aabbcc,rxcookie=0x1122334455667788": " cookie 1122334455667788 peer_cookie 99aabbcc",
	} {
		c, err := ParseOptions(opts + cookies)
		if err != nil {
			t.Fatal(err)
		}
		cmds, err := c.LinuxPeerCommands("l2tpeth0", 1)
		if err != nil {
			t.Fatal(err)
		}
		if want = session + want + " l2spec_type none"; cmds[1] != want {
			t.Errorf("%s:\n got %q\nwant %q", cookies, cmds[1], want)
		}
	}
}
