// Package agent is the long-lived process emu starts inside a node's
// namespace for what must outlive the deploy command: today the userspace
// ESP dataplane. It reads its configuration from a 0600 file in the lab
// directory, says "ready" (or why not) on a pipe, and runs until SIGTERM.
package agent

import (
	"encoding/json"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/ipsec/userspace"
)

// Config is what one node's agent runs.
type Config struct {
	Lab     string       `json:"lab"`
	Node    string       `json:"node"`
	Tunnels []ipsec.Conn `json:"tunnels"`
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
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	dp, err := userspace.Start(cfg.Tunnels, logger)
	if err != nil {
		return err
	}
	defer dp.Close()
	for _, t := range cfg.Tunnels {
		logger.Printf("tunnel %s up: %s %s → %s, spi out 0x%08x in 0x%08x (userspace ESP)", t.Name, t.Interface, t.Local, t.Remote, t.Out.SPI, t.In.SPI)
	}
	ready()
	sig := <-stop
	stats, _ := json.Marshal(dp.Stats())
	logger.Printf("stopping on %s; counters %s", sig, stats)
	return nil
}
