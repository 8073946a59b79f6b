package vhostuser

import (
	"encoding/binary"
)

// reqSpec is what the dispatcher checks before a handler runs, and the handler itself.
type reqSpec struct {
	minBody, maxBody int
	// fds returns how many fds the message must carry; it may look at the (size-checked)
	// body, e.g. the region count of SET_MEM_TABLE or the no-fd bit of SET_VRING_KICK.
	fds func(m *message) (int, error)
	// reply is set for requests that answer with a payload of their own; the others get a
	// generic REPLY_ACK status when the front end asks for one.
	reply  bool
	handle func(s *session, m *message) ([]byte, error)
}

// fdsNone is the rule for requests that carry no fd.
func fdsNone(*message) (int, error) { return 0, nil }

// fdsOne is the rule for requests that carry exactly one fd.
func fdsOne(*message) (int, error) { return 1, nil }

// fdsVringFile is the rule of SET_VRING_KICK/CALL/ERR: one fd unless bit 8 says none.
func fdsVringFile(m *message) (int, error) {
	if m.u64()&vringNoFD != 0 {
		return 0, nil
	}
	return 1, nil
}

// fdsZeroOrOne is the rule of REM_MEM_REG: QEMU attaches the region's fd, which is not
// needed, and the spec lets a front end omit it.
func fdsZeroOrOne(m *message) (int, error) { return min(len(m.fds), 1), nil }

// fdsMemTable is the rule of SET_MEM_TABLE: one fd per region the body declares.
func fdsMemTable(m *message) (int, error) { return memTableRegions(m.body) }

// reqTable lists every request this back end accepts; anything else ends the connection.
// Every entry states its fd count, so a message with too many or too few fds is refused
// before any handler runs (DPDK CVE-2022-0669 came from checking that per handler).
var reqTable = [reqMax]reqSpec{
	reqGetFeatures:         {0, 8, fdsNone, true, (*session).getFeatures},
	reqSetFeatures:         {8, 8, fdsNone, false, (*session).setFeatures},
	reqSetOwner:            {0, 0, fdsNone, false, (*session).setOwner},
	reqResetOwner:          {0, 0, fdsNone, false, (*session).resetOwner},
	reqSetMemTable:         {8, 8 + maxRegions*memRegionSize, fdsMemTable, false, (*session).setMemTable},
	reqSetLogBase:          {setLogBaseSize, setLogBaseSize, fdsOne, true, (*session).setLogBase},
	reqSetLogFD:            {0, 8, fdsOne, false, (*session).setLogFD},
	reqSetVringNum:         {8, 8, fdsNone, false, (*session).setVringNum},
	reqSetVringAddr:        {vringAddrSize, vringAddrSize, fdsNone, false, (*session).setVringAddr},
	reqSetVringBase:        {8, 8, fdsNone, false, (*session).setVringBase},
	reqGetVringBase:        {8, 8, fdsNone, true, (*session).getVringBase},
	reqSetVringKick:        {8, 8, fdsVringFile, false, (*session).setVringKick},
	reqSetVringCall:        {8, 8, fdsVringFile, false, (*session).setVringCall},
	reqSetVringErr:         {8, 8, fdsVringFile, false, (*session).setVringErr},
	reqGetProtocolFeatures: {0, 8, fdsNone, true, (*session).getProtocolFeatures},
	reqSetProtocolFeatures: {8, 8, fdsNone, false, (*session).setProtocolFeatures},
	reqGetQueueNum:         {0, 8, fdsNone, true, (*session).getQueueNum},
	reqSetVringEnable:      {8, 8, fdsNone, false, (*session).setVringEnable},
	reqSendRARP:            {8, 8, fdsNone, false, (*session).sendRARP},
	reqNetSetMTU:           {8, 8, fdsNone, false, (*session).netSetMTU},
	reqGetMaxMemSlots:      {0, 8, fdsNone, true, (*session).getMaxMemSlots},
	reqAddMemReg:           {memRegMsgSize, memRegMsgSize, fdsOne, false, (*session).addMemReg},
	reqRemMemReg:           {memRegMsgSize, memRegMsgSize, fdsZeroOrOne, false, (*session).remMemReg},
}

// dispatch validates m against the table, runs its handler and sends the reply or the
// REPLY_ACK status. Every fd of m is closed on return unless a handler took it. An error
// ends the connection.
func (s *session) dispatch(m *message) error {
	defer m.closeFDs()
	defer s.unmapRetired() // after the reply: see swapMem
	req := m.hdr.req
	var spec *reqSpec
	if req < reqMax {
		spec = &reqTable[req]
	}
	if spec == nil || spec.handle == nil {
		return protoErr(req, "unsupported request")
	}
	if len(m.body) < spec.minBody || len(m.body) > spec.maxBody {
		return protoErr(req, "body is %d bytes, want %d..%d", len(m.body), spec.minBody, spec.maxBody)
	}
	want, err := spec.fds(m)
	if err != nil {
		return err
	}
	if len(m.fds) != want {
		return protoErr(req, "carries %d fds, want %d", len(m.fds), want)
	}
	ack := !spec.reply && m.hdr.needReply() && s.protoAcked&protoReplyAck != 0
	reply, herr := s.handle(spec, m)
	switch {
	case spec.reply && herr == nil:
		return s.send(req, reply)
	case ack:
		status := uint64(0)
		if herr != nil {
			status = 1
		}
		if err := s.send(req, binary.NativeEndian.AppendUint64(s.scratch[:0], status)); err != nil && herr == nil {
			herr = err
		}
	}
	return herr
}

// send writes a reply message for req with the given payload.
func (s *session) send(req request, payload []byte) error {
	b := s.out[:hdrSize+len(payload)]
	putHeader(b, req, len(payload))
	copy(b[hdrSize:], payload)
	return s.t.send(b)
}
