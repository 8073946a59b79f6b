package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// request is a vhost-user front-end request code.
type request uint32

// The requests of docs/interop/vhost-user.rst that a net back end meets.
const (
	reqGetFeatures         request = 1
	reqSetFeatures         request = 2
	reqSetOwner            request = 3
	reqResetOwner          request = 4
	reqSetMemTable         request = 5
	reqSetLogBase          request = 6
	reqSetLogFD            request = 7
	reqSetVringNum         request = 8
	reqSetVringAddr        request = 9
	reqSetVringBase        request = 10
	reqGetVringBase        request = 11
	reqSetVringKick        request = 12
	reqSetVringCall        request = 13
	reqSetVringErr         request = 14
	reqGetProtocolFeatures request = 15
	reqSetProtocolFeatures request = 16
	reqGetQueueNum         request = 17
	reqSetVringEnable      request = 18
	reqSendRARP            request = 19
	reqNetSetMTU           request = 20
	reqGetMaxMemSlots      request = 36
	reqAddMemReg           request = 37
	reqRemMemReg           request = 38
	reqMax                 request = 41 // one past the highest code the table may index
)

var requestNames = [...]string{
	reqGetFeatures:         "GET_FEATURES",
	reqSetFeatures:         "SET_FEATURES",
	reqSetOwner:            "SET_OWNER",
	reqResetOwner:          "RESET_OWNER",
	reqSetMemTable:         "SET_MEM_TABLE",
	reqSetLogBase:          "SET_LOG_BASE",
	reqSetLogFD:            "SET_LOG_FD",
	reqSetVringNum:         "SET_VRING_NUM",
	reqSetVringAddr:        "SET_VRING_ADDR",
	reqSetVringBase:        "SET_VRING_BASE",
	reqGetVringBase:        "GET_VRING_BASE",
	reqSetVringKick:        "SET_VRING_KICK",
	reqSetVringCall:        "SET_VRING_CALL",
	reqSetVringErr:         "SET_VRING_ERR",
	reqGetProtocolFeatures: "GET_PROTOCOL_FEATURES",
	reqSetProtocolFeatures: "SET_PROTOCOL_FEATURES",
	reqGetQueueNum:         "GET_QUEUE_NUM",
	reqSetVringEnable:      "SET_VRING_ENABLE",
	reqSendRARP:            "SEND_RARP",
	reqNetSetMTU:           "NET_SET_MTU",
	reqGetMaxMemSlots:      "GET_MAX_MEM_SLOTS",
	reqAddMemReg:           "ADD_MEM_REG",
	reqRemMemReg:           "REM_MEM_REG",
}

// String names the request for logs; unknown codes print as numbers rather than panicking.
func (r request) String() string {
	if int(r) < len(requestNames) && requestNames[r] != "" {
		return requestNames[r]
	}
	return "request(" + strconv.FormatUint(uint64(r), 10) + ")"
}

// Header layout and limits.
const (
	hdrSize       = 12     // u32 request, u32 flags, u32 size
	flagVersion   = 0x3    // bits 0-1: protocol version
	version1      = 0x1    // the only version there is
	flagReply     = 1 << 2 // set on back-end replies
	flagNeedReply = 1 << 3 // the front end wants a REPLY_ACK status
	maxBody       = 4096   // larger than any request this back end accepts
	maxFDs        = 8      // VHOST_MEMORY_BASELINE_NREGIONS: the most fds one message carries
	maxRegions    = 8      // regions in one SET_MEM_TABLE
	vringIdxMask  = 0xff   // SET_VRING_KICK/CALL/ERR: bits 0-7 are the vring index
	vringNoFD     = 1 << 8 // SET_VRING_KICK/CALL/ERR: no fd attached (polling)
	vringFLog     = 1      // SET_VRING_ADDR flags: log writes to the used ring at its log address
)

// ErrProtocol is wrapped by every error that ends a connection because the front end sent
// a malformed, unknown or impossible message.
var ErrProtocol = errors.New("vhostuser: protocol violation")

// protoErr builds an ErrProtocol-wrapping error naming the request and the defect.
func protoErr(r request, format string, args ...any) error {
	return fmt.Errorf("%w: %v: %s", ErrProtocol, r, fmt.Sprintf(format, args...))
}

// header is a decoded message header.
type header struct {
	req   request
	flags uint32
	size  uint32
}

// needReply reports whether the front end asked for a REPLY_ACK status.
func (h header) needReply() bool { return h.flags&flagNeedReply != 0 }

// decodeHeader parses and validates the 12-byte header so that nothing later trusts a
// version, reply bit or size the front end made up.
func decodeHeader(b []byte) (header, error) {
	h := header{
		req:   request(binary.NativeEndian.Uint32(b[0:])),
		flags: binary.NativeEndian.Uint32(b[4:]),
		size:  binary.NativeEndian.Uint32(b[8:]),
	}
	if h.flags&flagVersion != version1 {
		return h, protoErr(h.req, "version %d, want 1", h.flags&flagVersion)
	}
	if h.flags&^uint32(flagVersion|flagNeedReply) != 0 {
		return h, protoErr(h.req, "unexpected flags %#x", h.flags)
	}
	if h.size > maxBody {
		return h, protoErr(h.req, "body of %d bytes exceeds %d", h.size, maxBody)
	}
	return h, nil
}

