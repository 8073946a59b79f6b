package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// This file gives *Client go-qemu's qmp.Monitor method set (Connect,
// Disconnect, Run, Events), so code written against that interface can use
// this client and keep its types' shapes.

// Command is a QMP command as go-qemu's qmp.Command: what Run takes, encoded.
type Command struct {
	// Execute is the command's name.
	Execute string `json:"execute"`
	// Args are its arguments, if any.
	Args any `json:"arguments,omitempty"`
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

// Connect exists for go-qemu's Monitor interface: Dial has already
// negotiated, so it only reports whether the connection still runs.
func (c *Client) Connect() error { return c.Err() }

// Disconnect is Close, for go-qemu's Monitor interface.
func (c *Client) Disconnect() error { return c.Close() }

// Run sends an encoded Command (as go-qemu's Monitor.Run; any "id" in it is
// replaced by the client's own) and returns QEMU's whole reply object. A
// refusal is an *Error. Run waits without a time limit: prefer Execute.
func (c *Client) Run(command []byte) ([]byte, error) {
	var cmd struct {
		Execute   string          `json:"execute"`
		Arguments json.RawMessage `json:"arguments"`
	}
	if err := json.Unmarshal(command, &cmd); err != nil {
		return nil, fmt.Errorf("qmp: Run: command is not a JSON object: %w", err)
	}
	if cmd.Execute == "" {
		return nil, errors.New(`qmp: Run: command has no "execute"`)
	}
	r := c.call(context.Background(), cmd.Execute, cmd.Arguments)
	if r.err != nil {
		return nil, r.err
	}
	return r.raw, nil
}

// Events returns every event from now on, on a channel closed when ctx ends
// or the connection does. Unlike go-qemu's, leaving the channel unread
// stalls nothing but itself; any number of callers get their own stream.
func (c *Client) Events(ctx context.Context) (<-chan Event, error) {
	if err := c.Err(); err != nil {
		return nil, err
	}
	s := c.Subscribe("", nil)
	ch := make(chan Event)
	go c.forward(ctx, s, ch)
	return ch, nil
}

// forward moves a subscription's events onto ch until ctx or the client ends.
func (c *Client) forward(ctx context.Context, s *Subscription, ch chan<- Event) {
	defer close(ch)
	defer s.Close()
	for {
		ev, err := s.Next(ctx)
		if err != nil {
			return
		}
		select {
		case ch <- ev:
		case <-ctx.Done():
			return
		case <-c.done:
			return
		}
	}
}
