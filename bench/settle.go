package bench

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"
)

// Settle waits until the kernel has finished tearing down deleted network
// namespaces, so one run's cleanup does not slow the next one down.
//
// Deleting a namespace only drops its last reference: the teardown (every
// device, and so every veth, route and address in it) runs later on the
// kernel's "netns" workqueue. A kworker executing that work shows it in its
// name as "kworker/...+netns" ("-netns" once idle), so the teardown is done
// when no kworker is at it. The work may be queued a moment after the delete
// returns, hence several clear polls in a row. Settle returns how long it
// waited until the last time it saw the work running.
func Settle(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	const (
		poll       = 10 * time.Millisecond
		clearPolls = 5
	)
	start := time.Now()
	lastBusy := start
	clear := 0
	for clear < clearPolls {
		busy, err := netnsWorkRunning()
		if err != nil {
			return 0, err
		}
		if busy {
			clear, lastBusy = 0, time.Now()
		} else {
			clear++
		}
		if time.Since(start) > timeout {
			return time.Since(start), fmt.Errorf("kernel still tearing down namespaces after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-time.After(poll):
		}
	}
	return lastBusy.Sub(start), nil
}

func netnsWorkRunning() (bool, error) {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return false, err
	}
	for _, p := range procs {
		if c := p.Name()[0]; c < '0' || c > '9' {
			continue
		}
		comm, err := os.ReadFile("/proc/" + p.Name() + "/comm")
		if err != nil {
			continue // the process ended while we looked
		}
		if strings.HasPrefix(string(comm), "kworker/") && strings.Contains(string(comm), "+netns") {
			return true, nil
		}
	}
	return false, nil
}
