// Package admin is the daemon's control plane: an HTTP+JSON API on a unix
// socket to list, add and remove ports, start and stop captures, and
// scrape metrics, plus a Client for it. The Server also remembers the
// ports the config named that could not start, so listings and metrics
// show them as failed.
package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/frontend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
)

// maxBody bounds a request body: a port spec or a capture request is tiny.
const maxBody = 64 << 10

// Server is the admin API over a set of ports. It is usable without a
// listener (the daemon starts ports through it either way).
type Server struct {
	ports   *backend.Ports
	log     *slog.Logger
	metrics http.Handler
	mux     *http.ServeMux

	mu     sync.Mutex                    // guards failed and hs
	failed map[string]backend.PortStatus // config ports that could not start
	hs     *http.Server
}

// NewServer serves ports; metrics, if not nil, answers GET /metrics.
func NewServer(ports *backend.Ports, log *slog.Logger, metrics http.Handler) *Server {
	s := &Server{ports: ports, log: log, metrics: metrics, failed: map[string]backend.PortStatus{}}
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
	s.mux.HandleFunc("GET /metrics", s.serveMetrics)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Errorf("%s %s: no such endpoint", r.Method, r.URL.Path))
	})
	return s
}

// Handler is the API, for a listener of the caller's choosing (tests).
func (s *Server) Handler() http.Handler { return s.mux }

// Start opens and starts a configured port. If it fails, the failure is
// logged with the port's name and session and the port remembered as
// failed (listed, exported) until it is added again or deleted.
func (s *Server) Start(cfg backend.PortConfig) (*backend.Port, error) {
	p, err := s.ports.Add(cfg)
	if err != nil {
		s.log.Error("port failed to start", "port", cfg.Name, "session", cfg.L2TP.SessionID, "err", err)
		s.remember(failedStatus(cfg, err))
		return nil, err
	}
	s.forget(cfg.Name)
	return p, nil
}

// Refuse logs and remembers a port whose spec does not parse, as Start
// does for one that does not open.
func (s *Server) Refuse(spec backend.PortSpec, err error) {
	msg := strings.ReplaceAll(err.Error(), "\n", "; ")
	s.log.Error("port refused", "port", spec.Name, "session", sessionOf(spec), "err", msg)
	st := backend.PortStatus{Name: spec.Name, SessionID: sessionOf(spec), Error: msg, L2TPv3: spec.L2TPv3}
	switch {
	case spec.VhostUser != "":
		st.FrontEnd = frontend.Status{Kind: "vhost-user", Address: spec.VhostUser}
	case spec.Stream != "":
		st.FrontEnd = frontend.Status{Kind: "stream", Address: spec.Stream}
	}
	s.remember(st)
}

// remember records a port that could not start, as failed.
func (s *Server) remember(st backend.PortStatus) {
	st.State = backend.PortFailed
	s.mu.Lock()
	s.failed[st.Name] = st
	s.mu.Unlock()
}

// forget drops a failed port's record; it reports whether there was one.
func (s *Server) forget(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.failed[name]
	delete(s.failed, name)
	return ok
}

// failedStatus describes a configured port that could not open.
func failedStatus(cfg backend.PortConfig, err error) backend.PortStatus {
	st := backend.PortStatus{Name: cfg.Name, SessionID: cfg.L2TP.SessionID, Error: err.Error(),
		L2TPv3: cfg.L2TP.String()}
	switch {
	case cfg.VhostUser != nil:
		st.FrontEnd = frontend.Status{Kind: "vhost-user", Address: cfg.VhostUser.Path}
	case cfg.Stream != nil:
		st.FrontEnd = frontend.Status{Kind: "stream", Address: cfg.Stream.String()}
	}
	return st
}

// sessionOf is the session a spec receives on, 0 when its option string
// does not parse (logs of refused ports still carry a session).
func sessionOf(spec backend.PortSpec) uint32 {
	c, err := l2tp.ParseOptions(spec.L2TPv3)
	if err != nil {
		return 0
	}
	return c.SessionID
}

// Statuses reports the running ports and those that could not start,
// sorted by name.
func (s *Server) Statuses() []backend.PortStatus {
	out := s.ports.Statuses()
	seen := make(map[string]bool, len(out))
	for _, st := range out {
		seen[st.Name] = true
	}
	s.mu.Lock()
	for name, st := range s.failed {
		if !seen[name] {
			out = append(out, st)
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// status reports one port, running or failed to start.
func (s *Server) status(name string) (backend.PortStatus, error) {
	if p, err := s.ports.Get(name); err == nil {
		return p.Status(), nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.failed[name]; ok {
		return st, nil
	}
	return backend.PortStatus{}, fmt.Errorf("port %s: %w", name, backend.ErrNoPort)
}

// list answers GET /v1/ports.
func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Statuses())
}

// get answers GET /v1/ports/{name}.
func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	st, err := s.status(r.PathValue("name"))
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
		s.log.Warn("admin: port refused", "port", spec.Name, "session", sessionOf(spec), "err", err)
		writeError(w, http.StatusBadRequest, fmt.Errorf("port %s: %w", spec.Name, err))
		return
	}
	p, err := s.ports.Add(cfg)
	if err != nil {
		s.log.Warn("admin: port refused", "port", spec.Name, "session", cfg.L2TP.SessionID, "err", err)
		writeError(w, addStatus(err), err)
		return
	}
	s.forget(cfg.Name)
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
// file removed) and its last status returned; 404 if unknown.
func (s *Server) remove(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	p, err := s.ports.Get(name)
	if err != nil {
		if st, serr := s.status(name); serr == nil && s.forget(name) {
			writeJSON(w, http.StatusOK, st)
			return
		}
		writeError(w, http.StatusNotFound, err)
		return
	}
	if err := s.ports.Remove(name); err != nil {
		writeError(w, http.StatusNotFound, err)
		return
	}
	writeJSON(w, http.StatusOK, p.Status())
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
