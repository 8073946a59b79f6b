package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/capture"
)

// Client talks to a daemon's admin socket.
type Client struct {
	path string
	hc   *http.Client
}

// NewClient returns a client of the admin socket at path; access keys after
// it (the daemon's own --admin string: "PATH,group=kvm,mode=0660") are
// ignored, see SocketPath.
func NewClient(path string) *Client {
	path = SocketPath(path)
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}
	return &Client{path: path, hc: &http.Client{Transport: tr}}
}

// Error is what the daemon answered to a refused request.
type Error struct {
	StatusCode int    // the HTTP status
	Message    string // the daemon's {"error": ...}
}

// Error is the daemon's message, as it said it.
func (e *Error) Error() string { return e.Message }

// Unwrap lets callers of the port calls test errors.Is(err,
// backend.ErrNoPort) for a 404 and backend.ErrPortExists for a 409 (for
// capture calls these mean "no capture" and "a capture runs").
func (e *Error) Unwrap() error {
	switch e.StatusCode {
	case http.StatusNotFound:
		return backend.ErrNoPort
	case http.StatusConflict:
		return backend.ErrPortExists
	}
	return nil
}

// Ports lists every port with its state and counters.
func (c *Client) Ports(ctx context.Context) ([]backend.PortStatus, error) {
	var out []backend.PortStatus
	return out, c.do(ctx, http.MethodGet, "/v1/ports", nil, &out)
}

// Port reports one port.
func (c *Client) Port(ctx context.Context, name string) (backend.PortStatus, error) {
	var out backend.PortStatus
	return out, c.do(ctx, http.MethodGet, portPath(name), nil, &out)
}

// AddPort opens and starts a port in the daemon and returns its status.
func (c *Client) AddPort(ctx context.Context, spec backend.PortSpec) (backend.PortStatus, error) {
	var out backend.PortStatus
	return out, c.do(ctx, http.MethodPost, "/v1/ports", spec, &out)
}

// RemovePort closes a port (its socket file removed) and returns its last
// status.
func (c *Client) RemovePort(ctx context.Context, name string) (backend.PortStatus, error) {
	var out backend.PortStatus
	return out, c.do(ctx, http.MethodDelete, portPath(name), nil, &out)
}

// Reload makes the daemon re-read its config file (POST /v1/reload).
func (c *Client) Reload(ctx context.Context) (backend.Change, error) {
	var out backend.Change
	return out, c.do(ctx, http.MethodPost, "/v1/reload", nil, &out)
}

// StartCapture makes the daemon write a port's frames to a pcap file.
func (c *Client) StartCapture(ctx context.Context, name string, req CaptureRequest) (capture.Status, error) {
	var out capture.Status
	return out, c.do(ctx, http.MethodPost, portPath(name)+"/capture", req, &out)
}

// StopCapture ends a port's capture and returns its final counters.
func (c *Client) StopCapture(ctx context.Context, name string) (capture.Status, error) {
	var out capture.Status
	return out, c.do(ctx, http.MethodDelete, portPath(name)+"/capture", nil, &out)
}

// portPath is a port's URL path, its name escaped.
// SetLink cuts or restores a port's link (PUT /v1/ports/{name}/link).
func (c *Client) SetLink(ctx context.Context, name string, req LinkRequest) (WireAnswer, error) {
	var ans WireAnswer
	return ans, c.do(ctx, http.MethodPut, portPath(name)+"/link", req, &ans)
}

// SetImpairment sets or clears a port's impairments (PUT
// /v1/ports/{name}/impairment).
func (c *Client) SetImpairment(ctx context.Context, name string, req ImpairRequest) (WireAnswer, error) {
	var ans WireAnswer
	return ans, c.do(ctx, http.MethodPut, portPath(name)+"/impairment", req, &ans)
}

func portPath(name string) string { return "/v1/ports/" + url.PathEscape(name) }

// do sends one request (in as JSON when not nil) and decodes a 2xx answer
// into out; any other answer becomes an *Error with the daemon's message.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://l2tpv3-netdev"+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.dialError(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return answerError(resp.StatusCode, data)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: the daemon's answer: %w", method, path, err)
	}
	return nil
}

// dialError says which socket could not be reached and what to check.
func (c *Client) dialError(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return fmt.Errorf("admin socket %s: %w (is the daemon running with --admin %s?)", c.path, op.Err, c.path)
	}
	return fmt.Errorf("admin socket %s: %w", c.path, err)
}

// answerError turns a non-2xx answer into an *Error with the daemon's text.
func answerError(status int, data []byte) error {
	var eb errorBody
	if json.Unmarshal(data, &eb) != nil || eb.Error == "" {
		eb.Error = fmt.Sprintf("%d %s: %s", status, http.StatusText(status), bytes.TrimSpace(data))
	}
	return &Error{StatusCode: status, Message: eb.Error}
}
