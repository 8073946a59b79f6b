package qmp

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
)

// Event is an asynchronous QMP event, shaped as go-qemu's qmp.Event except
// that Data stays raw JSON (decode it into the struct the event needs; a
// map[string]interface{} loses the precision of 64-bit integers).
type Event struct {
	// Event is the event's name, e.g. "DEVICE_DELETED".
	Event string `json:"event"`
	// Data is the event's "data" member; nil when it has none.
	Data json.RawMessage `json:"data,omitempty"`
	// Timestamp is when QEMU emitted it.
	Timestamp Timestamp `json:"timestamp"`
}

// Timestamp is QEMU's time of an event: seconds and microseconds since 1970.
type Timestamp struct {
	Seconds      int64 `json:"seconds"`
	Microseconds int64 `json:"microseconds"`
}

// Subscription receives the events of one name (or all) from the moment
// Subscribe returns, so subscribe before sending the command whose event
// you wait for. Its queue has no bound: the connection's reader never waits
// for a subscriber, so Close a subscription you no longer read.
type Subscription struct {
	c     *Client
	name  string                          // event name; "" for all
	match func(data json.RawMessage) bool // nil: every event of the name
	ready chan struct{}                   // one token: the queue grew or the subscription ended

	mu    sync.Mutex // guards queue and err
	queue []Event    // events received and not yet taken by Next
	err   error      // set when the subscription ended; Next reports it once the queue is empty
}

// Subscribe starts queueing the events called name ("" for every event)
// whose data satisfy match (nil for all). match runs in the goroutine that
// calls Next; it must not keep data.
func (c *Client) Subscribe(name string, match func(data json.RawMessage) bool) *Subscription {
	s := &Subscription{c: c, name: name, match: match, ready: make(chan struct{}, 1)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		s.err = c.err
		return s
	}
	c.subs[s] = struct{}{}
	return s
}

// Next returns the oldest queued event that matches, waiting for one until
// ctx ends or the subscription does (Close, or the connection's end: an
// error wrapping ErrClosed).
func (s *Subscription) Next(ctx context.Context) (Event, error) {
	for {
		ev, ok, err := s.take()
		if err != nil {
			return Event{}, err
		}
		if ok && (s.match == nil || s.match(ev.Data)) {
			return ev, nil
		}
		if ok {
			continue // queued but not the one asked for: dropped
		}
		select {
		case <-s.ready:
		case <-ctx.Done():
			return Event{}, fmt.Errorf("qmp: waiting for event %s: %w", s.label(), ctx.Err())
		}
	}
}

// take pops the oldest queued event, or says the subscription ended.
func (s *Subscription) take() (Event, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) > 0 {
		ev := s.queue[0]
		s.queue[0] = Event{}
		s.queue = s.queue[1:]
		return ev, true, nil
	}
	return Event{}, false, s.err
}

// label names the subscription in errors.
func (s *Subscription) label() string {
	if s.name == "" {
		return "(any)"
	}
	return s.name
}

// Close ends the subscription: nothing more is queued, and Next returns
// ErrClosed once the queue is empty. Calling it again does nothing.
func (s *Subscription) Close() {
	s.c.mu.Lock()
	delete(s.c.subs, s)
	s.c.mu.Unlock()
	s.finish(ErrClosed)
}

// finish records the subscription's end (the first one counts) and wakes Next.
func (s *Subscription) finish(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
	s.wake()
}

// wake hands Next its token without ever blocking the caller.
func (s *Subscription) wake() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// publish queues ev for every subscriber of its name; called by the reader.
func (c *Client) publish(ev Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for s := range c.subs {
		if s.name == "" || s.name == ev.Event {
			s.mu.Lock()
			s.queue = append(s.queue, ev)
			s.mu.Unlock()
			s.wake()
		}
	}
}
