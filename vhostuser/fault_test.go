package vhostuser

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/vhostuser/vhosttest"
	"golang.org/x/sys/unix"
)

// victimEnv names the scenario TestMemoryFaultVictim plays in a child process.
const victimEnv = "VHOSTUSER_FAULT_VICTIM"

// TestMemoryFault has a front end shrink its guest memory (ftruncate of the memfd to 0)
// under a served connection while a second server in the same process carries traffic:
// with the ring idle and then touched, while frames flow both ways, and before a ring
// start (the control goroutine touches used->idx), and the dirty log's memfd instead of
// the guest memory's while logging for migration. Each scenario runs in a child process,
// since a fault that kills the process would take this test binary with it: the child
// must pass (see TestMemoryFaultVictim for what it checks).
func TestMemoryFault(t *testing.T) {
	for _, sc := range []string{"idle", "flowing", "control", "dirtylog"} {
		t.Run(sc, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestMemoryFaultVictim$", "-test.v", "-test.count=1", "-test.timeout=120s")
			cmd.Env = append(os.Environ(), victimEnv+"="+sc, "GORACE=atexit_sleep_ms=0") // -race: no 1 s pause at exit
			out, err := cmd.CombinedOutput()
			if err != nil || !bytes.Contains(out, []byte("--- PASS: TestMemoryFaultVictim")) {
				t.Fatalf("victim process: %v\n%s", err, lastLines(out, 40))
			}
			for _, l := range strings.Split(string(out), "\n") {
				if strings.Contains(l, "fault_test.go") {
					t.Log(strings.TrimSpace(l))
				}
			}
		})
	}
}

// lastLines returns the last n lines of b.
func lastLines(b []byte, n int) string {
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(ls[max(0, len(ls)-n):], "\n")
}

