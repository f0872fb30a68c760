// Package agent is the long-lived process emu starts inside a node's
// namespace for what must outlive the deploy command: the userspace ESP
// dataplane, dead peer detection and health checks, BGP. It reads its
// configuration from a 0600 file in the lab directory, says "ready" (or why
// not) on a pipe, and runs until SIGTERM: a supervisor that restarts the
// worker doing the work when it dies or hangs, each restart recorded and
// shown by `emu inspect`.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/ipsec/kernel"
	"github.com/emu-lab/emu/internal/ipsec/userspace"
	"github.com/emu-lab/emu/internal/monitor"
	"github.com/emu-lab/emu/internal/routing"
	"github.com/emu-lab/emu/internal/safefile"
	"github.com/emu-lab/emu/internal/wiring"
)

// Config is what one node's agent runs.
type Config struct {
	Lab     string       `json:"lab"`
	Node    string       `json:"node"`
	Tunnels []ipsec.Conn `json:"tunnels,omitempty"`
	// XFRM are IKE-keyed tunnels on the kernel dataplane: deploy made
	// their interfaces and policies, the agent installs the states.
	XFRM     []kernel.Tunnel  `json:"xfrm_ike,omitempty"`
	Monitors []monitor.Config `json:"monitors,omitempty"`
	BGP      *routing.Config  `json:"bgp,omitempty"`
	// Routes are put back by a restarted worker (plan.Agent.Routes).
	Routes []monitor.Route `json:"routes_into_tunnels,omitempty"`
}

// ReadyFD is the descriptor (the first of ExtraFiles) the agent reports on
// when ReadyEnv names it.
const ReadyFD = 3

// ReadyEnv names the descriptor of the ready pipe. Without it the agent
// reports to nobody: a descriptor inherited by accident (an agent started by
// hand) is never written to or closed, since it may be anything, and once
// the agent runs it may be the agent's own socket.
const ReadyEnv = "EMU_AGENT_READY_FD"

// Ready is the line an agent writes when it serves.
const Ready = "ready"

// workerEnv marks the process the supervisor starts to do the work.
const workerEnv = "EMU_AGENT_WORKER"

// Run runs the agent of configPath until SIGTERM or SIGINT: as the supervisor
// (see supervise) unless it is the worker the supervisor started. Setup
// errors are reported on the ready pipe too, so the deploy can show them.
func Run(configPath string) error {
	ready := readyPipe()
	report := func(msg string) {
		if ready != nil {
			fmt.Fprintln(ready, msg)
			ready.Close()
			ready = nil
		}
	}
	var err error
	if os.Getenv(workerEnv) == "1" {
		err = serve(configPath, func() { report(Ready) })
	} else {
		err = supervise(configPath, func() { report(Ready) })
	}
	if err != nil {
		report("error: " + err.Error())
	}
	return err
}

// readyPipe takes the ready pipe before anything else is opened, and only
// if ReadyEnv names a descriptor that is a pipe.
func readyPipe() *os.File {
	fd, err := strconv.Atoi(os.Getenv(ReadyEnv))
	os.Unsetenv(ReadyEnv) // the worker gets its own
	if err != nil || fd < 3 {
		return nil
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return nil
	}
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), "ready")
}

func serve(configPath string, ready func()) error {
	data, err := safefile.ReadFile(configPath)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	var cfg Config
	if err := json.Unmarshal(data, &cfg); err != nil {
		return fmt.Errorf("config %s: %w", configPath, err)
	}
	started := time.Now()
	logger := log.New(os.Stderr, fmt.Sprintf("agent %s/%s[%d]: ", cfg.Lab, cfg.Node, os.Getpid()), log.LstdFlags|log.Lmicroseconds)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var dp *userspace.Dataplane
	// A previous worker's checkpoint (deploy removes it): its SAs resume
	// where they were, so the peer drops nothing as a replay.
	prevState, prevErr := readState(configPath)
	restarted := prevErr == nil
	if len(cfg.Tunnels) > 0 {
		var prev []userspace.TunnelStats
		if prevErr == nil {
			prev = prevState.Tunnels
		}
		if dp, err = userspace.StartFrom(cfg.Tunnels, logger, prev); err != nil {
			return err
		}
		defer dp.Close()
		if prevErr == nil {
			// A restart: the TUN interfaces are new, and the routes into
			// them died with the old ones. (At deploy, deploy adds them.)
			if err := restoreRoutes(cfg.Routes, logger); err != nil {
				return err
			}
		}
		for _, t := range dp.Stats() {
			if t.OutSPI == 0 {
				continue // keyed by IKE: its SAs are logged as negotiated
			}
			logger.Printf("tunnel %s up: spi out 0x%08x (next seq %d) in 0x%08x (highest seen %d) (userspace ESP)", t.Name, t.OutSPI, uint64(t.Out.Seq)+1, t.InSPI, t.In.Seq)
		}
	}
	var keyer ikeKeyer = dp
	ikeTunnels := cfg.Tunnels
	if len(cfg.XFRM) > 0 {
		if keyer, err = openXFRM(cfg.XFRM, logger); err != nil {
			return err
		}
		ikeTunnels = nil
		for _, t := range cfg.XFRM {
			ikeTunnels = append(ikeTunnels, t.Conn)
		}
	}
	endpoints, err := startIKE(keyer, ikeTunnels, cfg, logger, restarted)
	for _, e := range endpoints {
		// Deferred before the dataplane closes: the DELETEs go out first.
		defer e.Close()
	}
	if err != nil {
		return err
	}
	var speaker *routing.Speaker
	if cfg.BGP != nil {
		if speaker, err = routing.Start(ctx, *cfg.BGP, logger); err != nil {
			return fmt.Errorf("bgp: %w", err)
		}
		defer speaker.Stop()
		logger.Printf("bgp AS%d router-id %s up with %d neighbors", cfg.BGP.ASN, cfg.BGP.RouterID, len(cfg.BGP.Neighbors))
	}
	var wg sync.WaitGroup
	wg.Add(1)
	published := make(chan struct{})
	go func() {
		defer wg.Done()
		publish(ctx, configPath, started, speaker, dp, endpoints, ikeTunnels, published)
	}()
	for _, m := range cfg.Monitors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := monitor.Run(ctx, m, logger); err != nil {
				logger.Print(err)
			}
		}()
		logger.Printf("watching %s: ping %s via %s every %s, down after %d lost", m.Connection, m.Target, m.Interface, m.Interval, m.Retries)
	}
	// Ready only once the first state is written: a worker killed right
	// after leaves its successor the checkpoint that tells it is a restart
	// (routes to put back into the new TUN interfaces, SAs to resume).
	<-published
	ready()
	<-ctx.Done()
	wg.Wait()
	if dp != nil {
		stats, _ := json.Marshal(dp.Stats())
		logger.Printf("stopping; counters %s", stats)
	}
	return nil
}

// restoreRoutes adds routes, skipping those present.
func restoreRoutes(routes []monitor.Route, logger *log.Logger) error {
	w := wiring.New()
	defer w.Close()
	for _, r := range routes {
		err := w.AddRoute(r.Namespace, wiring.IPNet(r.Dst), wiring.IP(r.Via), r.Dev, r.Metric)
		switch {
		case errors.Is(err, wiring.ErrRouteExists):
		case err != nil:
			return fmt.Errorf("restore route %s: %w", r, err)
		default:
			logger.Printf("restored route %s", r)
		}
	}
	return nil
}
