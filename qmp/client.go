// Package qmp drives a running QEMU over the QEMU Machine Protocol (QMP):
// a small client (Dial, Execute, Subscribe) and the NIC hot-plug built on
// it (Plug, Unplug), for attaching a VM to an l2tpv3-netdev back end
// without a reboot.
//
// The client speaks QMP itself over the unix socket rather than through
// github.com/digitalocean/go-qemu's SocketMonitor, whose defects it avoids:
// replies of any size are read (a json.Decoder, not a 64 KiB bufio.Scanner:
// query-qmp-schema is about 200 KiB on QEMU 7.2); every command carries an
// "id" and its reply is matched by it, so an event that arrives before the
// qmp_capabilities reply, or between any command and its reply, is an event
// and never taken for a reply; and events are queued per subscriber without
// bound, so a subscriber that does not read never stalls a command.
// Command, Event and Version mirror go-qemu's types (Event keeps its data as
// raw JSON). go-qemu itself is not imported: the Go module proxy does not
// serve it.
//
// It imports no sibling package.
package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Client is a negotiated QMP connection (command mode). Its methods are safe
// for concurrent use; commands may be in flight together, each reply goes to
// the command with its id.
type Client struct {
	conn    net.Conn
	version Version
	caps    []string
	done    chan struct{} // closed when the reader has ended and every waiter was told

	writeMu sync.Mutex // serialises writes: one whole command at a time on conn

	mu      sync.Mutex              // guards the fields below
	nextID  uint64                  // the last id given to a command
	pending map[string]chan<- reply // commands sent and not yet answered, by id
	subs    map[*Subscription]struct{}
	closing bool  // Close was called
	err     error // why the connection ended; nil while it runs
}

// reply is one command's outcome as the reader hands it over.
type reply struct {
	raw json.RawMessage // the whole reply object, as QEMU sent it
	ret json.RawMessage // its "return" member
	err error           // *Error from QEMU, or the connection's end
}

// Dial connects to QEMU's QMP socket at addr ("unix:/path" or a bare path;
// QEMU's -qmp unix:PATH,server=on,wait=off), reads the greeting and
// negotiates capabilities. ctx bounds the connection and the handshake only.
// QEMU serves one QMP client per socket at a time: a second Dial waits for
// the first client to go (or for ctx).
func Dial(ctx context.Context, addr string) (*Client, error) {
	path := strings.TrimPrefix(addr, "unix:")
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp: %w", err)
	}
	c := &Client{
		conn:    conn,
		done:    make(chan struct{}),
		pending: make(map[string]chan<- reply),
		subs:    make(map[*Subscription]struct{}),
	}
	dec := json.NewDecoder(conn)
	if err := c.readGreeting(ctx, dec); err != nil {
		conn.Close()
		return nil, err
	}
	// The same decoder goes on reading: bytes it buffered past the
	// greeting are not lost (go-qemu starts a new scanner on the socket).
	go c.read(dec)
	if _, err := c.Execute(ctx, "qmp_capabilities", nil); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// readGreeting reads QEMU's {"QMP": …} banner, giving up when ctx ends.
func (c *Client) readGreeting(ctx context.Context, dec *json.Decoder) error {
	stop := context.AfterFunc(ctx, func() { c.conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	var g struct {
		QMP *struct {
			Version      Version  `json:"version"`
			Capabilities []string `json:"capabilities"`
		} `json:"QMP"`
	}
	if err := dec.Decode(&g); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("qmp: reading the greeting: %w", err)
	}
	if g.QMP == nil {
		return errors.New("qmp: the peer's first message is not a QMP greeting")
	}
	if !stop() {
		// The deadline may have been set after Decode returned.
		return fmt.Errorf("qmp: reading the greeting: %w", ctx.Err())
	}
	c.version, c.caps = g.QMP.Version, g.QMP.Capabilities
	return nil
}

// Version is the QEMU version announced in the greeting.
func (c *Client) Version() Version { return c.version }

// Capabilities are the QMP capabilities QEMU offered in the greeting (e.g.
// "oob"); none is enabled.
func (c *Client) Capabilities() []string { return append([]string(nil), c.caps...) }

// Execute runs a QMP command with args (nil for none; anything that
// encoding/json marshals to an object) and returns its "return" value.
// QEMU's refusal comes back as *Error; the end of the connection as an error
// wrapping ErrClosed. If ctx ends first, Execute returns ctx's error, but
// QEMU may still carry the command out.
func (c *Client) Execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	r := c.call(ctx, command, args)
	return r.ret, r.err
}