// putHeader encodes a reply header for req with a body of size bytes.
func putHeader(b []byte, req request, size int) {
	binary.NativeEndian.PutUint32(b[0:], uint32(req))
	binary.NativeEndian.PutUint32(b[4:], version1|flagReply)
	binary.NativeEndian.PutUint32(b[8:], uint32(size))
}

// message is one received request: header, body and the fds that came with it. The
// dispatcher owns the fds and closes whatever a handler did not take.
type message struct {
	hdr  header
	body []byte
	fds  []int
}

// takeFD hands fd i over to the caller, so that closeFDs no longer closes it.
func (m *message) takeFD(i int) int {
	fd := m.fds[i]
	m.fds[i] = -1
	return fd
}

// closeFDs closes every fd not taken, so no path through the dispatcher leaks one.
func (m *message) closeFDs() {
	for i, fd := range m.fds {
		if fd >= 0 {
			unix.Close(fd)
			m.fds[i] = -1
		}
	}
	m.fds = m.fds[:0]
}

// u64 returns the body of a request whose payload is one u64 (size checked by the table).
func (m *message) u64() uint64 { return binary.NativeEndian.Uint64(m.body) }

// vringState is the body of SET_VRING_NUM/BASE/ENABLE and GET_VRING_BASE.
type vringState struct {
	index uint32
	num   uint32
}

// vringState decodes the 8-byte vring state body.
func (m *message) vringState() vringState {
	return vringState{
		index: binary.NativeEndian.Uint32(m.body[0:]),
		num:   binary.NativeEndian.Uint32(m.body[4:]),
	}
}

// putVringState encodes a vring state reply body.
func putVringState(b []byte, s vringState) []byte {
	binary.NativeEndian.PutUint32(b[0:], s.index)
	binary.NativeEndian.PutUint32(b[4:], s.num)
	return b[:8]
}

// vringAddrSize is the body size of SET_VRING_ADDR.
const vringAddrSize = 40

// vringAddr is the body of SET_VRING_ADDR; the addresses are front-end virtual addresses.
type vringAddr struct {
	index uint32
	flags uint32
	desc  uint64
	used  uint64
	avail uint64
	log   uint64
}

// vringAddr decodes the 40-byte SET_VRING_ADDR body.
func (m *message) vringAddr() vringAddr {
	b := m.body
	return vringAddr{
		index: binary.NativeEndian.Uint32(b[0:]),
		flags: binary.NativeEndian.Uint32(b[4:]),
		desc:  binary.NativeEndian.Uint64(b[8:]),
		used:  binary.NativeEndian.Uint64(b[16:]),
		avail: binary.NativeEndian.Uint64(b[24:]),
		log:   binary.NativeEndian.Uint64(b[32:]),
	}
}

// memRegionSize is the size of one region description in SET_MEM_TABLE.
const memRegionSize = 32

// memRegion describes one guest memory region as the front end sends it.
type memRegion struct {
	gpa        uint64 // guest physical address
	size       uint64
	uaddr      uint64 // front-end virtual address (vring addresses use it)
	mmapOffset uint64 // offset of the region in the fd
}

// memRegMsgSize is the body size of ADD_MEM_REG and REM_MEM_REG: u64 padding + one region.
const memRegMsgSize = 8 + memRegionSize

// memReg decodes the single region of an ADD_MEM_REG or REM_MEM_REG body.
func (m *message) memReg() memRegion {
	b := m.body[8:]
	return memRegion{
		gpa:        binary.NativeEndian.Uint64(b[0:]),
		size:       binary.NativeEndian.Uint64(b[8:]),
		uaddr:      binary.NativeEndian.Uint64(b[16:]),
		mmapOffset: binary.NativeEndian.Uint64(b[24:]),
	}
}

// memTableRegions returns the region count declared by a SET_MEM_TABLE body and checks the
// body holds exactly that many descriptions; the fd count is checked against it generically.
func memTableRegions(body []byte) (int, error) {
	n := binary.NativeEndian.Uint32(body[0:])
	if n == 0 || n > maxRegions {
		return 0, protoErr(reqSetMemTable, "%d regions, want 1..%d", n, maxRegions)
	}
	if want := 8 + int(n)*memRegionSize; len(body) != want {
		return 0, protoErr(reqSetMemTable, "body is %d bytes for %d regions, want %d", len(body), n, want)
	}
	return int(n), nil
}

// memRegions decodes the region descriptions of a validated SET_MEM_TABLE body into dst.
func (m *message) memRegions(dst []memRegion) []memRegion {
	n := int(binary.NativeEndian.Uint32(m.body[0:]))
	dst = dst[:0]
	for i := range n {
		b := m.body[8+i*memRegionSize:]
		dst = append(dst, memRegion{
			gpa:        binary.NativeEndian.Uint64(b[0:]),
			size:       binary.NativeEndian.Uint64(b[8:]),
			uaddr:      binary.NativeEndian.Uint64(b[16:]),
			mmapOffset: binary.NativeEndian.Uint64(b[24:]),
		})
	}
	return dst
}
