package checks_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emu-lab/emu/internal/checks"
	"github.com/emu-lab/emu/internal/fault"
	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/probe"
)

var ecsAddr = netip.MustParseAddr("172.16.2.10")

// reachable pings client → ECS until it answers or the time is up.
func reachable(l *labtest.Lab, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if _, err := probe.Ping(l.NS("client"), ecsAddr, 300*time.Millisecond); err == nil {
			return true
		}
	}
	return false
}

func TestMethod1Static_TunnelDown_StopsUntilRoutesWithdrawn_ThenFlowsInClear(t *testing.T) {
	l := labtest.Deploy(t, staticTopology)
	conns, err := lab.ReadConns(l.Plan.LabDir)
	if err != nil {
		t.Fatal(err)
	}
	lab1 := checks.Lab{Topology: l.Topology, Conns: conns}
	tun := l.Topology.Node("onprem").Tunnels[0]
	if !reachable(l, 3*time.Second) {
		t.Fatal("no traffic before the fault")
	}

	if err := fault.TunnelDown(l.NS("onprem"), tun.Name, tun.Local, tun.Remote); err != nil {
		t.Fatal(err)
	}
	// Dead peer detection takes 3 s; traffic must stop and stay stopped,
	// since the VPN gateway's route in the VPC still points into the tunnel.
	time.Sleep(4 * time.Second)
	if reachable(l, 3*time.Second) {
		t.Fatal("method 1: traffic flowed with the tunnel down and the VPN gateway's routes still published")
	}

	if _, err := lab.SetPublishedRoutes(l.Topology, false); err != nil {
		t.Fatal(err)
	}
	if !reachable(l, 3*time.Second) {
		t.Fatal("method 1: no traffic after the operator withdrew the VPN gateway's routes")
	}
	enc := checks.Run(context.Background(), lab1, []checks.Check{checks.Encryption})
	if enc[0].Passed || !strings.Contains(enc[0].Evidence, "0 ESP") || strings.Contains(enc[0].Evidence, "marker in 0") {
		t.Fatalf("after the withdrawal traffic must cross the private path in clear, marker visible: %s", enc[0].Evidence)
	}
	path := checks.Run(context.Background(), lab1, []checks.Check{checks.Path})
	if path[0].Passed || !strings.Contains(path[0].Evidence, "vbr forwarded 10.1.0.10 → 172.16.2.10 in clear") {
		t.Fatalf("the path check must see the clear fallback walk: %s", path[0].Evidence)
	}

	if err := fault.TunnelUp(l.NS("onprem"), tun.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := lab.SetPublishedRoutes(l.Topology, true); err != nil {
		t.Fatal(err)
	}
	// Back through the tunnel once DPD sees the peer again (one probe).
	deadline := time.Now().Add(5 * time.Second)
	for {
		enc = checks.Run(context.Background(), lab1, []checks.Check{checks.Encryption})
		if enc[0].Passed || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !enc[0].Passed {
		t.Fatalf("method 1: traffic not encrypted again after repair and restore: %s", enc[0].Evidence)
	}
}
