package lab

import (
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/nodes"
)

// PublishedChange is one route a VPN gateway published into a VPC route
// table, and whether SetPublishedRoutes changed it (false: it already was
// withdrawn, or present).
type PublishedChange struct {
	nodes.PublishedRoute
	Changed bool
}

// SetPublishedRoutes withdraws (present=false) or restores the routes the
// VPN gateways published into the VPC route tables: method 1's manual step.
// Doing either twice is not an error: the second time changes nothing and
// says so in Changed. It returns every published route, in
// nodes.PublishedRoutes order.
func SetPublishedRoutes(t *topology.Topology, present bool) ([]PublishedChange, error) {
	published := nodes.PublishedRoutes(t)
	routes := make([]plan.Route, len(published))
	for i, pr := range published {
		r := pr.Route
		routes[i] = plan.Route{Namespace: plan.NamespaceName(t.Name, pr.VPC), Dst: r.Dst, Via: r.Via, Dev: r.Dev, Metric: r.Metric}
	}
	changed, err := setRoutes(routes, present)
	out := make([]PublishedChange, len(published))
	for i, pr := range published {
		out[i] = PublishedChange{pr, changed[i]}
	}
	return out, err
}
