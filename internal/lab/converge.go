package lab

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/emu-lab/emu/internal/agent"
	"github.com/emu-lab/emu/internal/plan"
)

// ConvergeTimeout bounds how long deploy waits for BGP sessions: a few hold
// and connect-retry periods of the shipped timers.
const ConvergeTimeout = 20 * time.Second

// awaitBGP waits until every BGP session of the plan is established, so a
// deployed lab is a converged lab. It returns what is still down when the
// time is up: a lab that does not converge is still deployed, for the user
// to inspect, and the reason is named.
func awaitBGP(ctx context.Context, p *plan.Plan, timeout time.Duration) (sessions int, down []string, err error) {
	var configs []string
	for _, st := range p.Stages {
		for _, s := range st.Steps {
			if a, ok := s.(plan.Agent); ok && a.BGP != nil {
				configs = append(configs, agentConfigPath(p.LabDir, a.Node))
				sessions += len(a.BGP.Neighbors)
			}
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		down = down[:0]
		for _, cfg := range configs {
			node := strings.TrimSuffix(filepath.Base(cfg), ".json")
			st, err := agent.ReadState(cfg)
			if err != nil {
				down = append(down, node+": no state yet")
				continue
			}
			for _, n := range st.Neighbors {
				if !n.Established {
					who := ""
					if w, ok := p.ExternalPeers[n.Address]; ok {
						who = " (" + w + ")"
					}
					down = append(down, fmt.Sprintf("%s: neighbor %s%s is %s", node, n.Address, who, n.State))
				}
			}
		}
		if len(down) == 0 || time.Now().After(deadline) {
			return sessions, down, nil
		}
		select {
		case <-ctx.Done():
			return sessions, down, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
