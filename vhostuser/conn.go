package vhostuser

import (
	"errors"
	"fmt"
	"io"
	"net"

	"golang.org/x/sys/unix"
)

// transport moves message bytes and SCM_RIGHTS fds over the control socket; an interface so
// the fuzz target can drive the decoder and the handlers from a byte slice.
type transport interface {
	// recv reads up to len(p) bytes and appends the fds that came with them to *fds, even
	// when it also returns an error, so the caller can close them.
	recv(p []byte, fds *[]int) (int, error)
	// send writes all of p.
	send(p []byte) error
	// close ends the connection and wakes a blocked recv.
	close() error
}

// unixTransport is a transport over a connected AF_UNIX stream socket.
type unixTransport struct {
	c   *net.UnixConn
	oob []byte
}

// newUnixTransport wraps c with a control buffer large enough for maxFDs descriptors.
func newUnixTransport(c *net.UnixConn) *unixTransport {
	// Room for more than maxFDs so an over-full message is seen (and refused) rather than
	// truncated by the kernel.
	return &unixTransport{c: c, oob: make([]byte, unix.CmsgSpace(4*(maxFDs+8)))}
}

// recv reads bytes and fds; Go's ReadMsgUnix sets MSG_CMSG_CLOEXEC on Linux, so the fds do
// not leak into children.
func (t *unixTransport) recv(p []byte, fds *[]int) (int, error) {
	n, oobn, flags, _, err := t.c.ReadMsgUnix(p, t.oob)
	if oobn > 0 {
		if perr := parseRights(t.oob[:oobn], fds); perr != nil && err == nil {
			err = perr
		}
	}
	if err == nil && flags&unix.MSG_CTRUNC != 0 {
		err = errors.New("vhostuser: control message truncated (too many fds)")
	}
	if err == nil && n == 0 && len(p) > 0 {
		err = io.EOF
	}
	return n, err
}

// parseRights appends every SCM_RIGHTS fd in oob to *fds and ignores other control messages.
func parseRights(oob []byte, fds *[]int) error {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return fmt.Errorf("vhostuser: bad control message: %w", err)
	}
	for i := range msgs {
		if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
			continue
		}
		rights, err := unix.ParseUnixRights(&msgs[i])
		*fds = append(*fds, rights...)
		if err != nil {
			return fmt.Errorf("vhostuser: bad SCM_RIGHTS: %w", err)
		}
	}
	return nil
}

// send writes a whole reply; replies never carry fds in this back end.
func (t *unixTransport) send(p []byte) error {
	_, err := t.c.Write(p)
	return err
}

// close closes the socket, which also wakes a recv blocked in the netpoller.
func (t *unixTransport) close() error { return t.c.Close() }

// msgReader reads whole messages from a transport into buffers it reuses.
type msgReader struct {
	t    transport
	hdr  [hdrSize]byte
	body [maxBody]byte
	fds  []int
}

// readFull fills p from the transport, collecting fds, and reports a clean EOF only when
// nothing at all was read.
func (r *msgReader) readFull(p []byte) (int, error) {
	got := 0
	for got < len(p) {
		n, err := r.t.recv(p[got:], &r.fds)
		got += n
		if err != nil {
			if errors.Is(err, io.EOF) && got > 0 {
				err = io.ErrUnexpectedEOF
			}
			return got, err
		}
	}
	return got, nil
}

// read returns the next message; on any error every fd received so far is already closed.
// The returned body aliases the reader's buffer and is valid until the next read.
func (r *msgReader) read() (*message, error) {
	r.fds = r.fds[:0]
	m := &message{}
	fail := func(err error) (*message, error) {
		m.fds = r.fds
		m.closeFDs()
		return nil, err
	}
	if _, err := r.readFull(r.hdr[:]); err != nil {
		return fail(err)
	}
	h, err := decodeHeader(r.hdr[:])
	if err != nil {
		return fail(err)
	}
	m.hdr = h
	if _, err := r.readFull(r.body[:h.size]); err != nil {
		return fail(err)
	}
	if len(r.fds) > maxFDs {
		return fail(protoErr(h.req, "%d fds, at most %d", len(r.fds), maxFDs))
	}
	m.body = r.body[:h.size]
	m.fds = r.fds
	return m, nil
}
