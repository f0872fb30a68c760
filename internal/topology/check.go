package topology

import (
	"net/netip"
	"strings"
)

// check validates what spans several entries: references between nodes,
// interfaces and links, and the address plan.
func (r *resolver) check() {
	t := r.t
	nodes := map[string]*Node{}
	for _, n := range t.Nodes {
		nodes[n.Name] = n
	}
	r.checkLinks(nodes)
	r.checkAddresses()
	for _, n := range t.Nodes {
		r.checkRoutes(n)
	}
	r.checkTunnels()
	r.checkBGP()
	r.checkBGPRecursion()
}

func (r *resolver) checkLinks(nodes map[string]*Node) {
	usedBy := map[Endpoint]int{} // endpoint -> line of the link using it
	for _, l := range r.t.Links {
		if l.Ends[0] == l.Ends[1] {
			r.at(l.Line, "link %s – %s connects an interface to itself: name two different interfaces", l.Ends[0], l.Ends[1])
			continue
		}
		for _, e := range l.Ends {
			n, ok := nodes[e.Node]
			if !ok {
				r.at(l.Line, "link %q: node %q is not declared (declared: %s)", e.String(), e.Node, nodeNames(r.t))
				continue
			}
			if e.Interface == Loopback {
				r.at(l.Line, "link %q: %s is the loopback interface and cannot be wired: use an interface like eth1", e.String(), Loopback)
				continue
			}
			if n.Interface(e.Interface) == nil {
				r.at(l.Line, "link %q: node %q has no interface %s (declared: %s): add it under the node's `interfaces:`", e.String(), e.Node, e.Interface, strings.Join(n.InterfaceNames(), ", "))
				continue
			}
			if prev, dup := usedBy[e]; dup {
				r.at(l.Line, "link %q: interface %s is already wired by the link at line %d: each interface takes one link", e.String(), e.String(), prev)
				continue
			}
			usedBy[e] = l.Line
		}
		r.checkLinkSubnet(l, nodes)
	}
	for _, n := range r.t.Nodes {
		for _, ifc := range n.Interfaces {
			if ifc.Name == Loopback {
				continue
			}
			if _, wired := usedBy[Endpoint{n.Name, ifc.Name}]; !wired {
				r.at(ifc.Line, "interface %s:%s is declared but no link uses it: add a link or remove the interface", n.Name, ifc.Name)
			}
		}
	}
}

// checkLinkSubnet requires that both ends of a link, when addressed in the
// same family, share a subnet: otherwise neither can reach the other.
func (r *resolver) checkLinkSubnet(l *Link, nodes map[string]*Node) {
	var ifcs [2]*Interface
	for i, e := range l.Ends {
		n := nodes[e.Node]
		if n == nil {
			return
		}
		if ifcs[i] = n.Interface(e.Interface); ifcs[i] == nil {
			return
		}
	}
	for _, fam4 := range []bool{true, false} {
		a, b := family(ifcs[0].Addrs, fam4), family(ifcs[1].Addrs, fam4)
		if len(a) == 0 || len(b) == 0 || shareSubnet(a, b) {
			continue
		}
		r.at(l.Line, "link %s – %s: addresses %s and %s are in different subnets: put both ends in one subnet", l.Ends[0], l.Ends[1], a[0], b[0])
	}
}

func family(ps []netip.Prefix, v4 bool) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.Addr().Is4() == v4 {
			out = append(out, p)
		}
	}
	return out
}

func shareSubnet(a, b []netip.Prefix) bool {
	for _, x := range a {
		for _, y := range b {
			if x.Masked() == y.Masked() {
				return true
			}
		}
	}
	return false
}

