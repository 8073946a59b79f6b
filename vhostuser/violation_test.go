package vhostuser

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/vhostuser/vhosttest"
	"golang.org/x/sys/unix"
)

// TestRingViolations breaks the TX or RX ring in one way per case. The ring must stop with
// an error wrapping ErrRingBroken and net.ErrClosed, be counted once, signal the err
// eventfd, and leave the other direction working; a restart must clear it.
func TestRingViolations(t *testing.T) {
	const num = 8
	type env struct {
		r   *rig
		q   *vhosttest.Virtqueue // the ring under attack
		buf uint64               // a valid 2 KiB buffer
		end uint64               // first guest physical address past memory
	}
	cases := []struct {
		name string
		rx   bool
		make func(e env)
	}{
		{"address beyond memory", false, func(e env) { e.q.SetDesc(0, e.end+4096, 100, 0, 0); e.q.PushHead(0) }},
		{"address below memory", false, func(e env) { e.q.SetDesc(0, 4096, 100, 0, 0); e.q.PushHead(0) }},
		{"length past the end", false, func(e env) { e.q.SetDesc(0, e.end-10, 100, 0, 0); e.q.PushHead(0) }},
		{"address wraps", false, func(e env) { e.q.SetDesc(0, 1<<64-16, 64, 0, 0); e.q.PushHead(0) }},
		{"loop", false, func(e env) {
			e.q.SetDesc(0, e.buf, 12, vhosttest.DescNext, 1)
			e.q.SetDesc(1, e.buf, 100, vhosttest.DescNext, 0)
			e.q.PushHead(0)
		}},
		{"chain longer than the queue", false, func(e env) {
			for i := range uint16(num) {
				e.q.SetDesc(i, e.buf, 64, vhosttest.DescNext, (i+1)%num)
			}
			e.q.PushHead(3)
		}},
		{"next beyond the table", false, func(e env) { e.q.SetDesc(0, e.buf, 12, vhosttest.DescNext, num); e.q.PushHead(0) }},
		{"head beyond the table", false, func(e env) { e.q.PushHead(num) }},
		{"avail index jumps", false, func(e env) {
			for range num + 1 {
				e.q.PushHead(0)
			}
		}},
		{"zero-length indirect", false, func(e env) { e.q.SetDesc(0, e.buf, 0, vhosttest.DescIndirect, 0); e.q.PushHead(0) }},
		{"indirect length not a multiple of 16", false, func(e env) {
			e.q.SetDesc(0, e.buf, 40, vhosttest.DescIndirect, 0)
			e.q.PushHead(0)
		}},
		{"indirect table larger than the queue", false, func(e env) {
			e.q.SetDesc(0, e.buf, 16*(num+1), vhosttest.DescIndirect, 0)
			e.q.PushHead(0)
		}},
		{"indirect table beyond memory", false, func(e env) {
			e.q.SetDesc(0, e.end-16, 32, vhosttest.DescIndirect, 0)
			e.q.PushHead(0)
		}},
		{"indirect inside indirect", false, func(e env) {
			tbl := e.r.mem.At(e.buf, 32)
			putDesc(tbl[0:], e.buf+1024, 32, vhosttest.DescIndirect, 0)
			e.q.SetDesc(0, e.buf, 16, vhosttest.DescIndirect, 0)
			e.q.PushHead(0)
		}},
		{"indirect loop", false, func(e env) {
			tbl := e.r.mem.At(e.buf, 32)
			putDesc(tbl[0:], e.buf+1024, 100, vhosttest.DescNext, 1)
			putDesc(tbl[16:], e.buf+1024, 100, vhosttest.DescNext, 0)
			e.q.SetDesc(0, e.buf, 32, vhosttest.DescIndirect, 0)
			e.q.PushHead(0)
		}},
		{"indirect with NEXT", false, func(e env) {
			e.q.SetDesc(0, e.buf, 16, vhosttest.DescIndirect|vhosttest.DescNext, 1)
			e.q.PushHead(0)
		}},
		{"writable descriptor in TX", false, func(e env) { e.q.SetDesc(0, e.buf, 100, vhosttest.DescWrite, 0); e.q.PushHead(0) }},
		{"readable descriptor in RX", true, func(e env) { e.q.SetDesc(0, e.buf, 2048, 0, 0); e.q.PushHead(0) }},
		{"RX buffer smaller than the header", true, func(e env) {
			e.q.SetDesc(0, e.buf, 4, vhosttest.DescWrite, 0)
			e.q.PushHead(0)
		}},
		{"zero-length RX buffer", true, func(e env) { e.q.SetDesc(0, e.buf, 0, vhosttest.DescWrite, 0); e.q.PushHead(0) }},
		{"RX buffer beyond memory", true, func(e env) {
			e.q.SetDesc(0, e.end-100, 2048, vhosttest.DescWrite, 0)
			e.q.PushHead(0)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, rigOpts{num: num, noStart: true})
			errfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(errfd)
			r.start()
			victim, other := r.tx, r.rx
			idx := uint64(1)
			if c.rx {
				victim, other, idx = r.rx, r.tx, 0
			}
			if err := r.fe.Set(vhosttest.SetVringErr, vhosttest.U64(idx), errfd); err != nil {
				t.Fatal(err)
			}
			e := env{r: r, q: victim, buf: r.mem.Alloc(2048, 16), end: r.mem.Base + uint64(len(r.mem.Bytes))}
			c.make(e)
			victim.PublishKick()
			if c.rx {
				err = r.q.WriteFrames([][]byte{frame(100, 1)})
			} else {
				_, err = r.q.ReadFrames([][]byte{make([]byte, 2048)}, []int{0}, 0)
			}
			if !errors.Is(err, ErrRingBroken) || !errors.Is(err, net.ErrClosed) {
				t.Fatalf("error %v, want ErrRingBroken and net.ErrClosed", err)
			}
			if want := violationReason[c.name]; !strings.Contains(err.Error(), want) {
				t.Errorf("error %q, want reason %q", err, want)
			}
			if st := r.srv.Stats(); st.RingViolations != 1 || st.ProtocolErrors != 0 {
				t.Errorf("stats %+v", st)
			}
			var cnt [8]byte
			if n, _ := unix.Read(errfd, cnt[:]); n != 8 {
				t.Error("err eventfd not signalled")
			}
			// The other direction carries on.
			if c.rx {
				r.putTX(frame(50, 2), false)
				r.tx.PublishKick()
				readN(t, r.q, 1)
			} else {
				a := r.mem.Alloc(2048, 8)
				other.Add([]vhosttest.Seg{{Addr: a, Len: 2048, Write: true}})
				other.Publish()
				if err := r.q.WriteFrames([][]byte{frame(50, 2)}); err != nil {
					t.Fatal(err)
				}
			}
			// A restart of the broken ring from the used index brings it back.
			if _, err := r.fe.GetVringBase(uint32(idx)); err != nil {
				t.Fatal(err)
			}
			r.h.waitStopped(t)
			fresh, _ := vhosttest.NewVirtqueue(r.mem, num, true)
			defer fresh.Close()
			if err := r.fe.StartQueue(uint32(idx), fresh, 0); err != nil {
				t.Fatal(err)
			}
			q := r.h.waitStarted(t)
			if c.rx {
				fresh.Add([]vhosttest.Seg{{Addr: r.mem.Alloc(2048, 8), Len: 2048, Write: true}})
				fresh.Publish()
				if err := q.WriteFrames([][]byte{frame(60, 3)}); err != nil {
					t.Fatal(err)
				}
			} else {
				r.tx = fresh
				want := frame(60, 3)
				r.putTX(want, false)
				fresh.PublishKick()
				if got := readN(t, q, 1); !bytes.Equal(got[0], want) {
					t.Fatal("wrong frame after restart")
				}
			}
		})
	}
}

