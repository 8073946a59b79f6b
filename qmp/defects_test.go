package qmp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// The tests in this file each feed the client one situation that
// github.com/digitalocean/go-qemu's qmp.SocketMonitor gets wrong. They drive
// the client through go-qemu's Monitor method set only (Run, Events,
// Disconnect), so pointing connectMonitor and ignoreEvents at a
// SocketMonitor runs them unchanged against go-qemu: there they fail
// (checked while developing: "bufio.Scanner: token too long", the
// capabilities reply {"return":{}} handed to the next command, and Run
// stalled behind an unread event channel).

// monitorUnderTest is the part of go-qemu's qmp.Monitor the tests use.
type monitorUnderTest interface {
	Run(command []byte) ([]byte, error)
	Disconnect() error
}

// clientMonitor gives a *Client go-qemu's Run and Disconnect, for these
// tests only.
type clientMonitor struct{ c *Client }

// Run sends an encoded command and returns QEMU's whole reply object.
func (m clientMonitor) Run(command []byte) ([]byte, error) {
	var cmd struct {
		Execute   string          `json:"execute"`
		Arguments json.RawMessage `json:"arguments"`
	}
	if err := json.Unmarshal(command, &cmd); err != nil {
		return nil, err
	}
	r := m.c.call(context.Background(), cmd.Execute, cmd.Arguments)
	return r.raw, r.err
}

// Disconnect closes the client.
func (m clientMonitor) Disconnect() error { return m.c.Close() }

// connectMonitor dials the fake QEMU at path and negotiates capabilities.
var connectMonitor = func(path string) (monitorUnderTest, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := Dial(ctx, path)
	return clientMonitor{c}, err
}

// ignoreEvents subscribes to m's events and never reads them.
var ignoreEvents = func(m monitorUnderTest) error {
	m.(clientMonitor).c.Subscribe("", nil)
	return nil
}

// connect is connectMonitor that fails the test and disconnects at its end.
func connect(t *testing.T, f *fakeQEMU) monitorUnderTest {
	t.Helper()
	m, err := connectMonitor(f.path)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { m.Disconnect() })
	return m
}

// runWithin runs cmd on m and fails the test if no reply comes within d.
func runWithin(t *testing.T, m monitorUnderTest, cmd string, d time.Duration) ([]byte, error) {
	t.Helper()
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := m.Run([]byte(fmt.Sprintf(`{"execute":%q}`, cmd)))
		done <- result{out, err}
	}()
	select {
	case r := <-done:
		return r.out, r.err
	case <-time.After(d):
		t.Fatalf("Run(%s) stalled: no result within %v", cmd, d)
		return nil, nil
	}
}

// statusReply answers query-status as a running QEMU does.
func statusReply(s *fakeSession, req fakeRequest) {
	s.reply(req, map[string]any{"status": "running", "singlestep": false, "running": true})
}

// wantRunning checks that a Run result is query-status's own reply.
func wantRunning(t *testing.T, out []byte, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("query-status: %v", err)
	}
	var r struct {
		Return struct {
			Status string `json:"status"`
		} `json:"return"`
	}
	if err := json.Unmarshal(out, &r); err != nil || r.Return.Status != "running" {
		t.Fatalf("query-status got %s (%v): another command's reply", out, err)
	}
}

// bigSchema builds a query-qmp-schema-like return value of about n bytes.
func bigSchema(n int) []map[string]any {
	var entries []map[string]any
	for size := 0; size < n; size += 60 {
		entries = append(entries, map[string]any{
			"name": fmt.Sprintf("%d", len(entries)), "meta-type": "object", "members": []any{},
		})
	}
	return entries
}

