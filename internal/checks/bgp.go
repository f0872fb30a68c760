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
	"github.com/emu-lab/emu/internal/topology"
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
			seen = append(seen, fmt.Sprintf("%s AS%d %s (%s)", nb.Address, nb.PeerASN, nb.State, prefixCount(nb.Accepted)))
			if !nb.Established {
				problems = append(problems, fmt.Sprintf("session with %s is %s", nb.Address, nb.State))
			}
		}
		// Several sessions to one peer (a transit router's ECMP) bring the
		// same prefixes: each is judged and shown once, with every nexthop.
		// Each session must still have brought them: one Established a
		// moment ago may have sent none yet, and a lab judged then would
		// pass with one nexthop of two.
		judged := map[netip.Prefix]bool{}
		for _, nb := range n.BGP.Neighbors {
			// Only the sessions the state lists are judged above: one the
			// topology configures must be among them.
			if !slices.ContainsFunc(st.Neighbors, func(s routing.NeighborState) bool { return s.Address == nb.Address }) {
				problems = append(problems, fmt.Sprintf("%s's agent reports no session with %s, which the topology configures (line %d)", n.Name, nb.Address, nb.Line))
			}
			peer := l.Topology.Owner(nb.Address)
			if peer == nil || peer.BGP == nil {
				continue
			}
			if p := missingPrefixes(st.Neighbors, nb.Address, peer); p != "" {
				problems = append(problems, p)
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

// missingPrefixes names an Established session to addr that has accepted
// fewer prefixes than peer originates (its BGP Networks; GoBGP's accepted
// count of the IPv4 unicast Adj-RIB-In, RFC 4271 §3.2), "" when it has all
// of them, the session is not up or not listed (bgpOnce names those). The
// count is a lower bound: a peer that also passes on others' prefixes may
// reach it while one of its own is missing, which the RIB check then names.
func missingPrefixes(seen []routing.NeighborState, addr netip.Addr, peer *topology.Node) string {
	i := slices.IndexFunc(seen, func(nb routing.NeighborState) bool { return nb.Address == addr })
	want := uint64(len(peer.BGP.Networks))
	if i < 0 || !seen[i].Established || seen[i].Accepted >= want {
		return ""
	}
	return fmt.Sprintf("session with %s is established but has brought %d of the %s %s originates", addr, seen[i].Accepted, prefixCount(want), peer.Name)
}

// prefixCount is "1 prefix", "3 prefixes".
func prefixCount(n uint64) string {
	if n == 1 {
		return "1 prefix"
	}
	return fmt.Sprintf("%d prefixes", n)
}