// TestMemoryFaultVictim is the child of TestMemoryFault. The victim connection must end,
// its fault counted once (Stats.MemoryFaults, not as a protocol error or ring violation)
// and logged once, its workers must return errors wrapping net.ErrClosed (ErrMemoryFault
// for a worker that faulted), its mapping must be gone; the bystander must keep moving
// frames and lose none (in = out, in order); fds and goroutines come back. The connection
// can only end if the recovered fault released the vring lock it was taken under: the
// teardown takes every vring lock.
func TestMemoryFaultVictim(t *testing.T) {
	sc := os.Getenv(victimEnv)
	if sc == "" {
		t.Skip("run by TestMemoryFault in a child process")
	}
	checkNoLeaks(t, openFDs(t), runtime.NumGoroutine())
	by := newFlowPort(t, testLogger())
	by.run()
	by.waitMoved(t, 1000)

	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	var srv *Server
	var fe *vhosttest.FrontEnd
	var ended time.Duration
	movedAtFault := by.backendRead.Load()
	switch sc {
	case "idle", "flowing":
		v := newFlowPort(t, log)
		srv, fe = v.srv, v.g.FE
		v.run()
		v.waitMoved(t, 2000)
		if sc == "idle" {
			v.quiesce(t)
		}
		maps := guestMappings(t)
		movedAtFault = by.backendRead.Load()
		truncated := truncate(t, v.g.Mem.FD)
		if sc == "idle" {
			// The next access after the truncation: a frame for the guest.
			if err := v.q.WriteFrames([][]byte{make([]byte, 64)}); !errors.Is(err, ErrMemoryFault) || !errors.Is(err, net.ErrClosed) {
				t.Fatalf("WriteFrames after the truncation: %v, want ErrMemoryFault and net.ErrClosed", err)
			}
		}
		// A live guest kicks: only the eventfds, its memory is gone. (Not KickNow, whose
		// scratch buffer the guest goroutine may be using.)
		kick(t, v.g.Pairs[0].TX.Kick)
		kick(t, v.g.Pairs[0].RX.Kick)
		v.checkWorkersEnded(t, sc == "flowing")
		waitFault(t, srv)
		ended = time.Since(truncated)
		if got := guestMappings(t); got != maps-1 {
			t.Errorf("guest mappings %d after the fault, want %d (the back end's unmapped)", got, maps-1)
		}
	case "control":
		r := newRig(t, rigOpts{noStart: true, log: log})
		srv, fe = r.srv, r.fe
		truncated := truncate(t, r.mem.FD)
		if err := r.fe.StartQueue(0, r.rx, 0); err == nil {
			t.Fatal("ring started on truncated memory")
		}
		waitFault(t, srv)
		ended = time.Since(truncated)
	case "dirtylog":
		r := newRig(t, rigOpts{proto: allProto | vhosttest.PLogShmFD, log: log})
		srv, fe = r.srv, r.fe
		l := newTestLog(t, logSizeFor(r.mem.Base+uint64(len(r.mem.Bytes))))
		if err := r.fe.SetLogBase(l.fd, l.size, l.off); err != nil {
			t.Fatal(err)
		}
		setLogAll(t, r, true)
		r.rxBuffers(4, 2048)
		r.rx.Publish()
		truncated := truncate(t, l.fd)
		if err := r.q.WriteFrames([][]byte{frame(100, 1)}); !errors.Is(err, ErrMemoryFault) {
			t.Fatalf("WriteFrames with the dirty log truncated: %v, want ErrMemoryFault", err)
		}
		waitFault(t, srv)
		ended = time.Since(truncated)
	}
	by.waitMoved(t, movedAtFault+1000)
	st := srv.Stats()
	if st.MemoryFaults != 1 || st.ProtocolErrors != 0 || st.RingViolations != 0 || st.Connections != 1 {
		t.Errorf("victim stats: faults %d protocol errors %d violations %d connections %d, want 1 0 0 1",
			st.MemoryFaults, st.ProtocolErrors, st.RingViolations, st.Connections)
	}
	// ServeConn logs after it counts (and a worker's fault hangs up before both).
	waitFor(t, "the fault's log line", func() bool { return strings.Contains(logs.String(), "guest memory fault") })
	if n := strings.Count(logs.String(), "guest memory fault"); n != 1 {
		t.Errorf("fault logged %d times, want once:\n%s", n, logs.String())
	}
	fe.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := fe.Conn.Read(make([]byte, 64)); err == nil || os.IsTimeout(err) {
		t.Errorf("front end still connected after the fault: %v", err)
	}
	moved := by.stop(t)
	t.Logf("%s: connection ended %v after the truncation; victim faults=%d, logged: %s; bystander moved %d frames each way, 0 lost, in order",
		sc, ended.Round(time.Microsecond), st.MemoryFaults, faultLine(logs.String()), moved)
}

// flowPort is a server with a vhosttest guest and a back-end worker per direction, each
// side numbering its frames and checking the other's arrive in order.
type flowPort struct {
	srv    *Server
	served chan error
	g      *vhosttest.Guest
	q      *QueuePair

	guestSent, backendRead  atomic.Int64 // guest → back end
	backendWrote, guestRecv atomic.Int64 // back end → guest
	outOfOrder              atomic.Int64
	stopSend, stopWrite     atomic.Bool
	stopGuest               atomic.Bool
	readErr, writeErr       chan error
	guestEnd                chan any // nil, or the fault that ended the guest
}

// newFlowPort serves a guest with one queue pair over a socketpair, logging to log.
func newFlowPort(t *testing.T, log *slog.Logger) *flowPort {
	t.Helper()
	fe, conn, err := vhosttest.Pair()
	if err != nil {
		t.Fatal(err)
	}
	h := newRecorder()
	p := &flowPort{served: make(chan error, 1), readErr: make(chan error, 1),
		writeErr: make(chan error, 1), guestEnd: make(chan any, 1)}
	if p.srv, err = New(Config{MTU: 1500, Logger: log}, h); err != nil {
		t.Fatal(err)
	}
	go func() { p.served <- p.srv.ServeConn(conn) }()
	if p.g, err = vhosttest.NewGuest(fe, vhosttest.GuestOptions{}); err != nil {
		t.Fatal(err)
	}
	p.q = h.waitStarted(t)
	t.Cleanup(func() {
		p.g.FE.Close()
		p.srv.Close()
		<-p.served
		p.g.Close()
	})
	return p
}

