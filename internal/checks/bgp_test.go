package checks

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emu-lab/emu/internal/fault"
	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/routing"
	"github.com/emu-lab/emu/internal/topology"
)

// A second ECMP session Established a moment ago, before its UPDATE came,
// is not converged: the bgp row must wait for it (CI once judged the
// transit-router lab in that moment and passed it with one nexthop of two).
func TestMissingPrefixes_EstablishedSessionWithoutThePeersPrefixes(t *testing.T) {
	vpngw := &topology.Node{Name: "vpngw", BGP: &topology.BGP{Networks: []netip.Prefix{
		netip.MustParsePrefix("172.16.1.0/24"), netip.MustParsePrefix("172.16.2.0/24"),
	}}}
	a1, a2, a3 := netip.MustParseAddr("169.254.10.2"), netip.MustParseAddr("169.254.11.2"), netip.MustParseAddr("169.254.12.2")
	seen := []routing.NeighborState{
		{Address: a1, State: "established", Established: true, Accepted: 2},
		{Address: a2, State: "established", Established: true, Accepted: 0},
		{Address: a3, State: "active"},
	}
	if got := missingPrefixes(seen, a1, vpngw); got != "" {
		t.Errorf("a session with every prefix is converged, got %q", got)
	}
	if got := missingPrefixes(seen, a2, vpngw); !strings.Contains(got, "169.254.11.2") || !strings.Contains(got, "0 of the 2 prefixes vpngw originates") {
		t.Errorf("a session without the prefixes must be named, with the count: %q", got)
	}
	if got := missingPrefixes(seen, a3, vpngw); got != "" {
		t.Errorf("a session that is down is named by its state, not here: %q", got)
	}
	if got := missingPrefixes(seen, netip.MustParseAddr("192.0.2.1"), vpngw); got != "" {
		t.Errorf("a neighbor without a session state is not this check's: %q", got)
	}
}

// A repair not seen in time names the control plane's state then: with the
// tunnel still broken, the gateway's BGP session over it is not
// Established, and the row says so rather than only "not encrypted".
func TestRepairState_TunnelStillDown_NamesTheSessionThatIsDown(t *testing.T) {
	l := labtest.Deploy(t, "static-bgp.yaml")
	labc := Lab{Topology: l.Topology, Dir: l.Plan.LabDir}
	gw, tun := FailoverConnection(l.Topology)
	if got := repairState(labc, gw, tun); !strings.Contains(got, "bgp onprem: 169.254.10.2 AS45104 established") {
		t.Fatalf("before the fault the session is up and shown: %q", got)
	}
	if err := fault.TunnelDown(l.NS(gw.Name), tun.Name, tun.Local, tun.Remote); err != nil {
		t.Fatal(err)
	}
	var got string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if got = repairState(labc, gw, tun); strings.Contains(got, "bgp onprem: session with 169.254.10.2 is ") {
			return
		}
	}
	t.Fatalf("with the tunnel down the session over it must be named down: %q", got)
}
