// Package agent is the long-lived process emu starts inside a node's
// namespace for what must outlive the deploy command: today the userspace
// ESP dataplane. It reads its configuration from a 0600 file in the lab
// directory, says "ready" (or why not) on a pipe, and runs until SIGTERM.
package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/ipsec/userspace"
	"github.com/emu-lab/emu/internal/monitor"
	"github.com/emu-lab/emu/internal/routing"
)

// Config is what one node's agent runs.
type Config struct {
	Lab      string           `json:"lab"`
	Node     string           `json:"node"`
	Tunnels  []ipsec.Conn     `json:"tunnels,omitempty"`
	Monitors []monitor.Config `json:"monitors,omitempty"`
	BGP      *routing.Config  `json:"bgp,omitempty"`
}

// ReadyFD is the descriptor (the first of ExtraFiles) the agent reports on.
const ReadyFD = 3

// Ready is the line an agent writes when it serves.
const Ready = "ready"

// Run starts what the config asks and blocks until SIGTERM or SIGINT. Setup
// errors are reported on the ready pipe too, so the deploy can show them.
func Run(configPath string) error {
	ready := os.NewFile(ReadyFD, "ready")
	report := func(msg string) {
		if ready != nil {
			fmt.Fprintln(ready, msg)
			ready.Close()
			ready = nil
		}
	}
	err := serve(configPath, func() { report(Ready) })
	if err != nil {
		report("error: " + err.Error())
	}
	return err
}

func serve(configPath string, ready func()) error {
	data, err := os.ReadFile(configPath)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	var cfg Config
	if err := json.Unmarshal(data, &cfg); err != nil {
		return fmt.Errorf("config %s: %w", configPath, err)
	}
	logger := log.New(os.Stderr, fmt.Sprintf("agent %s/%s: ", cfg.Lab, cfg.Node), log.LstdFlags|log.Lmicroseconds)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var dp *userspace.Dataplane
	if len(cfg.Tunnels) > 0 {
		if dp, err = userspace.Start(cfg.Tunnels, logger); err != nil {
			return err
		}
		defer dp.Close()
		for _, t := range cfg.Tunnels {
			logger.Printf("tunnel %s up: %s %s → %s, spi out 0x%08x in 0x%08x (userspace ESP)", t.Name, t.Interface, t.Local, t.Remote, t.Out.SPI, t.In.SPI)
		}
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
	if speaker != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			publish(ctx, configPath, speaker, 500*time.Millisecond)
		}()
	}
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
	ready()
	<-ctx.Done()
	wg.Wait()
	if dp != nil {
		stats, _ := json.Marshal(dp.Stats())
		logger.Printf("stopping; counters %s", stats)
	}
	return nil
}