// run starts the guest and both back-end workers.
func (p *flowPort) run() {
	go p.guest()
	go p.read()
	go p.write()
}

// guest sends numbered frames until stopSend and receives until stopGuest. Its memory may
// vanish under it: a fault ends it, reported on guestEnd.
func (p *flowPort) guest() {
	defer func() { p.guestEnd <- recover() }()
	debug.SetPanicOnFault(true)
	qp := p.g.Pairs[0]
	var seq, next uint64
	fill := func(f []byte) int {
		binary.LittleEndian.PutUint64(f, seq)
		seq++
		return 64
	}
	check := func(f []byte) {
		if binary.LittleEndian.Uint64(f) != next {
			p.outOfOrder.Add(1)
		}
		next++
	}
	for !p.stopGuest.Load() {
		k := 0
		if !p.stopSend.Load() {
			k = qp.Send(16, fill)
			p.guestSent.Add(int64(k))
		}
		r := qp.Receive(check)
		p.guestRecv.Add(int64(r))
		if k == 0 && r == 0 {
			qp.WaitRX(time.Millisecond)
		}
	}
}

// read is the back end's guest-TX worker.
func (p *flowPort) read() {
	bufs, sizes := make([][]byte, 64), make([]int, 64)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	var next uint64
	for {
		n, err := p.q.ReadFrames(bufs, sizes, 0)
		if err != nil {
			p.readErr <- err
			return
		}
		for _, b := range bufs[:n] {
			if binary.LittleEndian.Uint64(b) != next {
				p.outOfOrder.Add(1)
			}
			next++
		}
		p.backendRead.Add(int64(n))
	}
}

// write is the back end's guest-RX worker: batches of 16 numbered frames until stopWrite.
func (p *flowPort) write() {
	frames := make([][]byte, 16)
	for i := range frames {
		frames[i] = make([]byte, 128)
	}
	var seq uint64
	for !p.stopWrite.Load() {
		for _, f := range frames {
			binary.LittleEndian.PutUint64(f, seq)
			seq++
		}
		if err := p.q.WriteFrames(frames); err != nil {
			p.writeErr <- err
			return
		}
		p.backendWrote.Add(int64(len(frames)))
	}
	p.writeErr <- nil
}

// waitMoved waits until at least n frames went each way.
func (p *flowPort) waitMoved(t *testing.T, n int64) {
	t.Helper()
	waitFor(t, "frames to move", func() bool { return p.backendRead.Load() >= n && p.guestRecv.Load() >= n })
}

// quiesce stops traffic without stopping the pair: the guest stops sending and, once
// everything it sent was read and everything written was received, stops; the writer stops.
func (p *flowPort) quiesce(t *testing.T) {
	t.Helper()
	p.stopSend.Store(true)
	waitFor(t, "guest frames read", func() bool { return p.backendRead.Load() == p.guestSent.Load() })
	p.stopWrite.Store(true)
	if err := <-p.writeErr; err != nil {
		t.Fatalf("WriteFrames: %v", err)
	}
	waitFor(t, "frames received", func() bool { return p.guestRecv.Load() == p.backendWrote.Load() })
	p.stopGuest.Store(true)
	if r := <-p.guestEnd; r != nil {
		t.Fatalf("guest ended by %v", r)
	}
}

// stop quiesces the port, closes its pair and checks conservation: every frame arrived,
// in order. It returns the frames moved each way (the smaller count).
func (p *flowPort) stop(t *testing.T) int64 {
	t.Helper()
	p.quiesce(t)
	p.q.Close()
	if err := <-p.readErr; !errors.Is(err, net.ErrClosed) {
		t.Errorf("ReadFrames after Close: %v", err)
	}
	sent, read := p.guestSent.Load(), p.backendRead.Load()
	wrote, recv := p.backendWrote.Load(), p.guestRecv.Load()
	st := p.srv.Stats()
	if sent != read || wrote != recv || p.outOfOrder.Load() != 0 || st.TXFrames != uint64(read) || st.RXFrames != uint64(wrote) {
		t.Errorf("bystander: guest sent %d, read %d (stats %d); written %d (stats %d), guest received %d; %d out of order",
			sent, read, st.TXFrames, wrote, st.RXFrames, recv, p.outOfOrder.Load())
	}
	return min(read, recv)
}

