package nodes

import "github.com/emu-lab/emu/internal/topology"

// The virtual border router terminates the Express Connect circuit on the
// cloud side and is attached to the CEN; it routes statically (methods 1 and
// 2) or runs BGP with the on-premises gateway (method 3).
func registerVBR(r *Registry) {
	r.Register(&Kind{Name: "vbr", Element: "virtual border router (Express Connect)", Roles: topology.Roles{
		Forwards: true, PrivatePath: true, CircuitEnd: true, Shape: topology.Shape{DOT: "cylinder", MermaidOpen: "[(", MermaidClose: ")]"}},
		Rules: []rule{bgpVBRNeedsBGPGateway},
		// A VBR terminates one Express Connect circuit; its bandwidth is
		// the circuit's, sold from 50 Mbit/s (hosted) to 100 Gbit/s ports.
		Bandwidth: &BandwidthSpec{Of: "Express Connect circuit of", Field: "Express Connect circuit bandwidth, CreatePhysicalConnection bandwidth", Limits: circuit}})
}

// bgpVBRNeedsBGPGateway: the guide allows static VBR with either VPN gateway
// routing, but a VBR on BGP with the on-premises gateway only with a VPN
// gateway on BGP (method 3). BGP toward the CEN is the cloud's own.
func bgpVBRNeedsBGPGateway(t *topology.Topology, n *topology.Node) []problem {
	if onpremNeighbor(t, n) == nil {
		return nil
	}
	var out []problem
	for _, gw := range t.Nodes {
		if gw.Roles.CloudEdge && gw.BGP == nil && len(gw.Tunnels) > 0 {
			out = append(out, problemf(n.BGP.Line, "VBR %q runs BGP but VPN gateway %q uses static routing: the provider does not allow this combination. Configure BGP on the VPN gateway too (method 3), or static routes on the VBR (method 1 or 2)", n.Name, gw.Name))
		}
	}
	return out
}