// checkAddresses rejects an address used twice in the lab and two interfaces
// of one node with overlapping subnets (the kernel would pick one silently).
func (r *resolver) checkAddresses() {
	owner := map[netip.Addr]string{}
	for _, n := range r.t.Nodes {
		for i, ifc := range n.Interfaces {
			for _, p := range ifc.Addrs {
				where := n.Name + ":" + ifc.Name
				if prev, dup := owner[p.Addr()]; dup {
					r.at(ifc.Line, "address %s on %s is already used by %s: every address in a lab must be unique", p.Addr(), where, prev)
				} else {
					owner[p.Addr()] = where
				}
				if ifc.Name == Loopback || p.IsSingleIP() {
					continue
				}
				for _, other := range n.Interfaces[i+1:] {
					if other.Name == Loopback {
						continue
					}
					for _, q := range other.Addrs {
						if !q.IsSingleIP() && p.Overlaps(q) {
							r.at(other.Line, "node %q: subnet %s on %s overlaps %s on %s: give each interface its own subnet", n.Name, q.Masked(), other.Name, p.Masked(), ifc.Name)
						}
					}
				}
			}
		}
	}
}

func (r *resolver) checkRoutes(n *Node) {
	seen := map[[2]any]int{}
	for _, rt := range n.Routes {
		key := [2]any{rt.Dst, rt.Metric}
		if prev, dup := seen[key]; dup {
			r.at(rt.Line, "node %q: a route to %s with metric %d is already given at line %d: keep one, or give them different metrics", n.Name, rt.Dst, rt.Metric, prev)
		}
		seen[key] = rt.Line
		if t := n.Tunnel(rt.Dev); t != nil {
			if rt.Via.IsValid() && !(t.Address.IsValid() && t.Address.Contains(rt.Via)) {
				r.at(rt.Line, "node %q route to %s: next hop %s is not inside tunnel %s's address (%s)", n.Name, rt.Dst, rt.Via, t.Interface, t.Address)
			}
			continue
		}
		if rt.Dev != "" && n.Interface(rt.Dev) == nil {
			r.at(rt.Line, "node %q route to %s: dev %s is not an interface of the node (declared: %s)", n.Name, rt.Dst, rt.Dev, strings.Join(n.InterfaceNames(), ", "))
			continue
		}
		if !rt.Via.IsValid() {
			continue
		}
		if rt.Via.Is4() != rt.Dst.Addr().Is4() {
			r.at(rt.Line, "node %q route to %s: next hop %s is of the other IP family: give a next hop of the destination's family (`dst: default` is IPv4; write `::/0` for IPv6)", n.Name, rt.Dst, rt.Via)
			continue
		}
		if n.Owns(rt.Via) {
			r.at(rt.Line, "node %q route to %s: next hop %s is the node's own address: give a neighbour's address", n.Name, rt.Dst, rt.Via)
			continue
		}
		ifc := n.Connected(rt.Via)
		if rt.Dev != "" {
			ifc = n.Interface(rt.Dev)
			if !connectedOn(ifc, rt.Via) {
				r.at(rt.Line, "node %q route to %s: next hop %s is not in a subnet of %s (%s)", n.Name, rt.Dst, rt.Via, rt.Dev, prefixes(ifc.Addrs))
			}
			continue
		}
		if ifc == nil && tunnelOf(n, rt.Via) == nil {
			r.at(rt.Line, "node %q route to %s: next hop %s is outside every connected subnet of the node (%s): use a neighbour's address on a shared link", n.Name, rt.Dst, rt.Via, prefixes(allAddrs(n)))
		}
	}
}

func connectedOn(ifc *Interface, a netip.Addr) bool {
	for _, p := range ifc.Addrs {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func allAddrs(n *Node) []netip.Prefix {
	var out []netip.Prefix
	for _, ifc := range n.Interfaces {
		if ifc.Name != Loopback {
			out = append(out, ifc.Addrs...)
		}
	}
	return out
}

func prefixes(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "none"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.Masked().String()
	}
	return strings.Join(s, ", ")
}

func nodeNames(t *Topology) string { return strings.Join(t.NodeNames(), ", ") }
