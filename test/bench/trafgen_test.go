package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// trafgenGolden64 is the config of a 64-byte frame from port 40001 to
// port 40000 in session 2.
const trafgenGolden64 = `# l2tpv3-netdev bench (test/bench): L2TPv3/UDP/IPv4 data packet, 64-byte inner frame
# 127.0.0.1:40001 -> 127.0.0.1:40000, session 2, no cookie, no L2-Specific Sublayer
{
  # Ethernet on lo: zero addresses, IPv4
  fill(0x00, 12), c16(0x0800),
  # IPv4: version 4, IHL 5, TOS 0, total length, ID 0, DF, TTL 64, UDP, header checksum (bytes 14..33)
  0x45, 0x00, c16(100), c16(0), c16(0x4000), 64, 17, csumip(14, 33),
  127, 0, 0, 1,  127, 0, 0, 1,
  # UDP: source and destination port, length, checksum 0 (none)
  c16(40001), c16(40000), c16(80), c16(0),
  # L2TPv3: 00 03 00 00 (data, version 3), session ID
  0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
  # inner Ethernet frame: dst MAC, src MAC, EtherType 0x88b5, "L2B1", sequence number 0
  0x52, 0x54, 0x00, 0xbe, 0x00, 0x02, 0x52, 0x54, 0x00, 0xbe, 0x00, 0x01, 0x88, 0xb5, 0x4c, 0x32, 0x42, 0x31, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
  # zero padding to 64 bytes
  fill(0x00, 38),
}
`

// TestTrafgenConfigGolden pins the config text of a 64-byte frame.
func TestTrafgenConfigGolden(t *testing.T) {
	got := trafgenConfig(trafgenPacket{srcPort: 40001, dstPort: 40000, session: 2, frameSize: 64})
	if got != trafgenGolden64 {
		t.Errorf("config:\n%s\nwant:\n%s", got, trafgenGolden64)
	}
}

// wantTrafgenPacket builds, independently of trafgenConfig, the packet a
// config for p must make trafgen send on lo: zero Ethernet addresses,
// IPv4 with a correct header checksum, UDP with checksum 0, and the
// blaster's L2TPv3 payload with sequence number 0.
func wantTrafgenPacket(p trafgenPacket) []byte {
	payload := buildL2TP(make([]byte, l2tpHeaderLen+p.frameSize), p.session, p.frameSize, 0)
	b := make([]byte, 14+20+8, 14+20+8+len(payload))
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:34]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	binary.BigEndian.PutUint16(ip[6:], 0x4000)
	copy(ip[12:], []byte{127, 0, 0, 1, 127, 0, 0, 1})
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	udp := b[34:42]
	binary.BigEndian.PutUint16(udp[0:], uint16(p.srcPort))
	binary.BigEndian.PutUint16(udp[2:], uint16(p.dstPort))
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	return append(b, payload...)
}

// evalTrafgen evaluates the part of trafgen's packet language that
// trafgenConfig uses (comments, byte literals, c16, c32, fill, csumip) into
// the packet's bytes.
func evalTrafgen(t *testing.T, cfg string) []byte {
	t.Helper()
	var body strings.Builder
	for _, line := range strings.Split(cfg, "\n") {
		line, _, _ = strings.Cut(line, "#")
		body.WriteString(line + " ")
	}
	text := strings.TrimSpace(body.String())
	if !strings.HasPrefix(text, "{") || !strings.HasSuffix(text, "}") {
		t.Fatalf("not one packet in braces: %q", text)
	}
	num := func(s string) uint64 {
		n, err := strconv.ParseUint(strings.TrimSpace(s), 0, 64)
		if err != nil {
			t.Fatalf("number %q: %v", s, err)
		}
		return n
	}
	var pkt []byte
	var csum [][2]int // csumip ranges, by position of the field
	var at []int
	for _, tok := range splitTop(text[1 : len(text)-1]) {
		name, args, call := strings.Cut(strings.TrimSuffix(tok, ")"), "(")
		if !call {
			pkt = append(pkt, byte(num(tok)))
			continue
		}
		a := strings.Split(args, ",")
		switch name {
		case "c16":
			pkt = binary.BigEndian.AppendUint16(pkt, uint16(num(a[0])))
		case "c32":
			pkt = binary.BigEndian.AppendUint32(pkt, uint32(num(a[0])))
		case "fill":
			pkt = append(pkt, bytes.Repeat([]byte{byte(num(a[0]))}, int(num(a[1])))...)
		case "csumip":
			csum, at = append(csum, [2]int{int(num(a[0])), int(num(a[1]))}), append(at, len(pkt))
			pkt = append(pkt, 0, 0)
		default:
			t.Fatalf("unknown function %q", tok)
		}
	}
	for i, r := range csum {
		var sum uint32
		for j := r[0]; j <= r[1]; j += 2 {
			sum += uint32(pkt[j])<<8 | uint32(pkt[j+1])
		}
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		binary.BigEndian.PutUint16(pkt[at[i]:], ^uint16(sum))
	}
	return pkt
}

