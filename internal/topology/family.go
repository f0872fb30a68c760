package topology

import "net/netip"

// ipv4Network refuses an IPv6 prefix among a BGP speaker's networks, at the
// line it is on. The tunnels carry IPv6 (both dataplanes), but emu's BGP
// speakers exchange IPv4 unicast only, so such a prefix would reach no peer
// and its traffic would never enter the tunnel. Static routes do carry it.
func (r *resolver) ipv4Network(line int, what string, p netip.Prefix) bool {
	if p.Addr().Is4() {
		return true
	}
	r.at(line, "%s %s: emu's BGP speakers exchange IPv4 routes only, so this IPv6 prefix would reach no peer: route IPv6 into the tunnel with static routes on both gateways (`routes: - {dst: \"%s\", dev: <tunnel interface>}`, as topologies/dual-stack.yaml does) and remove it here", what, p, p)
	return false
}
