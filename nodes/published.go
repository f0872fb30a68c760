package nodes

import "github.com/emu-lab/emu/internal/topology"

// PublishedRoute is a route in a VPC's route table that a VPN gateway
// published: a static route of a VPC router whose next hop is a cloud edge
// (a vpn-gateway).
// Method 1's manual step withdraws exactly these.
type PublishedRoute struct {
	VPC     string // the vpc node
	Gateway string // the vpn-gateway node it points to
	Route   topology.Route
}

// PublishedRoutes finds the VPN gateways' routes in every VPC route table.
func PublishedRoutes(t *topology.Topology) []PublishedRoute {
	var out []PublishedRoute
	for _, vpc := range t.Nodes {
		if !vpc.Roles.VPCRouter {
			continue
		}
		for _, r := range vpc.Routes {
			for _, gw := range t.Nodes {
				if gw.Roles.CloudEdge && r.Via.IsValid() && gw.Owns(r.Via) {
					out = append(out, PublishedRoute{VPC: vpc.Name, Gateway: gw.Name, Route: r})
				}
			}
		}
	}
	return out
}
