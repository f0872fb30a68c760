package lab

import (
	"errors"

	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/internal/wiring"
	"github.com/emu-lab/emu/nodes"
)

// SetPublishedRoutes withdraws (present=false) or restores the routes the
// VPN gateways published into the VPC route tables: method 1's manual step.
// Doing either twice is not an error. It returns the routes it acted on.
func SetPublishedRoutes(t *topology.Topology, present bool) ([]nodes.PublishedRoute, error) {
	routes := nodes.PublishedRoutes(t)
	w := wiring.New()
	defer w.Close()
	for _, pr := range routes {
		ns := plan.NamespaceName(t.Name, pr.VPC)
		r := pr.Route
		var err error
		if present {
			err = w.AddRoute(ns, wiring.IPNet(r.Dst), wiring.IP(r.Via), r.Dev, r.Metric)
			if errors.Is(err, wiring.ErrRouteExists) {
				err = nil
			}
		} else {
			err = w.DeleteRoute(ns, wiring.IPNet(r.Dst), wiring.IP(r.Via), r.Dev, r.Metric)
			if errors.Is(err, wiring.ErrNoRoute) {
				err = nil
			}
		}
		if err != nil {
			return nil, err
		}
	}
	return routes, nil
}
