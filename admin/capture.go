package admin

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/capture"
)

// CaptureRequest is the body of POST /v1/ports/{name}/capture.
type CaptureRequest struct {
	// Path is the pcap file the daemon writes (absolute; created 0600).
	Path string `json:"path"`
	// Overwrite lets an existing file be replaced; refused otherwise.
	Overwrite bool `json:"overwrite,omitempty"`
}

// startCapture answers POST /v1/ports/{name}/capture: the daemon writes
// the port's frames to the file the body names until DELETE. 201 with the
// capture's status; 404 unknown port; 409 already captured or file exists.
func (s *Server) startCapture(w http.ResponseWriter, r *http.Request) {
	p, err := s.ports.Get(r.PathValue("name"))
	if err != nil {
		writeError(w, http.StatusNotFound, err)
		return
	}
	var req CaptureRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("port %s: capture: %w", p.Name(), err))
		return
	}
	if !filepath.IsAbs(req.Path) {
		writeError(w, http.StatusBadRequest, fmt.Errorf("port %s: capture: path %q: want an absolute file name", p.Name(), req.Path))
		return
	}
	st, code, err := StartFileCapture(p, req.Path, req.Overwrite)
	if err != nil {
		writeError(w, code, err)
		return
	}
	writeJSON(w, http.StatusCreated, st)
}

// StartFileCapture captures port p into path; on failure it returns the
// HTTP status that fits (409: already captured or file exists).
func StartFileCapture(p *backend.Port, path string, overwrite bool) (capture.Status, int, error) {
	if p.CaptureStatus() != nil {
		return capture.Status{}, http.StatusConflict, fmt.Errorf("port %s: %w", p.Name(), capture.ErrActive)
	}
	c, err := capture.Create(path, capture.Options{Overwrite: overwrite})
	if err != nil {
		code := http.StatusBadRequest
		if errors.Is(err, os.ErrExist) {
			code = http.StatusConflict
		}
		return capture.Status{}, code, fmt.Errorf("port %s: %w", p.Name(), err)
	}
	if err := p.StartCapture(c, path); err != nil {
		c.Close()
		os.Remove(path)
		return capture.Status{}, http.StatusConflict, err
	}
	return *p.CaptureStatus(), 0, nil
}

// stopCapture answers DELETE /v1/ports/{name}/capture: the capture is
// flushed and closed; 200 with its final counters, 404 if none runs.
func (s *Server) stopCapture(w http.ResponseWriter, r *http.Request) {
	p, err := s.ports.Get(r.PathValue("name"))
	if err != nil {
		writeError(w, http.StatusNotFound, err)
		return
	}
	st, err := p.StopCapture(nil)
	if errors.Is(err, capture.ErrNotActive) {
		writeError(w, http.StatusNotFound, err)
		return
	}
	writeJSON(w, http.StatusOK, st) // a write error is in st.Error
}

// streamCapture answers GET /v1/ports/{name}/capture: the port's frames
// as a pcap stream until the client goes away, the port closes, or
// ?seconds=N have passed.
func (s *Server) streamCapture(w http.ResponseWriter, r *http.Request) {
	p, err := s.ports.Get(r.PathValue("name"))
	if err != nil {
		writeError(w, http.StatusNotFound, err)
		return
	}
	limit, err := seconds(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("port %s: capture: %w", p.Name(), err))
		return
	}
	if p.CaptureStatus() != nil {
		writeError(w, http.StatusConflict, fmt.Errorf("port %s: %w", p.Name(), capture.ErrActive))
		return
	}
	w.Header().Set("Content-Type", "application/vnd.tcpdump.pcap")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", p.Name()+".pcap"))
	c, err := capture.New(w, capture.Options{})
	if err != nil {
		return // the client is gone before the header went out
	}
	if err := p.StartCapture(c, "stream"); err != nil {
		c.Close() // lost a race with another capture: the client gets an empty pcap
		return
	}
	s.waitStream(r, p, limit)
	p.StopCapture(c)
}

// waitStream blocks while a streamed capture should go on.
func (s *Server) waitStream(r *http.Request, p *backend.Port, limit time.Duration) {
	var timeout <-chan time.Time
	if limit > 0 {
		t := time.NewTimer(limit)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-r.Context().Done():
	case <-p.Done():
	case <-timeout:
	}
}

// seconds reads the optional ?seconds=N limit of a streamed capture.
func seconds(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("seconds")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseFloat(v, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("seconds=%s: want a positive number", v)
	}
	return time.Duration(n * float64(time.Second)), nil
}
