package fault_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/emu-lab/emu/internal/fault"
	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/probe"
)

func TestMain(m *testing.M) { labtest.Main(m) }

const staticTopology = "static.yaml"

var ecs = netip.MustParseAddr("172.16.2.10")

func TestTunnelDown_DropsESP_TrafficStopsUntilRepaired(t *testing.T) {
	l := labtest.Deploy(t, staticTopology)
	onprem := l.NS("onprem")
	tun := l.Topology.Node("onprem").Tunnels[0]
	if _, err := probe.Ping(l.NS("client"), ecs, 2*time.Second); err != nil {
		t.Fatalf("before the fault: %v", err)
	}
	for range 2 { // twice: breaking a broken tunnel is not an error
		if err := fault.TunnelDown(onprem, tun.Name, tun.Local, tun.Remote); err != nil {
			t.Fatal(err)
		}
	}
	if broken, err := fault.TunnelBroken(onprem, tun.Name); err != nil || !broken {
		t.Fatalf("TunnelBroken = %v, %v after TunnelDown", broken, err)
	}
	if _, err := probe.Ping(l.NS("client"), ecs, time.Second); err == nil {
		t.Fatal("ping crossed a broken tunnel")
	}
	for range 2 {
		if err := fault.TunnelUp(onprem, tun.Name); err != nil {
			t.Fatal(err)
		}
	}
	if broken, _ := fault.TunnelBroken(onprem, tun.Name); broken {
		t.Fatal("TunnelBroken after TunnelUp")
	}
	if _, err := probe.Ping(l.NS("client"), ecs, 2*time.Second); err != nil {
		t.Fatalf("after repair: %v", err)
	}
}

func TestLinkDown_CutsThePath_LinkUpRestoresIt(t *testing.T) {
	l := labtest.Deploy(t, staticTopology)
	if err := fault.LinkDown(l.NS("vbr"), "eth2"); err != nil {
		t.Fatal(err)
	}
	if _, err := probe.Ping(l.NS("client"), ecs, time.Second); err == nil {
		t.Fatal("ping crossed a link that is down")
	}
	if err := fault.LinkUp(l.NS("vbr"), "eth2"); err != nil {
		t.Fatal(err)
	}
	// The kernel removed vbr's routes through eth2 when it went down.
	routes := append(plan.RoutesOf(l.Topology, l.Topology.Node("vbr")), plan.RoutesOf(l.Topology, l.Topology.Node("cen"))...)
	if err := lab.ReapplyRoutes(routes); err != nil {
		t.Fatal(err)
	}
	// A veth takes a moment to regain carrier.
	deadline := time.Now().Add(5 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if _, err = probe.Ping(l.NS("client"), ecs, 500*time.Millisecond); err == nil {
			return
		}
	}
	t.Fatalf("after link up: %v", err)
}

// The check's fault and the user's live in their own tables: repairing the
// check's leaves the user's in force, and the tunnel broken.
func TestTunnelUpBy_Check_LeavesUsersFault(t *testing.T) {
	l := labtest.Deploy(t, staticTopology)
	onprem := l.NS("onprem")
	tun := l.Topology.Node("onprem").Tunnels[0]
	if err := fault.TunnelDownBy(fault.ByCheck, onprem, tun.Name, tun.Local, tun.Remote); err != nil {
		t.Fatal(err)
	}
	if broken, err := fault.TunnelBroken(onprem, tun.Name); err != nil || broken {
		t.Fatalf("the check's fault reads as the user's: TunnelBroken = %v, %v", broken, err)
	}
	if err := fault.TunnelDown(onprem, tun.Name, tun.Local, tun.Remote); err != nil {
		t.Fatal(err)
	}
	if err := fault.TunnelUpBy(fault.ByCheck, onprem, tun.Name); err != nil {
		t.Fatal(err)
	}
	if broken, err := fault.TunnelBrokenBy(fault.ByCheck, onprem, tun.Name); err != nil || broken {
		t.Fatalf("TunnelBrokenBy(check) = %v, %v after its repair", broken, err)
	}
	if broken, err := fault.TunnelBroken(onprem, tun.Name); err != nil || !broken {
		t.Fatalf("the check's repair removed the user's fault: TunnelBroken = %v, %v", broken, err)
	}
	if _, err := probe.Ping(l.NS("client"), ecs, time.Second); err == nil {
		t.Fatal("ping crossed a tunnel the user broke")
	}
	if err := fault.TunnelUp(onprem, tun.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := probe.Ping(l.NS("client"), ecs, 2*time.Second); err != nil {
		t.Fatalf("after both repairs: %v", err)
	}
}
