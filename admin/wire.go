package admin

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/impair"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
)

// LinkRequest is the body of PUT /v1/ports/{name}/link.
type LinkRequest struct {
	// Direction: "in" (to_vm), "out" (to_network) or "both"/"" (both).
	Direction string `json:"direction,omitempty"`
	Up        bool   `json:"up"`
}

// ImpairRequest is the body of PUT /v1/ports/{name}/impairment.
type ImpairRequest struct {
	Direction string `json:"direction,omitempty"` // as LinkRequest's
	// Spec is netem's words ("delay 50ms 10ms loss 1%"); "" clears.
	Spec string `json:"spec"`
}

// WireAnswer is what both answer: the port's directions after the change,
// and for a link change on a port with a QMP socket, why the guest's link
// could not be set (the wire changed anyway).
type WireAnswer struct {
	Wires    []pump.WireStatus `json:"wires"`
	QMPError string            `json:"qmp_error,omitempty"`
}

// setLink answers PUT /v1/ports/{name}/link: 200 with the wires (and a
// QMP failure, if any), 404 unknown port, 400 bad body.
func (s *Server) setLink(w http.ResponseWriter, r *http.Request) {
	var req LinkRequest
	p, dirs, ok := s.wireRequest(w, r, &req, &req.Direction)
	if !ok {
		return
	}
	var ans WireAnswer
	err := p.SetLink(r.Context(), dirs, req.Up)
	var gl *backend.GuestLinkError
	switch {
	case errors.As(err, &gl):
		ans.QMPError = err.Error()
	case err != nil:
		writeError(w, http.StatusNotFound, err) // the port is closing
		return
	}
	ans.Wires = p.Wires()
	writeJSON(w, http.StatusOK, ans)
}

// setImpairment answers PUT /v1/ports/{name}/impairment: 200 with the
// wires, 400 for a spec that does not parse, 404 unknown port.
func (s *Server) setImpairment(w http.ResponseWriter, r *http.Request) {
	var req ImpairRequest
	p, dirs, ok := s.wireRequest(w, r, &req, &req.Direction)
	if !ok {
		return
	}
	spec, err := impair.Parse(req.Spec)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("port %s: impairment: %w", p.Name(), err))
		return
	}
	if err := p.SetImpairment(dirs, spec); err != nil {
		writeError(w, http.StatusNotFound, err)
		return
	}
	writeJSON(w, http.StatusOK, WireAnswer{Wires: p.Wires()})
}

// wireRequest finds the port, decodes the body into req and parses the
// direction it names; on failure it has answered.
func (s *Server) wireRequest(w http.ResponseWriter, r *http.Request, req any, dir *string) (*backend.Port, []pump.Direction, bool) {
	p, err := s.ports.Get(r.PathValue("name"))
	if err != nil {
		writeError(w, http.StatusNotFound, err)
		return nil, nil, false
	}
	if err := decodeBody(r, req); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("port %s: %w", p.Name(), err))
		return nil, nil, false
	}
	dirs, err := backend.ParseDirections(*dir)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("port %s: %w", p.Name(), err))
		return nil, nil, false
	}
	return p, dirs, true
}