// violationReason is the reason each case must be refused for.
var violationReason = map[string]string{
	"address beyond memory":                string(errBufferAddr),
	"address below memory":                 string(errBufferAddr),
	"length past the end":                  string(errBufferAddr),
	"address wraps":                        string(errBufferAddr),
	"loop":                                 string(errChainLoop),
	"chain longer than the queue":          string(errChainLoop),
	"next beyond the table":                string(errDescRange),
	"head beyond the table":                string(errHeadRange),
	"avail index jumps":                    "avail index 9 is more than 8 ahead",
	"zero-length indirect":                 string(errIndirectLen),
	"indirect length not a multiple of 16": string(errIndirectLen),
	"indirect table larger than the queue": string(errIndirectLen),
	"indirect table beyond memory":         string(errIndirectAddr),
	"indirect inside indirect":             string(errIndirectNested),
	"indirect loop":                        string(errChainLoop),
	"indirect with NEXT":                   string(errIndirectNext),
	"writable descriptor in TX":            string(errTXWritable),
	"readable descriptor in RX":            string(errRXReadable),
	"RX buffer smaller than the header":    string(errRXBufferTooTiny),
	"zero-length RX buffer":                string(errRXBufferTooTiny),
	"RX buffer beyond memory":              string(errBufferAddr),
}

// putDesc writes a descriptor into an indirect table.
func putDesc(b []byte, addr uint64, n uint32, flags, next uint16) {
	for i := range 8 {
		b[i] = byte(addr >> (8 * i))
	}
	b[8], b[9], b[10], b[11] = byte(n), byte(n>>8), byte(n>>16), byte(n>>24)
	b[12], b[13], b[14], b[15] = byte(flags), byte(flags>>8), byte(next), byte(next>>8)
}

// TestHostileRingAddresses points a ring outside guest memory: starting it breaks that
// ring only.
func TestHostileRingAddresses(t *testing.T) {
	r := newRig(t, rigOpts{noStart: true})
	r.tx.Used = r.mem.Base + uint64(len(r.mem.Bytes)) - 100 // the used ring runs off the end
	if err := r.fe.StartQueue(0, r.rx, 0); err != nil {
		t.Fatal(err)
	}
	if err := r.fe.StartQueue(1, r.tx, 0); err != nil {
		t.Fatal(err)
	}
	q := r.h.waitStarted(t)
	_, err := q.ReadFrames([][]byte{make([]byte, 100)}, []int{0}, 0)
	if !errors.Is(err, ErrRingBroken) {
		t.Fatalf("ReadFrames = %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- q.WriteFrames([][]byte{frame(10, 1)}) }()
	select {
	case err := <-done:
		t.Fatalf("RX returned %v although it only lacks buffers", err)
	case <-time.After(20 * time.Millisecond):
	}
	q.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteFrames after Close = %v", err)
	}
}
