package main

import (
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
)

// run opens every port (refusing at start what cannot work), then forwards
// until a signal, or until the only port fails.
func run(o options) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: o.logLevel}))
	ports := backend.NewPorts(log)
	defer ports.Close()
	for _, cfg := range o.ports {
		if _, err := ports.Add(cfg); err != nil {
			return err
		}
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)
	only, _ := ports.Get(o.ports[0].Name)
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGUSR1 {
				logCounters(ports.List())
				continue
			}
			log.Info("exiting", "signal", s.String())
			list := ports.List()
			ports.Close()
			logCounters(list)
			return nil
		case <-only.Done():
			err := only.Err()
			logCounters(ports.List())
			return err
		}
	}
}

// logCounters prints each port's session and front-end counters in one line.
func logCounters(ports []*backend.Port) {
	for _, p := range ports {
		st := p.Status()
		fe := st.FrontEnd
		p.Logger().Info("counters", "l2tpv3", st.Session.String(),
			"vm_connections", fe.Connections, "vm_protocol_errors", fe.ProtocolErrors,
			"vm_ring_violations", fe.RingViolations, "vm_from_dropped", fe.FromVMDropped,
			"vm_to_dropped", fe.ToVMDropped, "vm_waits", fe.Waits, "vm_wait_ms", fe.WaitNanos/1e6)
	}
}
