package topology

import (
	"fmt"
	"net/netip"
	"slices"
)

// checkBGPRecursion finds tunnel endpoints that BGP would route into a
// tunnel. A node that runs BGP over a tunnel installs what its peer
// announces with the tunnel as next hop. If one of those prefixes covers the
// remote endpoint of that tunnel (or of another tunnel of the node) and
// nothing more specific pins the endpoint to the plain path, the node sends
// the tunnel's own ESP into a tunnel: the tunnel dies, BGP withdraws the
// prefix after its hold time, the tunnel comes back, BGP installs the prefix
// again (measured: a bounce every ~10 s, 49% loss, an agent at 120% CPU).
// checkTunnels catches the same loop through static routes; this works out
// what BGP would install. One error per endpoint: one pin fixes it.
func (r *resolver) checkBGPRecursion() {
	for _, x := range r.t.Nodes {
		if x.BGP == nil {
			continue
		}
		learned := map[int][]announcement{} // by neighbor, for the sessions over a tunnel
		for i, nb := range x.BGP.Neighbors {
			if g := r.t.Owner(nb.Address); tunnelOf(x, nb.Address) != nil && g != nil && g != x && g.BGP != nil {
				learned[i] = announcedTo(r.t, g, x)
			}
		}
		for _, t := range x.Tunnels {
			r.checkEndpointPinned(x, t, learned)
		}
	}
}

// checkEndpointPinned reports the first session of x over which x learns a
// prefix covering t's remote endpoint that no route of x beats (the most
// specific such prefix of that session).
func (r *resolver) checkEndpointPinned(x *Node, t *Tunnel, learned map[int][]announcement) {
	for i, nb := range x.BGP.Neighbors {
		var worst *announcement
		for _, a := range learned[i] {
			if a.prefix.Contains(t.Remote) && !pinned(x, t.Remote, a.prefix) && (worst == nil || a.prefix.Bits() > worst.prefix.Bits()) {
				worst = &a
			}
		}
		if worst == nil {
			continue
		}
		via := tunnelOf(x, nb.Address)
		endpoint := fmt.Sprintf("the tunnel's own remote endpoint %s", t.Remote)
		if via != t {
			endpoint = fmt.Sprintf("the remote endpoint %s of tunnel %s", t.Remote, t.Name)
		}
		r.at(nb.Line, "node %q learns %s over BGP from %q (%s) through tunnel %s (%s), and that prefix covers %s: BGP would route the ESP of tunnel %s into a tunnel (recursive routing: the tunnel breaks, BGP withdraws the route after the hold time, the tunnel comes back, and so on every few seconds). %s, or stop announcing %s over the tunnel",
			x.Name, worst.prefix, r.t.Owner(nb.Address).Name, nb.Address, via.Name, worst.origin(), endpoint, t.Name, pinFix(x, t.Remote), worst.prefix)
		return
	}
}

// announcement is a prefix a BGP speaker originates.
type announcement struct {
	prefix netip.Prefix
	node   *Node
	how    string // networks, redistribute connected, redistribute static
}

func (a announcement) origin() string {
	return fmt.Sprintf("originated by %q: %s, bgp at line %d", a.node.Name, a.how, a.node.BGP.Line)
}

// maxPathSteps bounds the path search below: a lab has a handful of BGP
// speakers, but a generated or hostile file must not make validation
// exponential. Past the bound fewer announcements are found, never false
// ones.
const maxPathSteps = 10000

