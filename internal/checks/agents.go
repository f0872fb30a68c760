package checks

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/emu-lab/emu/internal/agent"
)

// Agents judges every node agent from its processes and heartbeat (see
// agent.Check): alive passes; dead, hung, restarting or unknown fails, naming
// the agent's log. A restart the agent recovered from passes but shows, so a
// lab that crashed and healed is not mistaken for one that never crashed.
var Agents = Check{Name: "agents", Run: agentsCheck}

func agentsCheck(_ context.Context, l Lab) []Result {
	var out []Result
	for _, h := range agentHealth(l) {
		start := time.Now()
		r := Result{Check: "agent " + h.Node, Passed: h.Alive, Evidence: h.Summary()}
		if !h.Alive {
			r.Evidence += "; log: " + h.Log
		}
		r.Duration = time.Since(start)
		out = append(out, r)
	}
	return out
}

// agentHealth checks the agent of every node that has one.
func agentHealth(l Lab) []agent.Health {
	if l.Dir == "" {
		return nil
	}
	var hs []agent.Health
	for _, n := range l.Topology.Nodes {
		cfg := filepath.Join(l.Dir, "agents", n.Name+".json")
		if _, err := os.Stat(cfg); err == nil {
			hs = append(hs, agent.Check(cfg))
		}
	}
	return hs
}

// agentTrouble names the agents of hs that are not alive and that evidence
// does not name yet (by their log), for a failed check: its traffic or
// state may have depended on them.
func agentTrouble(hs []agent.Health, evidence string) string {
	var bad []string
	for _, h := range hs {
		if !h.Alive && !strings.Contains(evidence, h.Log) {
			bad = append(bad, "agent of "+h.Node+" is "+h.Summary()+", log: "+h.Log)
		}
	}
	return strings.Join(bad, "; ")
}
