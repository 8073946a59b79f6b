package guest

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Addresses of the kernel peer's QEMU user network (slirp). The host is
// reached as KernelPeerGateway; slirp rewrites 127.0.0.1 to it.
const (
	KernelPeerNet     = "169.254.50.0/24"
	KernelPeerGateway = "169.254.50.2"
	KernelPeerAddr    = "169.254.50.15"
	KernelPeerUDPPort = 1701 // the tunnel socket's port inside the guest
)

// KernelPeerOptions configure a guest that runs Linux's l2tp_eth as the far
// end of one static L2TPv3-over-UDP pseudowire.
type KernelPeerOptions struct {
	// Name is the guest's name; default "kpeer".
	Name string
	// HostPort is the UDP port on 127.0.0.1 that QEMU forwards to the
	// tunnel socket; default FreeUDPPort().
	HostPort int
	// PeerPort is the UDP port on 127.0.0.1 the other end sends from;
	// required. The kernel's tunnel socket is connected to it (slirp keeps
	// the host's source port), so packets from any other port are dropped.
	PeerPort int
	// SessionID is the session the peer receives; PeerSessionID the one it
	// sends. Both required without Commands (QEMU: rxsession of the other end =
	// PeerSessionID, txsession = SessionID).
	SessionID, PeerSessionID uint32
	// TunnelID and PeerTunnelID default to 1 (they are not on the wire).
	TunnelID, PeerTunnelID uint32
	// Cookie is the cookie the peer sends, PeerCookie the one it expects
	// to receive (Linux's meaning of "ip l2tp ... cookie/peer_cookie"):
	// hex digits, 4 or 8 bytes; empty for none. Against QEMU -netdev
	// l2tpv3: Cookie = its rxcookie, PeerCookie = its txcookie (QEMU writes its
	// cookies big-endian, so the digits are the same).
	Cookie, PeerCookie string
	// L2SpecType is "none" (default; QEMU counter=off) or "default" (4-byte
	// sublayer; QEMU counter=on).
	L2SpecType string
	// IP is l2tpeth0's address; default "169.254.100.2/24".
	IP string
	// MTU sets l2tpeth0's MTU; 0 keeps the kernel's (1450 here).
	MTU int
	// SessionArgs are extra "ip l2tp add session" words, e.g. "seq", "both".
	SessionArgs []string
	// Commands, when set, replace the tunnel, session and MTU lines built
	// from the fields above: the commands `l2tpv3-netdev peer-config --for linux`
	// renders for a Config seen from inside this guest (local
	// KernelPeerAddr, port KernelPeerUDPPort; remote KernelPeerGateway,
	// our source port = PeerPort). The interface must be l2tpeth0.
	Commands []string
	// Args are extra QEMU arguments (a second NIC, say).
	Args []string
}

// KernelPeer is a guest running a Linux l2tp_eth pseudowire end, reachable
// from the host at 127.0.0.1:HostPort. Its WaitReady also sets the
// pseudowire up; l2tpeth0 is then the Ethernet end inside the guest.
type KernelPeer struct {
	*VM
	// HostPort is the UDP port on 127.0.0.1 to send L2TPv3 packets to; the
	// peer's packets come from it as well.
	HostPort int

	opts KernelPeerOptions
}

