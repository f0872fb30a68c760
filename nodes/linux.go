package nodes

import "github.com/emu-lab/emu/internal/topology"

// A linux node is containerlab's generic node: anything that is not a cloud
// element (a router of the user's, a server, an appliance) running the
// host's programs through its exec, binds, env and daemons. It forwards
// between its interfaces, as a router built from it would.
func registerLinux(r *Registry) {
	r.Register(&Kind{Name: "linux", Element: "generic Linux node (containerlab's linux kind)", Roles: topology.Roles{
		Forwards: true, Shape: topology.Shape{DOT: "component", MermaidOpen: "[/", MermaidClose: "/]"}}})
}
