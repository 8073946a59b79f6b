package vhosttest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// Request codes, from docs/interop/vhost-user.rst.
const (
	GetFeatures         = 1
	SetFeatures         = 2
	SetOwner            = 3
	ResetOwner          = 4
	SetMemTable         = 5
	SetLogBase          = 6
	SetLogFD            = 7
	SetVringNum         = 8
	SetVringAddr        = 9
	SetVringBase        = 10
	GetVringBase        = 11
	SetVringKick        = 12
	SetVringCall        = 13
	SetVringErr         = 14
	GetProtocolFeatures = 15
	SetProtocolFeatures = 16
	GetQueueNum         = 17
	SetVringEnable      = 18
	SendRARP            = 19
	NetSetMTU           = 20
	GetMaxMemSlots      = 36
	AddMemReg           = 37
	RemMemReg           = 38
)

// Header flags.
const (
	Version1  = 1
	FlagReply = 1 << 2
	NeedReply = 1 << 3
	NoFD      = 1 << 8 // SET_VRING_KICK/CALL/ERR: no fd
)

// Feature bits a test may negotiate.
const (
	FCsum          = 1 << 0
	FMTU           = 1 << 3
	FHostTSO4      = 1 << 11
	FHostTSO6      = 1 << 12
	FHostECN       = 1 << 13
	FMrgRxbuf      = 1 << 15
	FGuestAnnounce = 1 << 21
	FMQ            = 1 << 22
	FNotifyOnEmpty = 1 << 24
	FLogAll        = 1 << 26
	FIndirectDesc  = 1 << 28
	FEventIdx      = 1 << 29
	FProtocol      = 1 << 30
	FVersion1      = 1 << 32

	PMQ       = 1 << 0
	PLogShmFD = 1 << 1
	PRARP     = 1 << 2
	PReplyAck = 1 << 3
	PMTU      = 1 << 4
	PMemSlots = 1 << 15
)

// FrontEnd is the control side of a vhost-user connection.
type FrontEnd struct {
	Conn     *net.UnixConn
	ReplyAck bool // REPLY_ACK negotiated: every SET request asks for and checks a status
	Protocol bool // PROTOCOL_FEATURES acked: rings must be enabled explicitly
	buf      [4096 + 12]byte
}

// Pair returns a front end and the back end's end of a connected socketpair, the latter
// for vhostuser.Server.ServeConn.
func Pair() (*FrontEnd, *net.UnixConn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	var conns [2]*net.UnixConn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "vhosttest-pair")
		c, err := net.FileConn(f) // a duplicate: f is closed either way
		f.Close()
		if err != nil {
			if i == 0 {
				unix.Close(fds[1])
			} else {
				conns[0].Close()
			}
			return nil, nil, err
		}
		conns[i] = c.(*net.UnixConn)
	}
	return &FrontEnd{Conn: conns[0]}, conns[1], nil
}

// Dial connects a front end to a back end listening at path.
func Dial(path string) (*FrontEnd, error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	return &FrontEnd{Conn: c}, nil
}

// Close closes the control connection.
func (f *FrontEnd) Close() error { return f.Conn.Close() }

// Send writes one message with the given header flags, body and fds, verbatim, so tests
// can send malformed ones.
func (f *FrontEnd) Send(req, flags uint32, body []byte, fds ...int) error {
	b := f.buf[:]
	if 12+len(body) > len(b) {
		b = make([]byte, 12+len(body))
	}
	b = b[:12+len(body)]
	binary.NativeEndian.PutUint32(b[0:], req)
	binary.NativeEndian.PutUint32(b[4:], flags)
	binary.NativeEndian.PutUint32(b[8:], uint32(len(body)))
	copy(b[12:], body)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	_, _, err := f.Conn.WriteMsgUnix(b, oob, nil)
	return err
}

