package nodes

import "github.com/emu-lab/emu/internal/topology"

// The VPC node is the VPC's vRouter and its route table: system routes for
// the vSwitch CIDRs, routes the VPN gateway publishes, and routes learned from
// the CEN, where the VPN gateway's win for the same prefix.
func registerVPC(r *Registry) {
	r.Register(&Kind{Name: "vpc", Element: "VPC vRouter and route table", Roles: topology.Roles{
		Forwards: true, VPCRouter: true, Shape: topology.Shape{DOT: "box3d", MermaidOpen: "[[", MermaidClose: "]]"}}})
}
