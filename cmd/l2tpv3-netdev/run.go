package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/admin"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/metrics"
)

// daemon is a running l2tpv3-netdev: its ports, the admin API (with
// --admin) and the metrics listener (with --metrics), which share one
// metrics handler.
type daemon struct {
	log     *slog.Logger
	ports   *backend.Ports
	srv     *admin.Server
	adminLn net.Listener
	metrics *http.Server

	metricsHandler http.Handler // GET /metrics, on either listener

	config   string     // --config, re-read by reload ("" without one)
	reloadMu sync.Mutex // one reload at a time; guards owned
	owned    []string   // the ports the config file names, good or refused
}

// run opens the admin socket and metrics listener (refusing at start what
// cannot work), starts every port (one that fails is logged by name, the
// others run), then serves until a signal. Without an admin socket it also
// ends when every port has ended, or when none could start.
func run(o options, stderr io.Writer) error {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.logLevel}))
	d := &daemon{log: log, ports: backend.NewPorts(log), config: o.daemon.config, owned: o.daemon.owned}
	defer d.ports.Close()
	d.metricsHandler = metrics.Handler(d.ports.Statuses)
	d.srv = admin.NewServer(d.ports, log, d.metricsHandler)
	if d.config != "" {
		d.srv.SetReload(d.reload)
	}
	if err := d.listen(o.daemon); err != nil {
		return err
	}
	defer d.closeListeners()
	started := d.startPorts(o)
	if started == nil && d.adminLn == nil {
		return d.noPortError(o)
	}
	return d.wait(started)
}

// listen opens the admin socket and the metrics listener, if asked for.
func (d *daemon) listen(o daemonOptions) error {
	if o.admin != "" {
		ln, err := admin.Listen(o.admin, d.log)
		if err != nil {
			return fmt.Errorf("--admin: %w", err)
		}
		d.adminLn = ln
		go d.srv.Serve(ln)
		d.log.Info("admin API ready", "admin", o.admin)
	}
	if o.metrics != "" {
		ln, err := net.Listen("tcp", o.metrics)
		if err != nil {
			d.closeListeners()
			return fmt.Errorf("--metrics %s: %w", o.metrics, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", d.metricsHandler)
		d.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go d.metrics.Serve(ln)
		d.log.Info("metrics ready", "metrics", "http://"+ln.Addr().String()+"/metrics")
	}
	return nil
}

// closeListeners stops the admin API (its socket file removed) and metrics.
func (d *daemon) closeListeners() {
	d.srv.Close()
	if d.metrics != nil {
		d.metrics.Close()
	}
}

// startPorts starts every good port and its --pcap capture, and reports
// every refused one; it returns the ports that started.
func (d *daemon) startPorts(o options) []*backend.Port {
	for _, r := range o.daemon.refused {
		d.ports.Refuse(r.Spec, r.Err)
	}
	var started []*backend.Port
	for _, cfg := range o.ports {
		p, err := d.ports.Start(cfg)
		if err != nil {
			continue
		}
		started = append(started, p)
		if file := o.daemon.pcaps[cfg.Name]; file != "" {
			if _, _, err := admin.StartFileCapture(p, file, true); err != nil {
				p.Logger().Error("--pcap refused", "file", file, "err", err)
			}
		}
	}
	return started
}

// noPortError is the exit error when nothing could start and there is no
// admin socket to add ports through: the single port's own error, or a
// count.
func (d *daemon) noPortError(o options) error {
	sts := d.ports.Statuses()
	if len(sts) == 1 {
		return errors.New(sts[0].Error)
	}
	return fmt.Errorf("none of the %d ports could start (each is logged above)", len(sts))
}

// wait serves until SIGTERM/SIGINT (SIGUSR1 prints the counters, SIGHUP
// reloads the config file). Without
// an admin socket, it also returns once every port has ended, with the
// last one's error.
func (d *daemon) wait(started []*backend.Port) error {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGHUP)
	defer signal.Stop(sigs)
	allDone := make(chan error, 1)
	if d.adminLn == nil {
		go func() { allDone <- waitAll(started) }()
	}
	for {
		select {
		case s := <-sigs:
			switch s {
			case syscall.SIGUSR1:
				logCounters(d.ports.List())
				continue
			case syscall.SIGHUP:
				d.reloadOnSignal()
				continue
			}
			d.log.Info("exiting", "signal", s.String())
			list := d.ports.List()
			d.ports.Close()
			logCounters(list)
			return nil
		case err := <-allDone:
			logCounters(d.ports.List())
			return err
		}
	}
}

// reloadOnSignal reloads the config file on SIGHUP; without one it says
// so rather than doing nothing silently.
func (d *daemon) reloadOnSignal() {
	if d.config == "" {
		d.log.Warn("SIGHUP ignored: no --config to reload")
		return
	}
	d.reload() // logs its summary or its refusal
}

// waitAll waits for every port to end and returns the last failure.
func waitAll(ports []*backend.Port) error {
	var err error
	for _, p := range ports {
		<-p.Done()
		if e := p.Err(); e != nil {
			err = fmt.Errorf("port %s: %w", p.Name(), e)
		}
	}
	return err
}

// logCounters prints each port's session and front-end counters in one line.
func logCounters(ports []*backend.Port) {
	for _, p := range ports {
		st := p.Status()
		fe := st.FrontEnd
		args := []any{"l2tpv3", st.Session.String(),
			"vm_connections", fe.Connections, "vm_protocol_errors", fe.ProtocolErrors,
			"vm_ring_violations", fe.RingViolations, "vm_memory_faults", fe.MemoryFaults, "vm_from_dropped", fe.FromVMDropped,
			"vm_to_dropped", fe.ToVMDropped, "vm_waits", fe.Waits, "vm_wait_ms", fe.WaitNanos / 1e6,
			"vm_refused", fe.RefusedPeers, "goroutines", runtime.NumGoroutine()} // process-wide: leak checks
		if q := fe.QueueCounts(); q != "" {
			args = append(args, "vm_queues", q) // vhost-user: frames per queue pair
		}
		p.Logger().Info("counters", args...)
	}
}