// Recv reads one reply and checks it answers req.
func (f *FrontEnd) Recv(req uint32) ([]byte, error) {
	h := f.buf[:12]
	if _, err := readFull(f.Conn, h); err != nil {
		return nil, err
	}
	r := binary.NativeEndian.Uint32(h[0:])
	flags := binary.NativeEndian.Uint32(h[4:])
	size := binary.NativeEndian.Uint32(h[8:])
	if r != req || flags != Version1|FlagReply || size > 4096 {
		return nil, fmt.Errorf("vhosttest: reply %d flags %#x size %d to request %d", r, flags, size, req)
	}
	body := make([]byte, size)
	_, err := readFull(f.Conn, body)
	return body, err
}

// readFull reads exactly len(b) bytes.
func readFull(c *net.UnixConn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := c.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Get sends a request that has a reply of its own and returns that reply's u64.
func (f *FrontEnd) Get(req uint32, body []byte) (uint64, error) {
	if err := f.Send(req, Version1, body); err != nil {
		return 0, err
	}
	b, err := f.Recv(req)
	if err != nil {
		return 0, err
	}
	if len(b) != 8 {
		return 0, fmt.Errorf("vhosttest: reply to %d is %d bytes", req, len(b))
	}
	return binary.NativeEndian.Uint64(b), nil
}

// Set sends a request without a reply of its own; with REPLY_ACK it asks for the status
// and fails unless it is zero.
func (f *FrontEnd) Set(req uint32, body []byte, fds ...int) error {
	flags := uint32(Version1)
	if f.ReplyAck {
		flags |= NeedReply
	}
	if err := f.Send(req, flags, body, fds...); err != nil {
		return err
	}
	if !f.ReplyAck {
		return nil
	}
	b, err := f.Recv(req)
	if err != nil {
		return err
	}
	if len(b) != 8 || binary.NativeEndian.Uint64(b) != 0 {
		return fmt.Errorf("vhosttest: request %d refused (%x)", req, b)
	}
	return nil
}

// U64 encodes a u64 body.
func U64(v uint64) []byte { return binary.NativeEndian.AppendUint64(nil, v) }

// State encodes a vring state body (index, num).
func State(index, num uint32) []byte {
	b := binary.NativeEndian.AppendUint32(nil, index)
	return binary.NativeEndian.AppendUint32(b, num)
}

// Negotiate runs the usual opening: SET_OWNER, GET_FEATURES, GET/SET_PROTOCOL_FEATURES and
// SET_FEATURES with want & offered. It returns the offered features.
func (f *FrontEnd) Negotiate(want, wantProto uint64) (uint64, error) {
	if err := f.Set(SetOwner, nil); err != nil {
		return 0, err
	}
	offered, err := f.Get(GetFeatures, nil)
	if err != nil {
		return 0, err
	}
	if offered&want&FProtocol != 0 {
		proto, err := f.Get(GetProtocolFeatures, nil)
		if err != nil {
			return 0, err
		}
		if err := f.Set(SetProtocolFeatures, U64(proto&wantProto)); err != nil {
			return 0, err
		}
		f.ReplyAck = proto&wantProto&PReplyAck != 0
	}
	if err := f.Set(SetFeatures, U64(offered&want)); err != nil {
		return 0, err
	}
	f.Protocol = offered&want&FProtocol != 0
	return offered, nil
}

// SetMemTable describes m to the back end, one memfd fd per region.
func (f *FrontEnd) SetMemTable(m *Memory) error {
	b := binary.NativeEndian.AppendUint32(nil, uint32(len(m.Regions)))
	b = binary.NativeEndian.AppendUint32(b, 0)
	fds := make([]int, len(m.Regions))
	for i, r := range m.Regions {
		for _, v := range []uint64{r.GPA, r.Size, r.UserAddr, r.Offset} {
			b = binary.NativeEndian.AppendUint64(b, v)
		}
		fds[i] = m.FD
	}
	return f.Set(SetMemTable, b, fds...)
}

// regionBody encodes the body of ADD_MEM_REG / REM_MEM_REG for r.
func regionBody(r Region) []byte {
	b := binary.NativeEndian.AppendUint64(nil, 0)
	for _, v := range []uint64{r.GPA, r.Size, r.UserAddr, r.Offset} {
		b = binary.NativeEndian.AppendUint64(b, v)
	}
	return b
}

// AddMemReg adds one region of m (CONFIGURE_MEM_SLOTS).
func (f *FrontEnd) AddMemReg(m *Memory, r Region) error {
	return f.Set(AddMemReg, regionBody(r), m.FD)
}

// RemMemReg removes one region, sending its fd along as QEMU does.
func (f *FrontEnd) RemMemReg(m *Memory, r Region) error {
	return f.Set(RemMemReg, regionBody(r), m.FD)
}

// StartQueue configures vring index from q and starts it the way QEMU does: NUM, BASE,
// ADDR, KICK, CALL, and ENABLE when PROTOCOL_FEATURES was acked.
func (f *FrontEnd) StartQueue(index uint32, q *Virtqueue, base uint16) error {
	if err := f.Set(SetVringNum, State(index, uint32(q.Num))); err != nil {
		return err
	}
	if err := f.Set(SetVringBase, State(index, uint32(base))); err != nil {
		return err
	}
	if err := f.Set(SetVringAddr, vringAddr(index, q, false)); err != nil {
		return err
	}
	if err := f.Set(SetVringKick, U64(uint64(index)), q.Kick); err != nil {
		return err
	}
	if err := f.Set(SetVringCall, U64(uint64(index)), q.Call); err != nil {
		return err
	}
	if f.Protocol {
		return f.Set(SetVringEnable, State(index, 1))
	}
	return nil
}

// vringAddr encodes SET_VRING_ADDR for q; with log, the LOG flag and the used ring's
// guest-physical address as its log address, as QEMU sends them while migrating.
func vringAddr(index uint32, q *Virtqueue, log bool) []byte {
	flags, logAddr := uint32(0), uint64(0)
	if log {
		flags, logAddr = 1, q.Used
	}
	a := binary.NativeEndian.AppendUint32(nil, index)
	a = binary.NativeEndian.AppendUint32(a, flags)
	for _, v := range []uint64{q.Mem.UserAddr(q.Desc), q.Mem.UserAddr(q.Used), q.Mem.UserAddr(q.Avail), logAddr} {
		a = binary.NativeEndian.AppendUint64(a, v)
	}
	return a
}

// SetVringLog re-sends SET_VRING_ADDR for a running vring with the LOG flag on or off.
func (f *FrontEnd) SetVringLog(index uint32, q *Virtqueue, on bool) error {
	return f.Set(SetVringAddr, vringAddr(index, q, on))
}

// SetLogBase shares a dirty log of size bytes at offset in fd (LOG_SHMFD) and waits for
// the back end's empty reply, as QEMU does.
func (f *FrontEnd) SetLogBase(fd int, size, offset uint64) error {
	body := binary.NativeEndian.AppendUint64(nil, size)
	body = binary.NativeEndian.AppendUint64(body, offset)
	if err := f.Send(SetLogBase, Version1, body, fd); err != nil {
		return err
	}
	b, err := f.Recv(SetLogBase)
	if err == nil && len(b) != 0 {
		err = fmt.Errorf("vhosttest: SET_LOG_BASE reply of %d bytes", len(b))
	}
	return err
}

// GetVringBase stops vring index and returns its next avail index.
func (f *FrontEnd) GetVringBase(index uint32) (uint32, error) {
	if err := f.Send(GetVringBase, Version1, State(index, 0)); err != nil {
		return 0, err
	}
	b, err := f.Recv(GetVringBase)
	if err != nil {
		return 0, err
	}
	if len(b) != 8 || binary.NativeEndian.Uint32(b) != index {
		return 0, errors.New("vhosttest: bad GET_VRING_BASE reply")
	}
	return binary.NativeEndian.Uint32(b[4:]), nil
}
