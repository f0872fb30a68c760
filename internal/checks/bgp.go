package checks

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/emu-lab/emu/internal/agent"
	"github.com/emu-lab/emu/internal/routing"
)

// BGP reads what each node's speaker publishes and requires every session
// Established and every prefix a neighbor originates present as a best path,
// installed in the node's kernel table. It runs first and waits up to
// bgpSettle for that, so checks right after a deploy or a repair judge a
// converged lab.
var BGP = Check{Name: "bgp", Run: bgpCheck}

const bgpSettle = 10 * time.Second

func bgpCheck(ctx context.Context, l Lab) []Result {
	deadline := time.Now().Add(bgpSettle)
	for {
		rs := bgpOnce(l)
		if Passed(rs) || time.Now().After(deadline) || ctx.Err() != nil {
			return rs
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func bgpOnce(l Lab) []Result {
	var out []Result
	for _, n := range l.Topology.Nodes {
		if n.BGP == nil {
			continue
		}
		if n.BGP.External() {
			out = append(out, externalBGP(l, n))
			continue
		}
		start := time.Now()
		r := Result{Check: "bgp " + n.Name}
		st, err := agent.ReadState(filepath.Join(l.Dir, "agents", n.Name+".json"))
		if err != nil {
			r.Evidence = fmt.Sprintf("no state from %s's agent: %v", n.Name, err)
			out = append(out, r)
			continue
		}
		var seen, problems []string
		for _, nb := range st.Neighbors {
			seen = append(seen, fmt.Sprintf("%s AS%d %s (%d prefixes)", nb.Address, nb.PeerASN, nb.State, nb.Accepted))
			if !nb.Established {
				problems = append(problems, fmt.Sprintf("session with %s is %s", nb.Address, nb.State))
			}
		}
		// Several sessions to one peer (a transit router's ECMP) bring the
		// same prefixes: each is judged and shown once, with every nexthop.
		judged := map[netip.Prefix]bool{}
		for _, nb := range n.BGP.Neighbors {
			peer := l.Topology.Owner(nb.Address)
			if peer == nil || peer.BGP == nil {
				continue
			}
			for _, p := range peer.BGP.Networks {
				if judged[p] {
					continue
				}
				judged[p] = true
				// A best path the node originates itself (a connected
				// subnet) is as good as the neighbor's; a learned one must
				// be in the kernel.
				i := slices.IndexFunc(st.Routes, func(r0 routing.Route) bool {
					return r0.Prefix == p && (r0.Installed || !r0.NextHop.IsValid())
				})
				switch {
				case i >= 0 && !st.Routes[i].NextHop.IsValid():
					seen = append(seen, fmt.Sprintf("%s local", p))
				case i >= 0:
					var via []netip.Addr
					for _, r0 := range st.Routes {
						if r0.Prefix == p && r0.Installed {
							via = append(via, r0.NextHop)
						}
					}
					slices.SortFunc(via, netip.Addr.Compare) // the RIB's order varies between runs
					hops := make([]string, 0, len(via))
					for _, a := range slices.Compact(via) {
						hops = append(hops, a.String())
					}
					seen = append(seen, fmt.Sprintf("%s via %s", p, strings.Join(hops, ", ")))
				case slices.ContainsFunc(st.Routes, func(r0 routing.Route) bool { return r0.Prefix == p }):
					problems = append(problems, fmt.Sprintf("%s (from %s) is not installed in the kernel", p, peer.Name))
				default:
					problems = append(problems, fmt.Sprintf("%s (from %s) is not in the RIB", p, peer.Name))
				}
			}
		}
		r.Passed = len(problems) == 0
		r.Evidence = strings.Join(seen, "; ")
		if !r.Passed {
			r.Evidence = strings.Join(problems, "; ") + "; seen: " + r.Evidence
		}
		r.Duration = time.Since(start)
		out = append(out, r)
	}
	return out
}
