package checks

import (
	"context"
	"fmt"
	"time"

	"github.com/emu-lab/emu/internal/container"
	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/topology"
)

// Nodes judges the liveness of what a node runs besides its agent: a
// container node's container, asked of the engine (its namespace outlives
// it through the /run/netns link, so traffic checks alone could pass on a
// dead one), and each daemon its keeper starts. A failed row names the node
// and says what to do.
var Nodes = Check{Name: "nodes", Run: nodesCheck}

// hasLiveness reports whether a lab has nodes the Nodes check covers.
func hasLiveness(t *topology.Topology) bool {
	for _, n := range t.Nodes {
		if n.Runtime == topology.RuntimeDocker || len(n.Software.Daemons) > 0 {
			return true
		}
	}
	return false
}

func nodesCheck(ctx context.Context, l Lab) []Result {
	var out []Result
	var engine *container.Runtime
	var engineErr error
	for _, n := range l.Topology.Nodes {
		if n.Runtime == topology.RuntimeDocker {
			start := time.Now()
			if engine == nil && engineErr == nil {
				engine, engineErr = container.New()
				if engine != nil {
					defer engine.Close()
				}
			}
			ns := l.NS(n.Name)
			r := Result{Check: "node " + n.Name, Passed: true, Evidence: "container " + ns + " running in the namespace emu wired"}
			err := engineErr
			if err == nil {
				err = engine.Check(ctx, ns)
			}
			if err != nil {
				r.Passed, r.Evidence = false, fmt.Sprintf("node %s is down: %v", n.Name, err)
			}
			r.Duration = time.Since(start)
			out = append(out, r)
		}
		if l.Dir == "" {
			continue
		}
		for _, d := range lab.Daemons(l.Dir, n.Name) {
			r := Result{Check: fmt.Sprintf("daemon %s %s", n.Name, d.Name), Passed: d.State == "running"}
			r.Evidence = d.State
			if d.PID > 0 {
				r.Evidence += fmt.Sprintf(", pid %d", d.PID)
			}
			if !r.Passed {
				r.Evidence = fmt.Sprintf("daemon %s of node %s is %s", d.Name, n.Name, d.State)
			}
			if d.Log != "" {
				r.Evidence += "; log: " + d.Log
			}
			out = append(out, r)
		}
	}
	return out
}
