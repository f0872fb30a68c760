package nodes

import "github.com/emu-lab/emu/internal/topology"

// A host is an end system: the client in the data center or an ECS instance in
// the VPC. It has addresses and a default route, and answers ping and TCP; it
// never forwards.
func registerHost(r *Registry) {
	r.Register(&Kind{Name: "host", Element: "client or ECS instance", Roles: topology.Roles{
		EndSystem: true, Shape: topology.Shape{DOT: "box", MermaidOpen: "[", MermaidClose: "]"}}})
}
