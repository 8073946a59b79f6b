package backend

import (
	"errors"
	"fmt"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/frontend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
)

// DefaultBatch is the frames per batch in each direction when a port does
// not say: the tunnel's own default.
const DefaultBatch = l2tp.DefaultBatchSize

// PortSpec is a port as a user writes it: on the command line, in the
// config file or in an admin request. The strings use the command line's
// syntax (--stream, --vhost-user, --l2tpv3).
type PortSpec struct {
	Name      string `json:"name" toml:"name"`
	Stream    string `json:"stream,omitempty" toml:"stream"`
	VhostUser string `json:"vhost_user,omitempty" toml:"vhost-user"`
	L2TPv3    string `json:"l2tpv3" toml:"l2tpv3"`
	Batch     int    `json:"batch,omitempty" toml:"batch"`

	// The wire (wire.go): link "down", "down in" or "down out" starts the
	// port cut; impairments in netem's words for both directions, into
	// the VM (in) or from it (out).
	Link      string `json:"link,omitempty" toml:"link"`
	Impair    string `json:"impair,omitempty" toml:"impair"`
	ImpairIn  string `json:"impair_in,omitempty" toml:"impair-in"`
	ImpairOut string `json:"impair_out,omitempty" toml:"impair-out"`
	// QMP is QEMU's QMP socket ("unix:PATH" or a path) through which a
	// cut link also sets the guest NIC's link (set_link); QMPID names that
	// NIC there, its device or netdev id (default: the port's name).
	QMP   string `json:"qmp,omitempty" toml:"qmp"`
	QMPID string `json:"qmp_id,omitempty" toml:"qmp-id"`
}

// PortConfig is a validated PortSpec.
type PortConfig struct {
	Name      string
	Stream    *frontend.StreamAddr
	VhostUser *frontend.VhostUserAddr
	L2TP      l2tp.Config
	Batch     int
	Wire      [2]pump.WireState // by pump.Direction, at start
	QMP       string
	QMPID     string
}

// Parse validates the spec; each error names the field and the reason.
func (s PortSpec) Parse() (PortConfig, error) {
	c := PortConfig{Name: s.Name, Batch: s.Batch, QMP: s.QMP, QMPID: s.QMPID}
	if c.QMPID == "" {
		c.QMPID = s.Name
	}
	if c.Batch == 0 {
		c.Batch = DefaultBatch
	}
	switch {
	case !ValidPortName(s.Name):
		return c, fmt.Errorf("port name %q: want 1..64 letters, digits, '-', '_' or '.'", s.Name)
	case s.Stream == "" && s.VhostUser == "":
		return c, errors.New("--stream or --vhost-user is required (where QEMU meets the sidecar)")
	case s.Stream != "" && s.VhostUser != "":
		return c, errors.New("--stream and --vhost-user are exclusive: one front end per port")
	case s.L2TPv3 == "":
		return c, errors.New("--l2tpv3 is required (the pseudowire's option string)")
	case c.Batch < 1 || c.Batch > 1024:
		return c, fmt.Errorf("--batch %d: must be 1..1024", c.Batch)
	}
	if s.Stream != "" {
		a, err := frontend.ParseStreamAddr(s.Stream)
		if err != nil {
			return c, err
		}
		c.Stream = &a
	} else {
		a, err := frontend.ParseVhostUserAddr(s.VhostUser)
		if err != nil {
			return c, err
		}
		c.VhostUser = &a
	}
	var err error
	if c.L2TP, err = l2tp.ParseOptions(s.L2TPv3); err != nil {
		return c, fmt.Errorf("--%w", err) // "--l2tpv3: missing dst"
	}
	if c.Wire, err = s.parseWires(); err != nil {
		return c, err
	}
	return c, nil // a vhost-user MTU left 0 is the tunnel's inner MTU (OpenPort)
}

// SessionID is the session the spec receives on, 0 when its option string
// does not parse (logs of refused ports still carry a session).
func (s PortSpec) SessionID() uint32 {
	c, err := l2tp.ParseOptions(s.L2TPv3)
	if err != nil {
		return 0
	}
	return c.SessionID
}

// SocketPath is the unix socket the port's front end listens on or dials,
// "" for tcp.
func (c PortConfig) SocketPath() string {
	switch {
	case c.VhostUser != nil:
		return c.VhostUser.Path
	case c.Stream != nil && c.Stream.Network == "unix":
		return c.Stream.Address
	}
	return ""
}

// ValidPortName keeps names usable in logs, metric labels, URLs and
// libvirt aliases: 1..64 letters, digits, '-', '_' or '.'.
func ValidPortName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		ok := r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
		if !ok {
			return false
		}
	}
	return true
}
