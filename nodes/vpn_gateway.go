package nodes

import (
	"net/netip"

	"github.com/emu-lab/emu/internal/topology"
)

// The private VPN gateway holds one private IP in a vSwitch of the VPC and
// terminates the IPsec tunnel from the on-premises gateway; it decrypts toward
// the ECS instances and encrypts their replies.
func registerVPNGateway(r *Registry) {
	r.Register(&Kind{Name: "vpn-gateway", Element: "private VPN gateway", Roles: topology.Roles{
		Forwards: true, CloudEdge: true, Shape: topology.Shape{DOT: "hexagon", MermaidOpen: "{{", MermaidClose: "}}"}},
		Rules: []rule{tunnelCIDRAllowed},
		// A private VPN gateway is sold at 200 or 1000 Mbit/s, each way.
		Bandwidth: &BandwidthSpec{Of: "private VPN gateway", Field: "CreateVpnGateway Bandwidth", Allowed: []int{200, 1000}, Limits: ownInterfaces, SplitESP: true}})
}

// reservedTunnelCIDRs are the /30s the provider keeps for itself.
var reservedTunnelCIDRs = []string{
	"169.254.0.0/30", "169.254.1.0/30", "169.254.2.0/30", "169.254.3.0/30",
	"169.254.4.0/30", "169.254.5.0/30", "169.254.6.0/30", "169.254.169.252/30",
}

// tunnelCIDRAllowed: a connection's tunnel CIDR (the BGP peering subnet) is a
// /30 inside 169.254.0.0/16, not one the provider reserves, unique per
// gateway (CreateVpnConnection, TunnelOptionsSpecification.TunnelBgpConfig.
// TunnelCidr). The on-premises end holds the other address of the same /30,
// so the rule is checked there too.
func tunnelCIDRAllowed(_ *topology.Topology, n *topology.Node) []problem {
	var out []problem
	seen := map[netip.Prefix]string{}
	for _, t := range n.Tunnels {
		if !t.Address.IsValid() {
			continue
		}
		cidr := t.Address.Masked()
		switch {
		case cidr.Bits() != 30 || !netip.MustParsePrefix("169.254.0.0/16").Contains(cidr.Addr()):
			out = append(out, problemf(t.Line, "node %q connection %s: tunnel CIDR %s must be a /30 inside 169.254.0.0/16, e.g. 169.254.10.0/30", n.Name, t.Name, cidr))
		case inAny(cidr.Addr(), reservedTunnelCIDRs...) != "":
			out = append(out, problemf(t.Line, "node %q connection %s: tunnel CIDR %s is reserved by the provider (169.254.0.0/30 to 169.254.6.0/30 and 169.254.169.252/30): pick another /30", n.Name, t.Name, cidr))
		}
		if other, dup := seen[cidr]; dup {
			out = append(out, problemf(t.Line, "node %q: connections %s and %s share tunnel CIDR %s: each connection of a gateway needs its own", n.Name, other, t.Name, cidr))
		}
		seen[cidr] = t.Name
	}
	return out
}