// call sends one command and waits for its reply, the connection's end or ctx.
func (c *Client) call(ctx context.Context, command string, args any) reply {
	if raw, ok := args.(json.RawMessage); ok && (len(raw) == 0 || string(raw) == "null") {
		args = nil // no arguments: send none rather than invalid JSON or null
	}
	id, ch, err := c.register()
	if err != nil {
		return reply{err: fmt.Errorf("qmp %s: %w", command, err)}
	}
	msg, err := json.Marshal(request{Execute: command, Arguments: args, ID: id})
	if err != nil {
		c.forget(id)
		return reply{err: fmt.Errorf("qmp %s: encoding arguments: %w", command, err)}
	}
	if err := c.write(ctx, msg); err != nil {
		c.forget(id)
		return reply{err: fmt.Errorf("qmp %s: %w", command, err)}
	}
	select {
	case r := <-ch:
		if e, ok := r.err.(*Error); ok {
			e.Command = command
		} else if r.err != nil {
			r.err = fmt.Errorf("qmp %s: %w", command, r.err)
		}
		return r
	case <-ctx.Done():
		c.forget(id)
		return reply{err: fmt.Errorf("qmp %s: no reply: %w", command, ctx.Err())}
	}
}

// request is a command on the wire; id lets its reply be told from others.
type request struct {
	Execute   string `json:"execute"`
	Arguments any    `json:"arguments,omitempty"`
	ID        string `json:"id"`
}

// register allots a fresh id and the channel its reply will come on.
func (c *Client) register() (string, <-chan reply, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return "", nil, c.err
	}
	c.nextID++
	id := "l2t-" + strconv.FormatUint(c.nextID, 10)
	ch := make(chan reply, 1) // the reader never waits for the caller
	c.pending[id] = ch
	return id, ch, nil
}

// forget drops a command nobody waits for any more; a late reply is ignored.
func (c *Client) forget(id string) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// write sends one command whole; a write cut short (ctx, error) leaves half a
// command on the socket, so it ends the connection.
func (c *Client) write(ctx context.Context, msg []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	stop := context.AfterFunc(ctx, func() { c.conn.SetWriteDeadline(time.Unix(1, 0)) })
	_, err := c.conn.Write(append(msg, '\n'))
	if !stop() {
		c.conn.SetWriteDeadline(time.Time{})
	}
	if err != nil {
		c.conn.Close() // the reader then ends the connection for everyone
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	return nil
}

// Close ends the connection: commands waiting for a reply and subscriptions
// get ErrClosed. It waits for the reader goroutine to finish.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	err := c.conn.Close()
	<-c.done
	return err
}

// Done is closed when the connection has ended (Close, or QEMU went away).
func (c *Client) Done() <-chan struct{} { return c.done }

// Err says why the connection ended (it wraps ErrClosed), or nil while it runs.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// read is the only reader of the socket: it hands replies to their commands
// and events to subscribers, and never blocks on either.
func (c *Client) read(dec *json.Decoder) {
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			c.end(err)
			return
		}
		c.dispatch(raw)
	}
}

// message is any object QEMU sends after the greeting: a reply or an event.
type message struct {
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp Timestamp       `json:"timestamp"`
	ID        json.RawMessage `json:"id"`
	Return    json.RawMessage `json:"return"`
	Error     *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
}

// dispatch routes one message; what is neither ours nor an event is dropped.
func (c *Client) dispatch(raw json.RawMessage) {
	var m message
	if err := json.Unmarshal(raw, &m); err != nil {
		return // not an object: nothing QEMU sends, nothing to route
	}
	if m.Event != "" {
		c.publish(Event{Event: m.Event, Data: m.Data, Timestamp: m.Timestamp})
		return
	}
	var id string
	if json.Unmarshal(m.ID, &id) != nil {
		return // no id or not one of ours: no command waits for it
	}
	c.mu.Lock()
	ch, ok := c.pending[id]
	delete(c.pending, id)
	c.mu.Unlock()
	if !ok {
		return // its caller gave up (ctx)
	}
	r := reply{raw: raw, ret: m.Return}
	if m.Error != nil {
		r.err = &Error{Class: m.Error.Class, Desc: m.Error.Desc}
	}
	ch <- r
}

// end records why the connection ended and tells every waiter, once.
func (c *Client) end(cause error) {
	c.conn.Close()
	c.mu.Lock()
	if c.closing {
		c.err = ErrClosed
	} else {
		c.err = fmt.Errorf("%w: %w", ErrClosed, cause)
	}
	pending, subs := c.pending, c.subs
	c.pending, c.subs = nil, nil
	err := c.err
	c.mu.Unlock()
	for _, ch := range pending {
		ch <- reply{err: err}
	}
	for s := range subs {
		s.finish(err)
	}
	close(c.done)
}

// Version is the QEMU version of the greeting, as go-qemu's qmp.Version.
type Version struct {
	Package string `json:"package"`
	QEMU    struct {
		Major int `json:"major"`
		Micro int `json:"micro"`
		Minor int `json:"minor"`
	} `json:"qemu"`
}

// String gives "major.minor.micro", e.g. "7.2.22".
func (v Version) String() string {
	return fmt.Sprintf("%d.%d.%d", v.QEMU.Major, v.QEMU.Minor, v.QEMU.Micro)
}

// Command is a QMP command as go-qemu's qmp.Command: a name and its arguments.
type Command struct {
	// Execute is the command's name.
	Execute string `json:"execute"`
	// Args are its arguments, if any.
	Args any `json:"arguments,omitempty"`
}
