package wiring_test

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/wiring"
)

// Deploy's route stage runs after the agents start, and a health check's
// monitor may have put the same route in first (CI saw deploy fail with
// "route 10.1.0.0/24 in ...-vpc: file exists"): SetRoute leaves the route
// as planned whoever came first, where AddRoute refuses a second one.
func TestSetRoute_RouteAlreadyThere_MadeAsPlanned(t *testing.T) {
	labtest.RequireRoot(t)
	ns := "emu-" + labtest.UniqueName() + "-r"
	w := wiring.New()
	defer w.Close()
	if err := w.CreateNamespace(ns, true, false); err != nil {
		t.Fatal(err)
	}
	defer func() {
		w.Close()
		if err := wiring.DeleteNamespace(ns); err != nil {
			t.Error(err)
		}
	}()
	if err := w.AddVeth(ns, "a0", ns, "b0", 0); err != nil {
		t.Fatal(err)
	}
	for ifc, addr := range map[string]string{"a0": "192.0.2.1/30", "b0": "198.51.100.1/30"} {
		if err := w.AddAddress(ns, ifc, wiring.IPNet(netip.MustParsePrefix(addr))); err != nil {
			t.Fatal(err)
		}
	}
	dst := wiring.IPNet(netip.MustParsePrefix("10.1.0.0/24"))
	if err := w.AddRoute(ns, dst, nil, "a0", 10); err != nil {
		t.Fatal(err)
	}
	if err := w.AddRoute(ns, dst, nil, "a0", 10); !errors.Is(err, wiring.ErrRouteExists) {
		t.Fatalf("AddRoute of a route already there: %v, want ErrRouteExists", err)
	}
	if err := w.SetRoute(ns, dst, nil, "a0", 10); err != nil {
		t.Fatalf("SetRoute of a route already there: %v", err)
	}
	// A different route under the same key is replaced by the planned one.
	if err := w.SetRoute(ns, dst, net.ParseIP("198.51.100.2"), "", 10); err != nil {
		t.Fatalf("SetRoute over another nexthop: %v", err)
	}
	if err := w.DeleteRoute(ns, dst, net.ParseIP("198.51.100.2"), "b0", 10); err != nil {
		t.Fatalf("the planned route is not the one in the table: %v", err)
	}
}
