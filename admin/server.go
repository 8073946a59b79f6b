// Package admin is the daemon's control plane: an HTTP+JSON API on a unix
// socket to list, add and remove ports, start and stop captures, and
// scrape metrics, plus a Client for it. It reads and changes the ports
// (backend.Ports, which also records the ports that could not start) and
// owns no state of its own.
//
// It may import backend and what backend builds on; never cmd or plug.
package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
)

// maxBody bounds a request body: a port spec or a capture request is tiny.
const maxBody = 64 << 10

// Server is the admin API over a set of ports.
type Server struct {
	ports   *backend.Ports
	log     *slog.Logger
	metrics http.Handler
	mux     *http.ServeMux

	mu     sync.Mutex // guards hs and reload
	hs     *http.Server
	reload func() (backend.Change, error)
}

// NewServer serves ports; metrics, if not nil, answers GET /metrics.
func NewServer(ports *backend.Ports, log *slog.Logger, metrics http.Handler) *Server {
	s := &Server{ports: ports, log: log, metrics: metrics}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET /v1/ports", s.list)
	s.mux.HandleFunc("POST /v1/ports", s.add)
	s.mux.HandleFunc("GET /v1/ports/{name}", s.get)
	s.mux.HandleFunc("DELETE /v1/ports/{name}", s.remove)
	s.mux.HandleFunc("POST /v1/ports/{name}/capture", s.startCapture)
	s.mux.HandleFunc("DELETE /v1/ports/{name}/capture", s.stopCapture)
	s.mux.HandleFunc("GET /v1/ports/{name}/capture", s.streamCapture)
	s.mux.HandleFunc("PUT /v1/ports/{name}/link", s.setLink)
	s.mux.HandleFunc("PUT /v1/ports/{name}/impairment", s.setImpairment)
	s.mux.HandleFunc("POST /v1/reload", s.serveReload)
	s.mux.HandleFunc("GET /metrics", s.serveMetrics)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Errorf("%s %s: no such endpoint", r.Method, r.URL.Path))
	})
	return s
}

// SetReload makes POST /v1/reload call reload (the daemon's config file
// reload); without it the endpoint answers 404.
func (s *Server) SetReload(reload func() (backend.Change, error)) {
	s.mu.Lock()
	s.reload = reload
	s.mu.Unlock()
}

// serveReload answers POST /v1/reload: 200 with what changed, 400 with
// the file's error when it was refused (nothing changed), 404 without a
// config file.
func (s *Server) serveReload(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	reload := s.reload
	s.mu.Unlock()
	if reload == nil {
		writeError(w, http.StatusNotFound, errors.New("POST /v1/reload: the daemon runs without --config: nothing to reload"))
		return
	}
	ch, err := reload()
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	writeJSON(w, http.StatusOK, ch)
}

// Handler is the API, for a listener of the caller's choosing (tests).
func (s *Server) Handler() http.Handler { return s.mux }

// list answers GET /v1/ports.
func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.ports.Statuses())
}

// get answers GET /v1/ports/{name}.
func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	st, err := s.ports.Status(r.PathValue("name"))
	if err != nil {
		writeError(w, http.StatusNotFound, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// add answers POST /v1/ports: body a backend.PortSpec; 201 with the new
// port's status, 400 for a spec that cannot work, 409 for a name, socket
// or UDP port already taken.
func (s *Server) add(w http.ResponseWriter, r *http.Request) {
	var spec backend.PortSpec
	if err := decodeBody(r, &spec); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("POST /v1/ports: %w", err))
		return
	}
	cfg, err := spec.Parse()
	if err != nil {
		s.log.Warn("admin: port refused", "port", spec.Name, "session", spec.SessionID(), "err", err)
		writeError(w, http.StatusBadRequest, fmt.Errorf("port %s: %w", spec.Name, err))
		return
	}
	p, err := s.ports.Add(cfg)
	if err != nil {
		s.log.Warn("admin: port refused", "port", spec.Name, "session", cfg.L2TP.SessionID, "err", err)
		writeError(w, addStatus(err), err)
		return
	}
	p.Logger().Info("port added", "by", "admin")
	writeJSON(w, http.StatusCreated, p.Status())
}

// addStatus maps a refused Add to its HTTP status: 409 when something else
// has the name, socket or address, else 400.
func addStatus(err error) int {
	if errors.Is(err, backend.ErrPortExists) || errors.Is(err, syscall.EADDRINUSE) {
		return http.StatusConflict
	}
	return http.StatusBadRequest
}

// remove answers DELETE /v1/ports/{name}: the port is closed (its socket
// file removed), or a failed one forgotten, and its last status returned;
// 404 if unknown.
func (s *Server) remove(w http.ResponseWriter, r *http.Request) {
	st, err := s.ports.Remove(r.PathValue("name"))
	if err != nil {
		writeError(w, http.StatusNotFound, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// serveMetrics answers GET /metrics when the server has metrics.
func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	if s.metrics == nil {
		writeError(w, http.StatusNotFound, errors.New("GET /metrics: metrics are off"))
		return
	}
	s.metrics.ServeHTTP(w, r)
}

// decodeBody reads a JSON body into v, refusing unknown fields (a typo must
// not pass silently) and trailing data.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("body: %w", err)
	}
	if dec.More() {
		return errors.New("body: data after the JSON object")
	}
	return nil
}

// errorBody is every error response: {"error": "..."}.
type errorBody struct {
	Error string `json:"error"`
}

// writeError answers with status and the error as JSON.
func writeError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, errorBody{err.Error()})
}

// writeJSON answers with status and v as indented JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// Serve answers API requests on ln until Close.
func (s *Server) Serve(ln net.Listener) error {
	hs := &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	s.mu.Lock()
	s.hs = hs
	s.mu.Unlock()
	err := hs.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops serving: the listener is closed (its socket file removed)
// and open requests, streamed captures included, are ended.
func (s *Server) Close() error {
	s.mu.Lock()
	hs := s.hs
	s.mu.Unlock()
	if hs == nil {
		return nil
	}
	return hs.Close()
}