// StartKernelPeer boots a kernel-peer guest; call WaitReady before use.
func StartKernelPeer(t testing.TB, opts KernelPeerOptions) *KernelPeer {
	t.Helper()
	if opts.Name == "" {
		opts.Name = "kpeer"
	}
	if opts.HostPort == 0 {
		opts.HostPort = FreeUDPPort()
	}
	if opts.PeerPort == 0 || len(opts.Commands) == 0 && (opts.SessionID == 0 || opts.PeerSessionID == 0) {
		t.Fatal("guest.StartKernelPeer: PeerPort, and SessionID and PeerSessionID or Commands, are required")
	}
	if opts.TunnelID == 0 {
		opts.TunnelID = 1
	}
	if opts.PeerTunnelID == 0 {
		opts.PeerTunnelID = 1
	}
	if opts.L2SpecType == "" {
		opts.L2SpecType = "none"
	}
	if opts.IP == "" {
		opts.IP = "169.254.100.2/24"
	}
	netdev := fmt.Sprintf("user,id=kp0,net=%s,host=%s,dhcpstart=%s,ipv6=off,hostfwd=udp:127.0.0.1:%d-%s:%d",
		KernelPeerNet, KernelPeerGateway, KernelPeerAddr, opts.HostPort, KernelPeerAddr, KernelPeerUDPPort)
	vm := Start(t, Options{
		Name: opts.Name,
		IPs:  []string{KernelPeerAddr + "/24"},
		L2TP: true,
		Args: append(append([]string{"-netdev", netdev}, NIC("kp0", 0xfe00)...), opts.Args...),
	})
	return &KernelPeer{VM: vm, HostPort: opts.HostPort, opts: opts}
}

// setupScript is the guest shell script that creates the pseudowire.
func (kp *KernelPeer) setupScript() string {
	o := kp.opts
	var b strings.Builder
	if len(o.Commands) != 0 {
		b.WriteString(strings.Join(o.Commands, "\n") + "\n")
		kp.finishScript(&b)
		return b.String()
	}
	fmt.Fprintf(&b, "ip l2tp add tunnel tunnel_id %d peer_tunnel_id %d encap udp local %s remote %s udp_sport %d udp_dport %d\n",
		o.TunnelID, o.PeerTunnelID, KernelPeerAddr, KernelPeerGateway, KernelPeerUDPPort, o.PeerPort)
	fmt.Fprintf(&b, "ip l2tp add session name l2tpeth0 tunnel_id %d session_id %d peer_session_id %d l2spec_type %s",
		o.TunnelID, o.SessionID, o.PeerSessionID, o.L2SpecType)
	if o.Cookie != "" {
		fmt.Fprintf(&b, " cookie %s", o.Cookie)
	}
	if o.PeerCookie != "" {
		fmt.Fprintf(&b, " peer_cookie %s", o.PeerCookie)
	}
	for _, a := range o.SessionArgs {
		b.WriteString(" " + a)
	}
	b.WriteString("\n")
	if o.MTU != 0 {
		fmt.Fprintf(&b, "ip link set l2tpeth0 mtu %d\n", o.MTU)
	}
	b.WriteString("ip link set l2tpeth0 up\n")
	kp.finishScript(&b)
	return b.String()
}

// finishScript adds l2tpeth0's address and teaches slirp the guest's MAC
// (one packet to the gateway), so the first forwarded L2TPv3 packet is not
// lost to ARP.
func (kp *KernelPeer) finishScript(b *strings.Builder) {
	fmt.Fprintf(b, "ip addr add %s dev l2tpeth0\n", kp.opts.IP)
	fmt.Fprintf(b, "ping -c 1 -w 3 %s >/dev/null", KernelPeerGateway)
}

// WaitReady waits for the guest to boot and then creates the tunnel and
// session (l2tpeth0, up, with opts.IP).
func (kp *KernelPeer) WaitReady(timeout time.Duration) error {
	kp.t.Helper()
	start := time.Now()
	if err := kp.VM.WaitReady(timeout); err != nil {
		return err
	}
	left := timeout - time.Since(start)
	if left < 10*time.Second {
		left = 10 * time.Second
	}
	if out, err := kp.Run(kp.setupScript(), left); err != nil {
		return fmt.Errorf("%s: setting up l2tpeth0: %w\n%s", kp.Name, err, out)
	}
	return nil
}

// MustWaitReady is WaitReady that fails the test on error.
func (kp *KernelPeer) MustWaitReady(timeout time.Duration) {
	kp.t.Helper()
	if err := kp.WaitReady(timeout); err != nil {
		kp.t.Fatal(err)
	}
}
