package lab

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/emu-lab/emu/internal/agent"
	"github.com/emu-lab/emu/internal/ipsec/ike"
	"github.com/emu-lab/emu/internal/plan"
)

// ConvergeTimeout bounds how long deploy waits for IKE and for BGP, each: a
// few hold and connect-retry periods of the shipped timers, and several
// IKE retransmissions.
const ConvergeTimeout = 20 * time.Second

// awaited is what deploy waits for once the lab is complete, read from the
// agents' published state: IKE phase 2 of every IKE-keyed connection, then
// every BGP session (BGP over a tunnel needs the tunnel first).
type awaited struct {
	stage   string
	count   int      // connections or sessions
	configs []string // the agents' config paths
	// pending lists what a node's state shows not yet up.
	pending func(node string, st *agent.State) []pending
}

// pending is one connection or session not up yet; final when waiting
// longer cannot change it (IKE failed with a reason: wrong key, no
// proposal chosen), so deploy reports it at once.
type pending struct {
	what  string
	final bool
}

// awaitedStages lists the waits p needs, IKE first.
func awaitedStages(p *plan.Plan) []awaited {
	ikeWait := awaited{stage: "ike"}
	bgpWait := awaited{stage: "bgp"}
	ikeConns := map[string]int{} // per config path
	for _, st := range p.Stages {
		for _, s := range st.Steps {
			a, ok := s.(plan.Agent)
			if !ok {
				continue
			}
			cfg := agentConfigPath(p.LabDir, a.Node)
			for _, c := range a.Tunnels {
				if c.IKE != nil {
					ikeConns[cfg]++
				}
			}
			ikeConns[cfg] += len(a.XFRM) // IKE-keyed kernel tunnels
			if ikeConns[cfg] > 0 {
				ikeWait.configs = append(ikeWait.configs, cfg)
				ikeWait.count += ikeConns[cfg]
			}
			if a.BGP != nil {
				bgpWait.configs = append(bgpWait.configs, cfg)
				bgpWait.count += len(a.BGP.Neighbors)
			}
		}
	}
	ikeWait.pending = func(node string, st *agent.State) []pending {
		var down []pending
		up := 0
		for _, s := range st.IKE {
			if s.Phase2 == ike.StateEstablished {
				up++
				continue
			}
			what := fmt.Sprintf("%s: connection %s phase 1 %s, phase 2 %s", node, s.Name, s.Phase1, s.Phase2)
			// Phase 2 often repeats phase 1's reason (no CHILD SA without an
			// IKE SA): said once.
			reasons := []string{}
			for _, r := range []string{s.Phase1Reason, s.Phase2Reason} {
				if r != "" && !slices.Contains(reasons, r) {
					reasons = append(reasons, r)
				}
			}
			if len(reasons) > 0 {
				what += " (" + strings.Join(reasons, "; ") + ")"
			}
			down = append(down, pending{what, s.Phase1 == ike.StateFailed || s.Phase2 == ike.StateFailed})
		}
		if want := ikeConns[agentConfigPath(p.LabDir, node)]; len(down) == 0 && up < want {
			down = append(down, pending{what: fmt.Sprintf("%s: %d of %d connections reported", node, up, want)})
		}
		return down
	}
	bgpWait.pending = func(node string, st *agent.State) []pending {
		var down []pending
		for _, n := range st.Neighbors {
			if !n.Established {
				who := ""
				if w, ok := p.ExternalPeers[n.Address]; ok {
					who = " (" + w + ")"
				}
				down = append(down, pending{what: fmt.Sprintf("%s: neighbor %s%s is %s", node, n.Address, who, n.State)})
			}
		}
		return down
	}
	var out []awaited
	for _, w := range []awaited{ikeWait, bgpWait} {
		if w.count > 0 {
			out = append(out, w)
		}
	}
	return out
}

// await waits until nothing of w is pending, so a deployed lab is a
// negotiated and converged lab. It returns what is still down when the time
// is up, or at once when only final failures are left: a lab that does not
// converge is still deployed, for the user to inspect, and the reason is
// named. It returns ctx's error if ctx ends first.
func (w awaited) await(ctx context.Context, timeout time.Duration) (down []string, err error) {
	deadline := time.Now().Add(timeout)
	for {
		down = down[:0]
		final := true
		for _, cfg := range w.configs {
			node := strings.TrimSuffix(filepath.Base(cfg), ".json")
			st, err := agent.ReadState(cfg)
			if err != nil {
				down, final = append(down, node+": no state yet"), false
				continue
			}
			for _, p := range w.pending(node, st) {
				down, final = append(down, p.what), final && p.final
			}
		}
		if len(down) == 0 || final || time.Now().After(deadline) {
			return down, nil
		}
		select {
		case <-ctx.Done():
			return down, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
