package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// dial connects a Client to the fake QEMU; it is closed at the test's end.
func dial(t *testing.T, f *fakeQEMU) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := Dial(ctx, "unix:"+f.path)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// testCtx is a context for one test step, bounded so a bug fails, not hangs.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestDialNegotiates: the greeting is read, qmp_capabilities is the first
// command (with an id), and commands work afterwards.
func TestDialNegotiates(t *testing.T) {
	f := newFakeQEMU(t, statusReply)
	c := dial(t, f)
	if v := c.Version().String(); v != "7.2.22" {
		t.Errorf("version %q, want 7.2.22", v)
	}
	if caps := c.Capabilities(); len(caps) != 1 || caps[0] != "oob" {
		t.Errorf("capabilities %v, want [oob]", caps)
	}
	ret, err := c.Execute(testCtx(t), "query-status", nil)
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ Status string }
	if err := json.Unmarshal(ret, &st); err != nil || st.Status != "running" {
		t.Fatalf("return %s (%v)", ret, err)
	}
	first := f.request(0)
	if first.Execute != "qmp_capabilities" || len(first.ID) == 0 || first.Arguments != nil {
		t.Errorf("first command %+v, want qmp_capabilities with an id and no arguments", first)
	}
	if err := c.Err(); err != nil {
		t.Errorf("Err on a live client: %v", err)
	}
}

// TestDialBarePath: addr may be a path without "unix:".
func TestDialBarePath(t *testing.T) {
	f := newFakeQEMU(t, nil)
	c, err := Dial(testCtx(t), f.path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// TestDialRefusals: no greeting in time, a peer that is not QMP, a refused
// qmp_capabilities, and no socket at all.
func TestDialRefusals(t *testing.T) {
	t.Run("silent", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "q.sock")
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if _, err := Dial(ctx, path); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Dial to a silent server: %v, want DeadlineExceeded", err)
		}
	})
	t.Run("not-qmp", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "q.sock")
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Write([]byte(`{"hello": 1}` + "\n"))
				defer c.Close()
			}
		}()
		if _, err := Dial(testCtx(t), path); err == nil {
			t.Fatal("Dial accepted a peer without a QMP greeting")
		}
	})
	t.Run("capabilities-refused", func(t *testing.T) {
		f := newFakeQEMU(t, nil)
		f.caps = func(s *fakeSession, req fakeRequest) {
			s.fail(req, "CommandNotFound", "Capabilities negotiation is already complete, command ignored")
		}
		_, err := Dial(testCtx(t), f.path)
		var qe *Error
		if !errors.As(err, &qe) || qe.Command != "qmp_capabilities" {
			t.Fatalf("Dial: %v, want *Error from qmp_capabilities", err)
		}
	})
	t.Run("no-socket", func(t *testing.T) {
		if _, err := Dial(testCtx(t), filepath.Join(t.TempDir(), "none")); err == nil {
			t.Fatal("Dial to nothing succeeded")
		}
	})
}

// TestErrorMapping: a QMP error is an *Error with QEMU's class and words,
// naming the command.
func TestErrorMapping(t *testing.T) {
	f := newFakeQEMU(t, func(s *fakeSession, req fakeRequest) {
		s.fail(req, "GenericError", "Duplicate device ID 'net1'")
	})
	c := dial(t, f)
	_, err := c.Execute(testCtx(t), "device_add", map[string]any{"driver": "virtio-net-pci", "id": "net1"})
	var qe *Error
	if !errors.As(err, &qe) {
		t.Fatalf("err %T %v, want *Error", err, err)
	}
	if qe.Class != "GenericError" || qe.Desc != "Duplicate device ID 'net1'" || qe.Command != "device_add" {
		t.Errorf("got %+v", qe)
	}
	if got, want := err.Error(), "qmp device_add: Duplicate device ID 'net1'"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// TestRepliesMatchedByID: replies sent in the reverse order of the
// commands still reach their own callers.
func TestRepliesMatchedByID(t *testing.T) {
	var mu sync.Mutex
	var held []fakeRequest
	f := newFakeQEMU(t, func(s *fakeSession, req fakeRequest) {
		mu.Lock()
		defer mu.Unlock()
		held = append(held, req)
		if len(held) < 3 {
			return
		}
		for i := len(held) - 1; i >= 0; i-- {
			s.reply(held[i], held[i].Execute)
		}
	})
	c := dial(t, f)
	var wg sync.WaitGroup
	for _, cmd := range []string{"cmd-a", "cmd-b", "cmd-c"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ret, err := c.Execute(testCtx(t), cmd, nil)
			if err != nil || string(ret) != `"`+cmd+`"` {
				t.Errorf("%s got %s (%v)", cmd, ret, err)
			}
		}()
	}
	wg.Wait()
}

// TestExecuteContext: a command QEMU does not answer gives up with ctx; its
// late reply is dropped and the next command gets its own.
func TestExecuteContext(t *testing.T) {
	var first fakeRequest
	f := newFakeQEMU(t, func(s *fakeSession, req fakeRequest) {
		if req.Execute == "slow" {
			first = req
			return
		}
		s.reply(first, "late")
		s.reply(req, "mine")
	})
	c := dial(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Execute(ctx, "slow", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow: %v, want DeadlineExceeded", err)
	}
	ret, err := c.Execute(testCtx(t), "fast", nil)
	if err != nil || string(ret) != `"mine"` {
		t.Fatalf("fast got %s (%v)", ret, err)
	}
}

// TestConnectionEnd: when QEMU goes away, a waiting command, a subscription
// and later commands all get an error wrapping ErrClosed.
func TestConnectionEnd(t *testing.T) {
	f := newFakeQEMU(t, func(s *fakeSession, req fakeRequest) { s.conn.Close() })
	c := dial(t, f)
	sub := c.Subscribe("", nil)
	if _, err := c.Execute(testCtx(t), "quit", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("pending command: %v, want ErrClosed", err)
	}
	if _, err := sub.Next(testCtx(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("subscription: %v, want ErrClosed", err)
	}
	<-c.Done()
	if _, err := c.Execute(testCtx(t), "query-status", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("later command: %v, want ErrClosed", err)
	}
	if err := c.Err(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Err: %v", err)
	}
}

// TestSubscription: events are delivered in order from Subscribe on, by
// name and match, and Close ends Next.
func TestSubscription(t *testing.T) {
	f := newFakeQEMU(t, func(s *fakeSession, req fakeRequest) {
		s.event("STOP", nil)
		s.event("DEVICE_DELETED", map[string]string{"device": "other"})
		s.event("DEVICE_DELETED", map[string]string{"device": "net1", "path": "/machine/peripheral/net1"})
		s.reply(req, struct{}{})
	})
	c := dial(t, f)
	all := c.Subscribe("", nil)
	mine := c.Subscribe("DEVICE_DELETED", deviceIs("net1"))
	if _, err := c.Execute(testCtx(t), "go", nil); err != nil {
		t.Fatal(err)
	}
	ev, err := mine.Next(testCtx(t))
	if err != nil || ev.Event != "DEVICE_DELETED" || ev.Timestamp.Seconds != 1700000000 {
		t.Fatalf("mine: %+v %v", ev, err)
	}
	for _, want := range []string{"STOP", "DEVICE_DELETED", "DEVICE_DELETED"} {
		if ev, err := all.Next(testCtx(t)); err != nil || ev.Event != want {
			t.Fatalf("all: %+v %v, want %s", ev, err, want)
		}
	}
	all.Close()
	if _, err := all.Next(testCtx(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := mine.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("empty subscription: %v", err)
	}
}
