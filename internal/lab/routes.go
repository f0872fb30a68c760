package lab

import (
	"errors"

	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/wiring"
)

// ReapplyRoutes adds static routes again, skipping those still present. The
// kernel deletes a route when its interface goes down; a router's
// configured routes come back when the interface does, and so must the
// lab's after `emu fault link up`.
func ReapplyRoutes(routes []plan.Route) error {
	w := wiring.New()
	defer w.Close()
	for _, r := range routes {
		err := w.AddRoute(r.Namespace, wiring.IPNet(r.Dst), wiring.IP(r.Via), r.Dev, r.Metric)
		if err != nil && !errors.Is(err, wiring.ErrRouteExists) {
			return err
		}
	}
	return nil
}

// WithdrawRoutes removes routes, skipping those already gone.
func WithdrawRoutes(routes []plan.Route) error {
	w := wiring.New()
	defer w.Close()
	for _, r := range routes {
		err := w.DeleteRoute(r.Namespace, wiring.IPNet(r.Dst), wiring.IP(r.Via), r.Dev, r.Metric)
		if err != nil && !errors.Is(err, wiring.ErrNoRoute) {
			return err
		}
	}
	return nil
}
