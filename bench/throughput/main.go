// Command throughput measures the userspace ESP dataplane: it deploys
// topologies/static.yaml under a fresh lab name, then streams one TCP flow
// client → ECS through the tunnel (encrypted) and, with the tunnel routes
// withdrawn, over the same private path in clear (plain), N times, and prints
// both rates, their ratio and the drop counters against the targets.
//
//	sudo go run ./bench/throughput [-n 5] [-d 5s]
//
// The program plays the node agents itself (started again with
// asAgentEnv set), so it measures the dataplane of the tree it was built from.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/emu-lab/emu/internal/agent"
)

// Targets of the userspace dataplane (issue: ESP throughput).
const (
	targetGbps  = 1.0
	stretchRate = 0.3 // encrypted / plain
)

const asAgentEnv = "EMU_BENCH_AS_AGENT"

func main() {
	if os.Getenv(asAgentEnv) == "1" {
		if err := agent.Run(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "agent:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	runs := flag.Int("n", 5, "repetitions of the plain/encrypted pair")
	dur := flag.Duration("d", 5*time.Second, "length of each TCP stream")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "throughput: needs root (it creates network namespaces)")
		os.Exit(2)
	}
	// A Ctrl-C cancels the deploy (which then rolls back) or ends the
	// current stream; the deferred destroy runs either way.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Piped into head, a write must fail, not kill the program before its
	// deferred destroy.
	signal.Ignore(syscall.SIGPIPE)
	if err := run(ctx, *runs, *dur); err != nil {
		fmt.Fprintln(os.Stderr, "throughput:", err)
		os.Exit(1)
	}
}

// loadAverage is the 1, 5 and 15 minute load: the machine is shared, and
// other work moves the numbers.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return err.Error()
	}
	f := strings.Fields(string(data))
	return strings.Join(f[:min(3, len(f))], " ")
}

func run(ctx context.Context, runs int, d time.Duration) (err error) {
	l, err := deploy(ctx)
	if err != nil {
		return err
	}
	defer func() {
		counters, derr := l.destroy()
		if derr != nil && err == nil {
			err = derr
		}
		if derr == nil {
			printCounters(os.Stdout, counters)
		}
	}()
	fmt.Fprintf(os.Stdout, "load average before: %s\n", loadAverage())
	defer func() { fmt.Fprintf(os.Stdout, "load average after:  %s\n", loadAverage()) }()
	var rows []row
	for i := range runs {
		r, err := l.measure(ctx, d)
		if err != nil {
			return fmt.Errorf("run %d: %w", i+1, err)
		}
		rows = append(rows, r)
		fmt.Fprintf(os.Stderr, "run %d/%d: plain %.2f Gbit/s, encrypted %.2f Gbit/s\n", i+1, runs, r.plain/1e9, r.encrypted/1e9)
	}
	return printRuns(os.Stdout, rows)
}
