package checks

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emu-lab/emu/internal/agent"
	"github.com/emu-lab/emu/internal/fault"
	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/routing"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/nodes"
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

// A state that lists none of the sessions the topology configures (another
// node's state planted at the vbr's name) passed the row: it judged only
// the sessions the state listed. Each configured session must be there.
func TestBGPOnce_ConfiguredSessionMissingFromTheState_Fails(t *testing.T) {
	topo, err := topology.Parse("bgp.yaml", []byte(labtest.Shipped(t, "bgp.yaml")), nodes.Default())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "agents"), 0o700); err != nil {
		t.Fatal(err)
	}
	start, _ := agent.StartTime(os.Getpid())
	// onprem's sessions, every one established with its peer's prefixes.
	st := agent.State{Updated: time.Now(), PID: os.Getpid(), PIDStart: start, Neighbors: []routing.NeighborState{
		{Address: netip.MustParseAddr("10.0.0.2"), State: "established", Established: true, Accepted: 5},
		{Address: netip.MustParseAddr("169.254.10.2"), State: "established", Established: true, Accepted: 3},
	}}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "agents", "vbr.state.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, r := range bgpOnce(Lab{Topology: topo, Dir: dir}) {
		if r.Check != "bgp vbr" {
			continue
		}
		if r.Passed || !strings.Contains(r.Evidence, "vbr's agent reports no session with 10.0.0.1, which the topology configures (line 57)") {
			t.Fatalf("a configured session missing from the state must fail the row, naming it: %+v", r)
		}
		return
	}
	t.Fatal("no bgp vbr row")
}
