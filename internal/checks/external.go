package checks

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/emu-lab/emu/internal/agent"
	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/routing"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/internal/wiring"
)

// externalBGP judges a BGP speaker emu does not run (FRR, say) from what emu
// can see: each emu peer's session with it and the prefixes the peer
// received from it (the node's `networks:`), and in the node's kernel the
// BGP routes to what its emu peers announce. The speaker's own RIB and
// policies are not observed, and the evidence says so.
func externalBGP(l Lab, n *topology.Node) Result {
	start := time.Now()
	r := Result{Check: fmt.Sprintf("bgp %s (%s)", n.Name, n.BGP.Speaker)}
	var seen, problems []string
	for _, d := range lab.Daemons(l.Dir, n.Name) {
		if d.State != "running" {
			problems = append(problems, fmt.Sprintf("daemon %s of %s is %s (log: %s)", d.Name, n.Name, d.State, d.Log))
		}
	}
	kernel, kerr := wiring.Routes(l.NS(n.Name))
	if kerr != nil {
		problems = append(problems, fmt.Sprintf("cannot read %s's kernel routes: %v", n.Name, kerr))
	}
	for _, nb := range n.BGP.Neighbors {
		peer := l.Topology.Owner(nb.Address)
		if peer == nil || peer.BGP == nil || peer.BGP.External() {
			seen = append(seen, fmt.Sprintf("%s: not observed (not emu's speaker)", nb.Address))
			continue
		}
		st, err := agent.ReadState(filepath.Join(l.Dir, "agents", peer.Name+".json"))
		if err != nil {
			problems = append(problems, fmt.Sprintf("no state from %s's agent: %v", peer.Name, err))
			continue
		}
		// The peer's session toward this node, by whichever of its
		// addresses the peer dials.
		i := slices.IndexFunc(st.Neighbors, func(s routing.NeighborState) bool { return l.Topology.Owner(s.Address) == n })
		if i < 0 {
			problems = append(problems, fmt.Sprintf("%s has no session with %s", peer.Name, n.Name))
			continue
		}
		s := st.Neighbors[i]
		seen = append(seen, fmt.Sprintf("%s sees %s AS%d %s (%s accepted)", peer.Name, s.Address, s.PeerASN, s.State, prefixCount(s.Accepted)))
		if !s.Established {
			problems = append(problems, fmt.Sprintf("%s's session with %s %s is %s, not established: is %s running and configured for AS%d ↔ AS%d? (its logs in %s)",
				peer.Name, n.Name, s.Address, s.State, n.BGP.Speaker, n.BGP.ASN, peer.BGP.ASN, filepath.Join(l.Dir, "logs")))
			continue
		}
		for _, p := range n.BGP.Networks {
			if !slices.ContainsFunc(st.Routes, func(rt routing.Route) bool { return rt.Prefix == p && rt.From == s.Address }) {
				problems = append(problems, fmt.Sprintf("%s received no %s from %s: %s does not announce it (or its export policy refuses it)", peer.Name, p, n.Name, n.BGP.Speaker))
			}
		}
		for _, p := range peer.BGP.Networks {
			if kerr != nil {
				break
			}
			if via, ok := bgpRouteIn(kernel, p); ok {
				seen = append(seen, fmt.Sprintf("%s via %s in %s's kernel", p, via, n.Name))
			} else {
				problems = append(problems, fmt.Sprintf("%s (from %s) is not a BGP route in %s's kernel: %s did not accept or install it (FRR refuses eBGP routes without a policy unless `no bgp ebgp-requires-policy`)", p, peer.Name, n.Name, n.BGP.Speaker))
			}
		}
	}
	seen = append(seen, fmt.Sprintf("not observed: %s's own RIB and policies", n.BGP.Speaker))
	r.Passed = len(problems) == 0
	r.Evidence = strings.Join(seen, "; ")
	if !r.Passed {
		r.Evidence = strings.Join(problems, "; ") + "; seen: " + r.Evidence
	}
	r.Duration = time.Since(start)
	return r
}

// bgpRouteIn finds a route to p that BGP installed (protocol bgp, as zebra
// and emu's speakers mark theirs) and returns its next hops.
func bgpRouteIn(routes []wiring.RouteState, p netip.Prefix) (string, bool) {
	for _, r := range routes {
		if r.Dst == p.String() && r.Protocol == "bgp" {
			return strings.Join(r.Via, ","), true
		}
	}
	return "", false
}