// checkWorkersEnded waits for the back-end workers of a faulted port still running to
// return errors wrapping net.ErrClosed: the reader, and while flowing also the writer, of
// which one at least must report ErrMemoryFault; the guest, which faulted too, must end.
func (p *flowPort) checkWorkersEnded(t *testing.T, flowing bool) {
	t.Helper()
	workers := []chan error{p.readErr}
	if flowing {
		workers = append(workers, p.writeErr)
	}
	faults := 0
	for _, ch := range workers {
		select {
		case err := <-ch:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("worker ended with %v, want net.ErrClosed", err)
			}
			if errors.Is(err, ErrMemoryFault) {
				faults++
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a worker of the faulted port did not return")
		}
	}
	if !flowing {
		return
	}
	if faults == 0 {
		t.Error("no worker reported ErrMemoryFault")
	}
	select {
	case r := <-p.guestEnd:
		if _, ok := faultAddr(r); !ok {
			t.Errorf("guest ended by %v, want its own memory fault", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the guest did not end")
	}
}

// truncate shrinks the file fd (guest memory, a dirty log) to nothing, as a hostile front
// end could, and returns when.
func truncate(t *testing.T, fd int) time.Time {
	t.Helper()
	if err := unix.Ftruncate(fd, 0); err != nil {
		t.Fatal(err)
	}
	return time.Now()
}

// kick signals the eventfd fd.
func kick(t *testing.T, fd int) {
	t.Helper()
	if _, err := unix.Write(fd, binary.NativeEndian.AppendUint64(nil, 1)); err != nil {
		t.Fatal(err)
	}
}

// waitFault waits until srv counted the memory fault, i.e. the connection ended.
func waitFault(t *testing.T, srv *Server) {
	t.Helper()
	waitFor(t, "the faulted connection to end", func() bool { return srv.Stats().MemoryFaults > 0 })
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// guestMappings counts this process's mappings of vhosttest guest memory.
func guestMappings(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "vhosttest-guest")
}

// checkNoLeaks, called first, checks after every other cleanup of the test has run that fds
// and goroutines came back to what they were.
func checkNoLeaks(t *testing.T, fds, goroutines int) {
	t.Cleanup(func() {
		waitFor(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= goroutines })
		if n := openFDs(t); n != fds {
			t.Errorf("%d fds open, %d before", n, fds)
		}
	})
}

// faultLine returns the log line that reports the fault.
func faultLine(logs string) string {
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "guest memory fault") {
			_, msg, _ := strings.Cut(l, "msg=")
			return msg
		}
	}
	return "(none)"
}

// lockedBuffer is a log sink safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written.
func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestSealShrinkReported shares guest memory sealed against shrinking and unsealed: the
// server reports how many regions are sealed (Stats.SealedRegions), and the seal really
// stops the front end from shrinking the file.
func TestSealShrinkReported(t *testing.T) {
	for _, sealed := range []bool{false, true} {
		r := newRig(t, rigOpts{noStart: true, sealed: sealed, split: true})
		st := r.srv.Stats()
		want := 0
		if sealed {
			want = 2
		}
		if st.Regions != 2 || st.SealedRegions != want {
			t.Errorf("sealed=%v: regions %d sealed %d, want 2 %d", sealed, st.Regions, st.SealedRegions, want)
		}
		err := unix.Ftruncate(r.mem.FD, 0)
		if sealed != errors.Is(err, unix.EPERM) {
			t.Errorf("sealed=%v: ftruncate to 0: %v", sealed, err)
		}
		r.close()
		if st := r.srv.Stats(); st.Regions != 0 || st.SealedRegions != 0 {
			t.Errorf("sealed=%v: after the connection: regions %d sealed %d", sealed, st.Regions, st.SealedRegions)
		}
	}
}