// announcedTo lists what x may receive from its neighbor g: what g
// originates and, since eBGP passes on what it learns, what reaches g from
// its other neighbors. A speaker refuses a route whose AS path holds its
// own ASN (RFC 4271 §9.1.2), and eBGP prepends the sender's ASN
// (§5.1.2); neighbor policies are not modelled (emu sets none that
// filter).
func announcedTo(t *Topology, g, x *Node) []announcement {
	var out []announcement
	steps := 0
	// walk visits sender cur, whose routes pass through the receivers in
	// chain (x first, the node cur sends to last).
	var walk func(cur *Node, chain []*Node)
	walk = func(cur *Node, chain []*Node) {
		steps++
		next := chain[len(chain)-1]
		if steps > maxPathSteps || cur.BGP.ASN != next.BGP.ASN && slices.ContainsFunc(chain, func(n *Node) bool { return n.BGP.ASN == cur.BGP.ASN }) {
			return
		}
		out = append(out, originated(cur)...)
		chain = append(chain, cur)
		for _, nb := range cur.BGP.Neighbors {
			p := t.Owner(nb.Address)
			if p != nil && p.BGP != nil && !slices.Contains(chain, p) {
				walk(p, slices.Clip(chain))
			}
		}
	}
	walk(g, []*Node{x})
	return out
}

// originated is what n's speaker announces of its own: its networks and,
// as the agent redistributes them, the IPv4 routes of its main table.
func originated(n *Node) []announcement {
	var out []announcement
	for _, p := range n.BGP.Networks {
		out = append(out, announcement{p, n, "networks"})
	}
	for _, how := range n.BGP.Redistribute {
		switch how {
		case "connected":
			for _, ifc := range n.Interfaces {
				for _, p := range ifc.Addrs {
					if p.Addr().Is4() && !p.IsSingleIP() {
						out = append(out, announcement{p.Masked(), n, "redistribute connected"})
					}
				}
			}
			for _, t := range n.Tunnels {
				if t.Address.IsValid() && t.Address.Addr().Is4() {
					out = append(out, announcement{t.Address.Masked(), n, "redistribute connected"})
				}
			}
		case "static":
			for _, rt := range n.Routes {
				if rt.Dst.Addr().Is4() {
					out = append(out, announcement{rt.Dst, n, "redistribute static"})
				}
			}
		}
	}
	return out
}

// pinned reports whether x reaches e over a route that beats a BGP route
// to p: a connected subnet or a static route off the tunnels, more specific
// than p, or as specific with a lower metric than x's BGP routes.
func pinned(x *Node, e netip.Addr, p netip.Prefix) bool {
	if ifc := x.Connected(e); ifc != nil {
		for _, a := range ifc.Addrs {
			if a.Contains(e) && a.Bits() >= p.Bits() {
				return true
			}
		}
	}
	for _, rt := range x.Routes {
		if rt.Dst.Contains(e) && !intoTunnel(x, rt) && (rt.Dst.Bits() > p.Bits() || rt.Dst.Bits() == p.Bits() && rt.Metric < x.BGP.Metric) {
			return true
		}
	}
	return false
}

func intoTunnel(n *Node, rt Route) bool {
	return n.Tunnel(rt.Dev) != nil || rt.Via.IsValid() && tunnelOf(n, rt.Via) != nil
}

// pinFix says how to pin e to x's plain path: a host route through the
// next hop x already uses for e off the tunnels, or through its BGP
// neighbor on a plain link.
func pinFix(x *Node, e netip.Addr) string {
	hop := ""
	best := -1
	for _, rt := range x.Routes {
		if rt.Dst.Contains(e) && !intoTunnel(x, rt) && rt.Dst.Bits() > best {
			best = rt.Dst.Bits()
			if rt.Via.IsValid() {
				hop = "via: " + rt.Via.String()
			} else {
				hop = "dev: " + rt.Dev
			}
		}
	}
	if hop == "" {
		for _, nb := range x.BGP.Neighbors {
			if tunnelOf(x, nb.Address) == nil && x.Connected(nb.Address) != nil {
				hop = "via: " + nb.Address.String()
				break
			}
		}
	}
	if hop == "" {
		hop = "via: NEXT-HOP-ON-THE-PLAIN-PATH"
	}
	return fmt.Sprintf("Pin the endpoint to the plain path on %q with a more specific static route: add `{dst: %s, %s}` to its `routes:`", x.Name, netip.PrefixFrom(e, e.BitLen()), hop)
}
