package nodes

import "github.com/emu-lab/emu/internal/topology"

// The on-premises gateway is the customer's edge device: LAN side toward the
// clients, the Express Connect uplink toward the VBR, and the IPsec endpoint
// whose "VPN IP" the VPN gateway peers with.
func registerOnpremGateway(r *Registry) {
	r.Register(&Kind{Name: "onprem-gateway", Element: "customer gateway device", Forwards: true,
		Rules: []rule{gatewayIPAllowed, notProviderASN, tunnelCIDRAllowed}})
}

// notProviderASN: the provider's ASN is the cloud side's; an on-premises
// gateway using it could not peer.
func notProviderASN(_ *topology.Topology, n *topology.Node) []problem {
	if n.BGP == nil || n.BGP.ASN != topology.ProviderASN {
		return nil
	}
	return []problem{problemf(n.BGP.Line, "node %q: ASN %d is the provider's (cloud side): give the on-premises gateway another ASN, e.g. 65001", n.Name, topology.ProviderASN)}
}

// gatewayIPAllowed: the provider refuses a customer gateway whose IP lies in
// a shared, loopback, link-local, multicast or reserved range.
func gatewayIPAllowed(_ *topology.Topology, n *topology.Node) []problem {
	var out []problem
	for _, t := range n.Tunnels {
		if p := inAny(t.Local, "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "255.0.0.0/8"); p != "" {
			out = append(out, problemf(t.Line, "node %q connection %s: the on-premises gateway IP %s lies in %s, which the provider does not accept as a customer gateway IP: use an address outside 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4 and 255.0.0.0/8", n.Name, t.Name, t.Local, p))
		}
	}
	return out
}
