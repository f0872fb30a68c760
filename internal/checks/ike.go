package checks

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/emu-lab/emu/internal/agent"
	"github.com/emu-lab/emu/internal/ipsec/ike"
	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/topology"
)

// IKE reads the negotiation state each gateway's agent publishes and
// requires phase 1 (the IKE SA) and phase 2 (the CHILD SA) of every
// IKE-keyed connection established, reporting them the way the provider's
// console does: the chosen proposals, or the reason of the failure. It
// waits up to ikeSettle, as a deploy returns before the gateways finish.
var IKE = Check{Name: "ike", Run: ikeCheck}

const ikeSettle = 15 * time.Second

func ikeCheck(ctx context.Context, l Lab) []Result {
	deadline := time.Now().Add(ikeSettle)
	for {
		rs, settled := ikeOnce(l)
		if settled || time.Now().After(deadline) || ctx.Err() != nil {
			return rs
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func hasIKE(l Lab) bool {
	for _, n := range l.Topology.Nodes {
		for _, t := range n.Tunnels {
			if t.IKE != nil {
				return true
			}
		}
	}
	return false
}

// ikeOnce reads the state once; settled is true when every connection is
// established or failed: a proposal, key or identity mismatch does not
// heal by waiting.
func ikeOnce(l Lab) (_ []Result, settled bool) {
	var out []Result
	settled = true
	states := map[string]*agent.State{}
	readErrs := map[string]error{}
	status := func(node, conn string) (*ike.Status, string) {
		st, seen := states[node]
		if !seen {
			st, readErrs[node] = agent.ReadState(filepath.Join(l.Dir, "agents", node+".json"))
			states[node] = st
		}
		if err := readErrs[node]; err != nil {
			return nil, fmt.Sprintf("no state from %s's agent: %v", node, err)
		}
		for i := range st.IKE {
			if st.IKE[i].Name == conn {
				return &st.IKE[i], ""
			}
		}
		return nil, fmt.Sprintf("%s's agent reports no IKE state for %s", node, conn)
	}
	for _, n := range l.Topology.Nodes {
		for _, t := range n.Tunnels {
			if t.IKE == nil {
				continue
			}
			start := time.Now()
			r := Result{Check: fmt.Sprintf("ike %s %s", n.Name, t.Name)}
			// An end run by software is judged from its emu peer's side,
			// and by its daemons being alive.
			node, conn, prefix, suffix := n.Name, t.Name, "", ""
			var dead []string
			if t.External() {
				r.Check += " (" + t.Speaker + ")"
				node, conn = t.Peer.Node, t.Peer.Interface
				if pt := l.Topology.Node(node).Tunnel(t.Peer.Interface); pt != nil {
					conn = pt.Name
				}
				prefix = fmt.Sprintf("%s's end %s: ", node, conn)
				suffix = fmt.Sprintf("; not observed: %s's own SAs", t.Speaker)
				for _, d := range lab.Daemons(l.Dir, n.Name) {
					if d.State != "running" {
						dead = append(dead, fmt.Sprintf("daemon %s of %s is %s (log: %s)", d.Name, n.Name, d.State, d.Log))
					}
				}
			}
			switch s, problem := status(node, conn); {
			case s == nil:
				settled = false
				r.Evidence = problem
			default:
				r.Passed = s.Phase1 == ike.StateEstablished && s.Phase2 == ike.StateEstablished && len(dead) == 0
				r.Evidence = prefix + DescribeIKE(*s) + suffix
				if !r.Passed && s.Phase1 != ike.StateFailed && s.Phase2 != ike.StateFailed && len(dead) == 0 {
					settled = false
				}
			}
			if len(dead) > 0 {
				r.Evidence = strings.Join(dead, "; ") + "; " + r.Evidence
			}
			r.Duration = time.Since(start)
			out = append(out, r)
		}
	}
	return out, settled
}

// ikeDown reports, for IKE-keyed connection tun of node gw, whether its
// IKE SA is no longer established, and what the agent says of it: a broken
// tunnel must be seen by DPD, not only by the traffic. An end run by
// software is read from its emu peer's side, as the ike check does.
func ikeDown(l Lab, gw string, tun *topology.Tunnel) (bool, string) {
	node, conn := gw, tun.Name
	if tun.External() {
		node, conn = tun.Peer.Node, tun.Peer.Interface
		if pt := l.Topology.Node(node).Tunnel(tun.Peer.Interface); pt != nil {
			conn = pt.Name
		}
	}
	st, err := agent.ReadState(filepath.Join(l.Dir, "agents", node+".json"))
	if err != nil {
		return false, err.Error()
	}
	for _, s := range st.IKE {
		if s.Name == conn {
			return s.Phase1 != ike.StateEstablished, "IKE of " + conn + " on " + node + ": " + DescribeIKE(s)
		}
	}
	return false, fmt.Sprintf("%s's agent reports no IKE state for %s", node, conn)
}

// DescribeIKE spells a connection's state like the provider's console:
// each phase, then what was negotiated or why it failed.
func DescribeIKE(s ike.Status) string {
	p1 := "phase 1 " + s.Phase1
	if s.Phase1Reason != "" {
		p1 += ": " + s.Phase1Reason
	} else if s.Phase1 == ike.StateEstablished {
		p1 += " (" + s.IKEProposal + ")"
	}
	p2 := "phase 2 " + s.Phase2
	switch {
	case s.Phase2Reason != "" && s.Phase1 == ike.StateEstablished:
		p2 += ": " + s.Phase2Reason
	case s.Phase2 == ike.StateEstablished:
		transport := "ESP"
		if s.Encap {
			transport = "ESP in UDP/4500"
		}
		p2 += fmt.Sprintf(" (%s, %s, in 0x%08x out 0x%08x, %s === %s)", s.ESPProposal, transport, s.InSPI, s.OutSPI,
			strings.Join(s.LocalTS, ","), strings.Join(s.RemoteTS, ","))
	}
	out := p1 + "; " + p2
	if s.IKERekeys+s.ChildRekeys > 0 {
		out += fmt.Sprintf("; rekeyed %d× IKE, %d× CHILD", s.IKERekeys, s.ChildRekeys)
	}
	return out
}
