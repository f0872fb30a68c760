package nodes

import (
	"fmt"

	"github.com/emu-lab/emu/internal/topology"
)

// methods are the guide's configuration methods (SPEC §3), by the value of
// the top-level `method:`. They differ in the routing between the data
// center and the cloud: the VBR's toward the on-premises gateway (static, or
// a BGP session with it) and the VPN gateway's over the tunnel (static, or
// BGP). Inside the cloud (VBR ↔ CEN ↔ VPC) BGP models the provider's own
// route propagation under every method.
var methods = map[string]struct {
	number     int
	summary    string
	vbrBGP     bool // the VBR peers with the on-premises gateway
	gatewayBGP bool // the VPN gateway (and the on-premises gateway) run BGP
}{
	"static":     {1, "static routes on the VBR and on the VPN gateway", false, false},
	"static-bgp": {2, "static routes on the VBR, BGP on the VPN gateway", false, true},
	"bgp":        {3, "BGP on the VBR and on the VPN gateway", true, true},
}

// methodFollowed enforces the top-level `method:`: a file that names a
// method gets that method's routing, never a silent mix. Without `method:`
// nothing is enforced (the VBR/VPN gateway pairing rule still holds).
func methodFollowed(t *topology.Topology) []problem {
	m, ok := methods[t.Method]
	if !ok {
		return nil
	}
	var out []problem
	say := func(line int, what, fix string) {
		out = append(out, problemf(line, "%s, but `method: %s` (line %d) is the guide's method %d: %s. %s, or drop `method:`", what, t.Method, t.MethodLine, m.number, m.summary, fix))
	}
	for _, n := range t.Nodes {
		switch {
		case n.Roles.CircuitEnd:
			nb := onpremNeighbor(t, n)
			switch {
			case nb != nil && !m.vbrBGP:
				say(nb.Line, fmt.Sprintf("VBR %q peers with the on-premises gateway over BGP (%s)", n.Name, nb.Address), "Route to the data center with a static route instead, or set `method: bgp`")
			case nb == nil && m.vbrBGP:
				say(n.Line, fmt.Sprintf("VBR %q has no BGP session with the on-premises gateway", n.Name), "Add `bgp:` with the on-premises gateway as a neighbor, or set `method: static-bgp`")
			}
		case n.Roles.CloudEdge:
			switch {
			case len(n.Tunnels) == 0:
			case n.BGP != nil && !m.gatewayBGP:
				say(n.BGP.Line, fmt.Sprintf("VPN gateway %q runs BGP", n.Name), "Remove its `bgp:` and publish static routes, or set `method: static-bgp` (or bgp)")
			case n.BGP == nil && m.gatewayBGP:
				say(n.Line, fmt.Sprintf("VPN gateway %q has no `bgp:`", n.Name), "Add `bgp:` with the on-premises gateway's tunnel address as a neighbor, or set `method: static`")
			}
		case n.Roles.CustomerEdge:
			if n.BGP != nil && !m.gatewayBGP {
				say(n.BGP.Line, fmt.Sprintf("on-premises gateway %q runs BGP", n.Name), "Remove its `bgp:` and route statically, or set `method: static-bgp` (or bgp)")
			}
		}
	}
	return out
}

// onpremNeighbor is n's BGP neighbor on a customer edge (an on-premises
// gateway), or nil.
func onpremNeighbor(t *topology.Topology, n *topology.Node) *topology.Neighbor {
	if n.BGP == nil {
		return nil
	}
	for i, nb := range n.BGP.Neighbors {
		if peer := t.Owner(nb.Address); peer != nil && peer.Roles.CustomerEdge {
			return &n.BGP.Neighbors[i]
		}
	}
	return nil
}
