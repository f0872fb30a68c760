package nodes

import (
	"net/netip"

	"github.com/emu-lab/emu/internal/topology"
)

// The on-premises gateway is the customer's edge device: LAN side toward the
// clients, the Express Connect uplink toward the VBR, and the IPsec endpoint
// whose "VPN IP" the VPN gateway peers with.
func registerOnpremGateway(r *Registry) {
	r.Register(&Kind{Name: "onprem-gateway", Element: "customer gateway device", Roles: topology.Roles{
		Forwards: true, CustomerEdge: true, Shape: topology.Shape{DOT: "hexagon", MermaidOpen: "{{", MermaidClose: "}}"}},
		Rules: []rule{gatewayIPAllowed, notProviderASN, tunnelCIDRAllowed, apartFromVPCs}})
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

// apartFromVPCs: a data-center subnet that overlaps a VPC's vSwitch (or its
// CEN attachment) cannot be reached from the VPC: the VPC delivers those
// addresses to its own connected subnet, and the VPN gateway's published
// route loses to it (a VPC's system route for a vSwitch CIDR beats custom
// routes). Checked on every subnet of the on-premises gateway.
func apartFromVPCs(t *topology.Topology, n *topology.Node) []problem {
	var out []problem
	for _, ifc := range n.Interfaces {
		for _, p := range subnets(ifc) {
			for _, vpc := range t.Nodes {
				if !vpc.Roles.VPCRouter {
					continue
				}
				for _, vifc := range vpc.Interfaces {
					for _, q := range subnets(vifc) {
						if p.Overlaps(q) {
							out = append(out, problemf(ifc.Line, "data-center subnet %s on %s:%s overlaps VPC subnet %s on %s:%s (line %d): the VPC delivers those addresses to its own vSwitch, so they never reach the data center: renumber one of them so the two do not overlap", p, n.Name, ifc.Name, q, vpc.Name, vifc.Name, vifc.Line))
						}
					}
				}
			}
		}
	}
	return out
}

// subnets are the routed subnets of an interface: not loopback, not single
// addresses.
func subnets(ifc *topology.Interface) []netip.Prefix {
	var out []netip.Prefix
	if ifc.Name == topology.Loopback {
		return nil
	}
	for _, p := range ifc.Addrs {
		if !p.IsSingleIP() {
			out = append(out, p.Masked())
		}
	}
	return out
}
