package lab

import (
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/nodes"
)

// SetPublishedRoutes withdraws (present=false) or restores the routes the
// VPN gateways published into the VPC route tables: method 1's manual step.
// Doing either twice is not an error. It returns the routes it acted on.
func SetPublishedRoutes(t *topology.Topology, present bool) ([]nodes.PublishedRoute, error) {
	published := nodes.PublishedRoutes(t)
	routes := make([]plan.Route, len(published))
	for i, pr := range published {
		r := pr.Route
		routes[i] = plan.Route{Namespace: plan.NamespaceName(t.Name, pr.VPC), Dst: r.Dst, Via: r.Via, Dev: r.Dev, Metric: r.Metric}
	}
	if present {
		return published, ReapplyRoutes(routes)
	}
	return published, WithdrawRoutes(routes)
}
