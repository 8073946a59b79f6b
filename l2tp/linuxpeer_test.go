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
