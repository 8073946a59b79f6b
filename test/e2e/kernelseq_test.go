package e2e

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/test/guest"
)

// TestSidecarKernelPeerSeq proves every seq= mode against a real Linux
// l2tp_eth peer (in a guest) set up with exactly the commands
// `l2tpv3-netdev peer-config --for linux` prints for the sidecar's options: none,
// send and both ping both ways. recv, which the mapping refuses (no kernel
// setting serves it), is run against what it used to print (seq send): the
// sidecar warns at start, and the kernel's unnumbered replies are dropped
// and counted as sequence, not lost silently.
func TestSidecarKernelPeerSeq(t *testing.T) {
	guest.Require(t)
	for _, seq := range []string{"none", "send", "both", "recv"} {
		t.Run(seq, func(t *testing.T) { kernelPeerSeq(t, seq) })
	}
}

// kernelPeerSeq is one mode of TestSidecarKernelPeerSeq.
func kernelPeerSeq(t *testing.T, seq string) {
	srcPort, hostPort := guest.FreeUDPPort(), guest.FreeUDPPort()
	opts := fmt.Sprintf("src=127.0.0.1,srcport=%d,dst=127.0.0.1,dstport=%d,udp=on,txsession=0x31,rxsession=0x32,l2spec=default,seq=%s",
		srcPort, hostPort, seq)
	cmds := kernelCommands(t, opts)
	t.Logf("kernel peer: %q", cmds)
	k := guest.StartKernelPeer(t, guest.KernelPeerOptions{HostPort: hostPort, PeerPort: srcPort, Commands: cmds})
	sock := filepath.Join(guest.SocketDir(t), "a.sock")
	a := guest.Start(t, guest.Options{Name: "vmA", IPs: []string{"169.254.100.1/24"},
		Args: append(qemuStreamServer("n0", sock), guest.NIC("n0", 1)...)})
	sc := startSidecar(t, "--stream", "unix:"+sock+",server=off,reconnect-ms=100", "--l2tpv3", opts)
	warned := sc.waitLog("seq=recv works only with a peer", time.Second)
	k.MustWaitReady(bootTimeout)
	a.MustWaitReady(bootTimeout)
	if seq == "recv" {
		if !warned {
			t.Error("seq=recv: no warning at start")
		}
		if err := a.Ping("169.254.100.2", 3, 5*time.Second); err == nil {
			t.Error("seq=recv against a Linux peer: ping answered; the kernel should have stopped numbering")
		}
		drops, line := sequenceDrops(sc)
		t.Logf("sidecar: %s", line)
		if drops == 0 {
			t.Fatalf("seq=recv: the kernel's unnumbered frames were not counted as sequence drops: %s", line)
		}
		if !sc.waitLog("reason=sequence", 3*time.Second) {
			t.Error("seq=recv: the sequence drops were never logged")
		}
		return
	}
	if warned {
		t.Errorf("seq=%s: warned about seq=recv", seq)
	}
	if err := a.Ping("169.254.100.2", 3, pingTimeout); err != nil {
		t.Log(k.MustRun("ip -s l2tp show session; ip -s link show l2tpeth0", pingTimeout))
		t.Fatalf("%v\nsidecar: %s", err, sc.counters())
	}
	if err := k.Ping("169.254.100.1", 2, pingTimeout); err != nil {
		t.Fatal(err)
	}
	if drops, line := sequenceDrops(sc); drops != 0 {
		t.Errorf("seq=%s: %d sequence drops: %s", seq, drops, line)
	}
	t.Logf("kernel: %s", k.MustRun("ip -s l2tp show session", pingTimeout))
}

// kernelCommands renders the kernel peer's commands for the sidecar's
// options (linuxPeerCommands). For seq=recv peer-config must refuse; the
// peer then gets what it printed before the refusal: seq send.
func kernelCommands(t *testing.T, opts string) []string {
	t.Helper()
	c, err := l2tp.ParseOptions(opts)
	if err != nil {
		t.Fatal(err)
	}
	if c.Seq != l2tp.SeqRecv {
		return linuxPeerCommands(t, opts)
	}
	out, err := peerConfig(t, slirpView(c))
	if err == nil || !strings.Contains(out, "seq=recv has no Linux peer") {
		t.Fatalf("seq=recv: peer-config printed %q, %v; want the refusal", out, err)
	}
	t.Logf("peer-config refuses: %s", out)
	c.Seq = l2tp.SeqNone
	cmds := linuxPeerCommands(t, c.String())
	cmds[1] += " seq send"
	return cmds
}

// linuxPeerCommands is what `l2tpv3-netdev peer-config --for linux` (the
// built binary; l2tp.LinuxPeerTunnel inside) prints for a kernel peer guest
// facing the sidecar's options: the commands the guest runs, unchanged.
func linuxPeerCommands(t *testing.T, opts string) []string {
	t.Helper()
	c, err := l2tp.ParseOptions(opts)
	if err != nil {
		t.Fatal(err)
	}
	out, err := peerConfig(t, slirpView(c))
	if err != nil {
		t.Fatalf("peer-config: %v\n%s", err, out)
	}
	return strings.Split(strings.TrimSuffix(out, "\n"), "\n")
}

// peerConfig runs the built binary's peer-config --for linux on c's
// option string, returning what it printed (standard output, or standard
// error when it refused).
func peerConfig(t *testing.T, c l2tp.Config) (string, error) {
	t.Helper()
	cmd := exec.Command(buildSidecar(t), "peer-config", "--for", "linux", "--l2tpv3", c.String())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return stderr.String(), err
	}
	return string(out), nil
}

// slirpView is the sidecar's config as the kernel peer guest sees it: its
// own address and port are the guest's, and our packets reach it from the
// slirp gateway.
func slirpView(c l2tp.Config) l2tp.Config {
	c.Src, c.Dst, c.DstPort = guest.KernelPeerGateway, guest.KernelPeerAddr, guest.KernelPeerUDPPort
	return c
}

// sequenceDrops reads the sidecar's sequence drop count from its counters line.
func sequenceDrops(sc *sidecar) (uint64, string) {
	line := sc.counters()
	m := regexp.MustCompile(`sequence=(\d+)`).FindStringSubmatch(line)
	if m == nil {
		return 0, line
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n, line
}
