package backend

import (
	"errors"
	"fmt"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/capture"
)

// StartCapture attaches c to the port: from now on every frame, both
// directions, is handed to it. target names it in the status (the file,
// or "stream"). A port already captured is refused with capture.ErrActive;
// the caller keeps c and closes it then.
func (p *Port) StartCapture(c *capture.Capture, target string) error {
	if err := p.net.Start(c, target); err != nil {
		return fmt.Errorf("port %s: %w", p.cfg.Name, err)
	}
	p.log.Info("capture started", "target", target)
	return nil
}

// StopCapture detaches the port's capture, closes it and returns its final
// counters. With c not nil it stops only that capture.
// capture.ErrNotActive if there is none.
func (p *Port) StopCapture(c *capture.Capture) (capture.Status, error) {
	st, err := p.net.Stop(c)
	if errors.Is(err, capture.ErrNotActive) {
		return st, fmt.Errorf("port %s: %w", p.cfg.Name, err)
	}
	p.log.Info("capture stopped", "target", st.Target, "captured", st.Captured, "dropped", st.Dropped, "err", err)
	return st, err
}

// CaptureStatus reports the running capture, nil if there is none.
func (p *Port) CaptureStatus() *capture.Status { return p.net.Status() }

// closeCapture stops a running capture as the port closes.
func (p *Port) closeCapture() {
	if p.net.Status() != nil {
		p.StopCapture(nil)
	}
}
