package lab

import (
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/wiring"
)

// ReapplyRoutes adds static routes again, skipping those still present. The
// kernel deletes a route when its interface goes down; a router's
// configured routes come back when the interface does, and so must the
// lab's after `emu fault link up`.
func ReapplyRoutes(routes []plan.Route) error {
	_, err := setRoutes(routes, true)
	return err
}

// WithdrawRoutes removes routes, skipping those already gone.
func WithdrawRoutes(routes []plan.Route) error {
	_, err := setRoutes(routes, false)
	return err
}

// setRoutes adds (present) or removes routes; changed[i] says whether
// routes[i] was added or removed, false when it already was as asked.
func setRoutes(routes []plan.Route, present bool) (changed []bool, err error) {
	w := wiring.New()
	defer w.Close()
	changed = make([]bool, len(routes))
	for i, r := range routes {
		if changed[i], err = w.EnsureRoute(r.Namespace, wiring.IPNet(r.Dst), wiring.IP(r.Via), r.Dev, r.Metric, present); err != nil {
			return changed, err
		}
	}
	return changed, nil
}