// TestDefectReplyOver64KiB: go-qemu reads with a bufio.Scanner whose 64 KiB
// token limit kills the connection on a larger reply; QEMU 7.2's
// query-qmp-schema reply is about 200 KiB.
func TestDefectReplyOver64KiB(t *testing.T) {
	schema := bigSchema(200 << 10)
	f := newFakeQEMU(t, func(s *fakeSession, req fakeRequest) {
		switch req.Execute {
		case "query-qmp-schema":
			s.reply(req, schema)
		default:
			statusReply(s, req)
		}
	})
	m := connect(t, f)
	out, err := runWithin(t, m, "query-qmp-schema", 2*time.Second)
	if err != nil {
		t.Fatalf("query-qmp-schema: %v", err)
	}
	if len(out) < 150<<10 {
		t.Fatalf("reply is %d bytes, want the whole schema", len(out))
	}
	var r struct {
		Return []json.RawMessage `json:"return"`
	}
	if err := json.Unmarshal(out, &r); err != nil || len(r.Return) != len(schema) {
		t.Fatalf("schema: %d entries (%v), want %d", len(r.Return), err, len(schema))
	}
	// The connection still works afterwards.
	out, err = runWithin(t, m, "query-status", 2*time.Second)
	wantRunning(t, out, err)
}

// TestDefectEventBeforeCapabilitiesReply: go-qemu's Connect takes the first
// message after qmp_capabilities for its reply; an event there (QEMU may
// emit one at any time) shifts every later reply by one command.
func TestDefectEventBeforeCapabilitiesReply(t *testing.T) {
	for _, tc := range []struct {
		name  string
		pause time.Duration // between the event and the reply
	}{
		{"separate-writes", 50 * time.Millisecond},
		{"same-write", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeQEMU(t, statusReply)
			f.caps = func(s *fakeSession, req fakeRequest) {
				if tc.pause == 0 {
					var both bytes.Buffer
					both.WriteString(`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESUME"}` + "\r\n")
					r, _ := json.Marshal(withID(map[string]any{"return": struct{}{}}, req))
					both.Write(append(r, '\r', '\n'))
					s.write(both.Bytes())
					return
				}
				s.event("RESUME", nil)
				time.Sleep(tc.pause)
				s.reply(req, struct{}{})
			}
			m := connect(t, f)
			out, err := runWithin(t, m, "query-status", 2*time.Second)
			wantRunning(t, out, err)
			out, err = runWithin(t, m, "query-status", 2*time.Second)
			wantRunning(t, out, err)
		})
	}
}

// TestDefectUndrainedEvents: go-qemu hands events over an unbuffered
// channel from its only reader, so once Events was called, events nobody
// reads block every later command reply.
func TestDefectUndrainedEvents(t *testing.T) {
	f := newFakeQEMU(t, func(s *fakeSession, req fakeRequest) {
		for i := 0; i < 100; i++ {
			s.event("NIC_RX_FILTER_CHANGED", map[string]string{"name": "net0", "path": "/machine/peripheral/net0/virtio-backend"})
		}
		statusReply(s, req)
	})
	m := connect(t, f)
	if err := ignoreEvents(m); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		out, err := runWithin(t, m, "query-status", 2*time.Second)
		wantRunning(t, out, err)
	}
}

// TestUnreadSubscriptionStallsNothing: the same with a Subscription that is
// never read: its queue grows, commands go on.
func TestUnreadSubscriptionStallsNothing(t *testing.T) {
	f := newFakeQEMU(t, func(s *fakeSession, req fakeRequest) {
		for i := 0; i < 1000; i++ {
			s.event("DEVICE_DELETED", map[string]string{"path": "/machine/peripheral-anon/device[0]"})
		}
		statusReply(s, req)
	})
	c := dial(t, f)
	sub := c.Subscribe("DEVICE_DELETED", nil)
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := c.Execute(ctx, "query-status", nil); err != nil {
		t.Fatal(err)
	}
	// Every event was kept for the subscriber.
	for i := 0; i < 1000; i++ {
		if ev, err := sub.Next(ctx); err != nil || !strings.Contains(string(ev.Data), "device[0]") {
			t.Fatalf("event %d: %v %s", i, err, ev.Data)
		}
	}
}
