package nodes

import "github.com/emu-lab/emu/internal/topology"

// The CEN instance (or transit router) learns routes from the VBRs and VPCs
// attached to it and forwards between them.
func registerCEN(r *Registry) {
	r.Register(&Kind{Name: "cen", Element: "CEN instance / transit router", Roles: topology.Roles{
		Forwards: true, PrivatePath: true, Shape: topology.Shape{DOT: "doublecircle", MermaidOpen: "((", MermaidClose: "))"}}})
}