// splitTop splits s at the commas outside parentheses, dropping empty items.
func splitTop(s string) []string {
	var out []string
	depth, start := 0, 0
	for i, c := range s + "," {
		switch c {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				if tok := strings.TrimSpace(s[start:i]); tok != "" {
					out = append(out, strings.Join(strings.Fields(tok), ""))
				}
				start = i + 1
			}
		}
	}
	return out
}

// trafgenCases are the packets the tests render.
var trafgenCases = []trafgenPacket{
	{srcPort: 40001, dstPort: 40000, session: 2, frameSize: 64},
	{srcPort: 1701, dstPort: 65535, session: 0xdeadbeef, frameSize: 1500},
	{srcPort: 5, dstPort: 6, session: rxSession, frameSize: minFrameSize},
}

// TestTrafgenConfigBytes evaluates each config and compares it with the
// packet built independently: every length, offset and the IPv4 checksum.
func TestTrafgenConfigBytes(t *testing.T) {
	for _, p := range trafgenCases {
		got := evalTrafgen(t, trafgenConfig(p))
		if want := wantTrafgenPacket(p); !bytes.Equal(got, want) {
			t.Errorf("%+v:\n got %x\nwant %x", p, got, want)
		}
	}
}

// TestTrafgenPcap has trafgen itself compile each config and write the
// packet to a pcap file instead of a device: the bytes must be the packet
// built independently (skipped where trafgen is not installed).
func TestTrafgenPcap(t *testing.T) {
	bin, err := exec.LookPath("trafgen")
	if err != nil {
		t.Skip("trafgen not installed (Debian: apt-get install netsniff-ng)")
	}
	dir := t.TempDir()
	for i, p := range trafgenCases {
		cfg := filepath.Join(dir, "p.cfg")
		pcap := filepath.Join(dir, strconv.Itoa(i)+".pcap")
		if err := os.WriteFile(cfg, []byte(trafgenConfig(p)), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "--conf", cfg, "--dev", pcap, "--num", "1", "--cpus", "1", "--no-sock-mem").CombinedOutput()
		if n, ok := parseTrafgenSent(string(out)); err != nil || !ok || n != 1 {
			t.Fatalf("trafgen: %v, sent %d %v:\n%s", err, n, ok, out)
		}
		got := readPcap(t, pcap)
		if want := wantTrafgenPacket(p); len(got) != 1 || !bytes.Equal(got[0], want) {
			t.Errorf("%+v: trafgen wrote %x\nwant %x", p, got, want)
		}
	}
}

// readPcap returns the packets of a classic pcap file in either byte
// order and timestamp resolution.
func readPcap(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 24 {
		t.Fatalf("pcap %s: %v (%d bytes)", path, err, len(b))
	}
	var order binary.ByteOrder = binary.LittleEndian
	switch binary.LittleEndian.Uint32(b) {
	case 0xa1b2c3d4, 0xa1b23c4d:
	default:
		order = binary.BigEndian
	}
	var pkts [][]byte
	for b = b[24:]; len(b) >= 16; {
		n := int(order.Uint32(b[8:]))
		if len(b) < 16+n {
			t.Fatalf("pcap %s: truncated record", path)
		}
		pkts = append(pkts, b[16:16+n])
		b = b[16+n:]
	}
	return pkts
}

// TestParseTrafgenSent reads the count trafgen prints at its end.
func TestParseTrafgenSent(t *testing.T) {
	out := "     1 packets to schedule\n   114 bytes in total\nRunning! Hang up with ^C!\n\n\n" +
		"   174658048 packets outgoing\n 19911017472 bytes outgoing\n         607 sec, 280546 usec on CPU0 (174658048 packets)\n"
	if n, ok := parseTrafgenSent(out); !ok || n != 174658048 {
		t.Errorf("parseTrafgenSent = %d, %v", n, ok)
	}
	if _, ok := parseTrafgenSent("Running! Hang up with ^C!\n"); ok {
		t.Error("a count from output without one")
	}
}

// TestTrafgenArgs pins trafgen's options: one worker, the system's socket
// memory and IRQs left alone.
func TestTrafgenArgs(t *testing.T) {
	got := strings.Join(trafgenArgs("/t/x.cfg"), " ")
	if want := "--dev lo --conf /t/x.cfg --cpus 1 --no-sock-mem --notouch-irq"; got != want {
		t.Errorf("args %q, want %q", got, want)
	}
}

// TestPinned: a device is pinned through taskset, or started as is.
func TestPinned(t *testing.T) {
	if bin, args := pinned("", "qemu", []string{"-M", "none"}); bin != "qemu" || strings.Join(args, " ") != "-M none" {
		t.Errorf("unpinned: %s %q", bin, args)
	}
	if bin, args := pinned(trafgenDUTCPUs, "qemu", []string{"-M", "none"}); bin != "taskset" || strings.Join(args, " ") != "-c 1 qemu -M none" {
		t.Errorf("pinned: %s %q", bin, args)
	}
}
