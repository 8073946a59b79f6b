package qmp

import (
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"testing"
)

// fakeQEMU is a QMP server on a unix socket in t.TempDir(): it greets,
// records every command and lets the test script each answer. It serves
// one connection at a time, as QEMU does.
type fakeQEMU struct {
	t    *testing.T
	path string
	ln   net.Listener
	// handle answers one command; nil answers every command with {}. The
	// default qmp_capabilities answer is skipped when caps is set.
	handle func(s *fakeSession, req fakeRequest)
	// caps, if set, answers qmp_capabilities instead of the default {}.
	caps func(s *fakeSession, req fakeRequest)
	wg   sync.WaitGroup

	mu   sync.Mutex    // guards cmds and sess
	cmds []fakeRequest // every command received, in order
	sess *fakeSession  // the connection being served
}

// fakeRequest is a command as the fake server received it.
type fakeRequest struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments"`
	ID        json.RawMessage `json:"id"`
}

// fakeSession writes to one client connection; safe for concurrent use.
type fakeSession struct {
	t    *testing.T
	conn net.Conn
	mu   sync.Mutex // serialises writes
}

// newFakeQEMU listens and serves until the test ends.
func newFakeQEMU(t *testing.T, handle func(s *fakeSession, req fakeRequest)) *fakeQEMU {
	t.Helper()
	f := &fakeQEMU{t: t, path: filepath.Join(t.TempDir(), "qmp.sock"), handle: handle}
	ln, err := net.Listen("unix", f.path)
	if err != nil {
		t.Fatal(err)
	}
	f.ln = ln
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(f.close)
	return f
}

// accept serves connections one after the other until the listener closes.
func (f *fakeQEMU) accept() {
	defer f.wg.Done()
	for {
		conn, err := f.ln.Accept()
		if err != nil {
			return
		}
		s := &fakeSession{t: f.t, conn: conn}
		f.mu.Lock()
		f.sess = s
		f.mu.Unlock()
		f.serve(s)
	}
}

// serve greets and answers commands until the client goes.
func (f *fakeQEMU) serve(s *fakeSession) {
	defer s.conn.Close()
	s.send(map[string]any{"QMP": map[string]any{
		"version":      map[string]any{"qemu": map[string]int{"major": 7, "minor": 2, "micro": 22}, "package": "fake"},
		"capabilities": []string{"oob"},
	}})
	dec := json.NewDecoder(s.conn)
	for {
		var req fakeRequest
		if err := dec.Decode(&req); err != nil {
			return
		}
		f.mu.Lock()
		f.cmds = append(f.cmds, req)
		f.mu.Unlock()
		switch {
		case req.Execute == "qmp_capabilities" && f.caps != nil:
			f.caps(s, req)
		case req.Execute == "qmp_capabilities" || f.handle == nil:
			s.reply(req, struct{}{})
		default:
			f.handle(s, req)
		}
	}
}

// close stops listening, ends the connection and waits for the server.
func (f *fakeQEMU) close() {
	f.ln.Close()
	f.mu.Lock()
	if f.sess != nil {
		f.sess.conn.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// commands lists the names of the commands received so far, in order.
func (f *fakeQEMU) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var names []string
	for _, c := range f.cmds {
		names = append(names, c.Execute)
	}
	return names
}

// request returns the i-th command received.
func (f *fakeQEMU) request(i int) fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cmds[i]
}

// send writes one JSON message the way QEMU does (a line ending in CRLF).
func (s *fakeSession) send(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		s.t.Errorf("fake QEMU: %v", err)
		return
	}
	s.write(append(b, '\r', '\n'))
}

// write puts raw bytes on the socket; errors mean the client went away.
func (s *fakeSession) write(b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.conn.Write(b); err != nil && !errors.Is(err, net.ErrClosed) {
		s.t.Logf("fake QEMU: write: %v", err)
	}
}

// reply answers req with ret, echoing its id as QEMU does.
func (s *fakeSession) reply(req fakeRequest, ret any) {
	s.send(withID(map[string]any{"return": ret}, req))
}

// fail answers req with a QMP error.
func (s *fakeSession) fail(req fakeRequest, class, desc string) {
	s.send(withID(map[string]any{"error": map[string]string{"class": class, "desc": desc}}, req))
}

// event sends an asynchronous event.
func (s *fakeSession) event(name string, data any) {
	s.send(map[string]any{
		"event":     name,
		"data":      data,
		"timestamp": map[string]int64{"seconds": 1700000000, "microseconds": 1},
	})
}

// withID adds req's id, if it had one, to a reply.
func withID(m map[string]any, req fakeRequest) map[string]any {
	if len(req.ID) > 0 {
		m["id"] = req.ID
	}
	return m
}
