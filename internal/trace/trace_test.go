package trace_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/emu-lab/emu/internal/fault"
	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/trace"
)

func TestMain(m *testing.M) { labtest.Main(m) }

func walk(hops []trace.Hop) string {
	s := make([]string, len(hops))
	for i, h := range hops {
		s[i] = h.Node + " " + h.Action
	}
	return strings.Join(s, ", ")
}

// The guide's 12 steps (SPEC §2). The shipped lab puts the ECS instance on
// its own vSwitch, so the VPC's router also appears between the VPN gateway
// and the ECS instance, both ways.
const guideWalk = "client sends, onprem encrypts, vbr forwards, cen forwards, vpc forwards, vpngw decrypts, vpc forwards, ecs receives, " +
	"ecs sends, vpc forwards, vpngw encrypts, vpc forwards, cen forwards, vbr forwards, onprem decrypts, client receives"

func TestTrace_TunnelUp_FollowsTheGuidesPacketWalk(t *testing.T) {
	l := labtest.Deploy(t, "static.yaml")
	conns, err := lab.ReadConns(l.Plan.LabDir)
	if err != nil {
		t.Fatal(err)
	}
	hops, err := trace.Run(context.Background(), l.Topology, conns, "client", "ecs")
	if err != nil {
		t.Fatal(err)
	}
	if got := walk(hops); got != guideWalk {
		t.Fatalf("walk differs from the guide's:\n got  %s\n want %s", got, guideWalk)
	}
	for _, h := range hops {
		if !h.Encrypted {
			continue
		}
		// Request: outer destination is the VPN gateway's private IP; reply:
		// the on-prem gateway's VPN IP. The inner addresses are the hosts'.
		want := map[string]string{"10.1.0.10": "10.0.0.1 → 172.16.1.10", "172.16.2.10": "172.16.1.10 → 10.0.0.1"}[h.InnerSrc.String()]
		if got := fmt.Sprintf("%s → %s", h.OuterSrc, h.OuterDst); got != want || h.SPI == 0 {
			t.Errorf("step %d at %s: outer %s spi 0x%x for inner %s → %s, want outer %s", h.Step, h.Node, got, h.SPI, h.InnerSrc, h.InnerDst, want)
		}
	}
}

// A gateway as the destination decrypts the ESP for itself: its hop is not
// paired with the reply it sends back.
func TestTrace_ToTheGatewayItself_ItDecryptsThenSendsTheReply(t *testing.T) {
	l := labtest.Deploy(t, "static.yaml")
	conns, err := lab.ReadConns(l.Plan.LabDir)
	if err != nil {
		t.Fatal(err)
	}
	hops, err := trace.Run(context.Background(), l.Topology, conns, "ecs", "onprem")
	if err != nil {
		t.Fatal(err)
	}
	const want = "ecs sends, vpc forwards, vpngw encrypts, vpc forwards, cen forwards, vbr forwards, onprem decrypts, " +
		"onprem sends, vbr forwards, cen forwards, vpc forwards, vpngw decrypts, vpc forwards, ecs receives"
	if got := walk(hops); got != want {
		t.Fatalf("walk:\n got  %s\n want %s", got, want)
	}
}

// Method 1 with the tunnel down: the echo gets no reply, and the trace
// shows where it died instead of only saying so.
func TestTrace_Method1TunnelDown_ShowsWhereTheProbeDied(t *testing.T) {
	l := labtest.Deploy(t, "static.yaml")
	conns, err := lab.ReadConns(l.Plan.LabDir)
	if err != nil {
		t.Fatal(err)
	}
	tun := l.Topology.Node("onprem").Tunnels[0]
	if err := fault.TunnelDown(l.NS("onprem"), tun.Name, tun.Local, tun.Remote); err != nil {
		t.Fatal(err)
	}
	hops, err := trace.Run(context.Background(), l.Topology, conns, "client", "ecs")
	if err == nil || !strings.Contains(err.Error(), "last seen at onprem (drops)") || !strings.Contains(err.Error(), "read the path row of `emu check`") {
		t.Fatalf("err = %v, want the probe last seen at onprem and the check row to read", err)
	}
	if got := walk(hops); got != "client sends, onprem drops" {
		t.Fatalf("walk %q, want client sends, onprem drops", got)
	}
}

// Method 1 once DPD has withdrawn the tunnel routes at both ends: the
// request reaches the ECS in clear, the reply loops between the VPC and
// the VPN gateway until the gateway drops it and sends a time exceeded to
// the ECS. "Last seen" is the reply at the gateway, not that error at the
// ECS; the error is reported apart, with its sender, type and code.
func TestTrace_Method1TunnelDownAfterDPD_LastSeenIsTheProbeAndTheICMPErrorIsApart(t *testing.T) {
	l := labtest.Deploy(t, "static.yaml")
	conns, err := lab.ReadConns(l.Plan.LabDir)
	if err != nil {
		t.Fatal(err)
	}
	tun := l.Topology.Node("onprem").Tunnels[0]
	if err := fault.TunnelDown(l.NS("onprem"), tun.Name, tun.Local, tun.Remote); err != nil {
		t.Fatal(err)
	}
	// Witness: both ends' DPD withdrew their routes into the tunnel.
	deadline := time.Now().Add(10 * time.Second)
	for hasRoute(t, l.NS("onprem"), "172.16.2.0/24", "ipsec0") || hasRoute(t, l.NS("vpngw"), "10.1.0.0/24", "ipsec0") {
		if time.Now().After(deadline) {
			t.Fatal("DPD did not withdraw the tunnel routes within 10 s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	hops, err := trace.Run(context.Background(), l.Topology, conns, "client", "ecs")
	want := "last seen at vpngw (drops); vpngw sent ICMP time exceeded (type 11, code 0) from 172.16.1.10 about 172.16.2.10 → 10.1.0.10, ecs received it"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want it to say %q", err, want)
	}
	var own, icmp []trace.Hop
	for _, h := range hops {
		if h.ICMPError != nil {
			icmp = append(icmp, h)
		} else {
			own = append(own, h)
		}
	}
	if len(own) < 8 {
		t.Fatalf("walk too short: %s", walk(own))
	}
	if got := walk(own[:8]); got != "client sends, onprem forwards, vbr forwards, cen forwards, vpc forwards, ecs receives, ecs sends, vpc forwards" {
		t.Errorf("the request must reach the ECS in clear and the reply go to the VPC: %s", got)
	}
	if got := walk(icmp); got != "vpngw sends, vpc forwards, ecs receives" {
		t.Errorf("ICMP error walk %q, want vpngw sends, vpc forwards, ecs receives", got)
	}
}

// hasRoute reports whether namespace ns has a route to prefix out of dev.
func hasRoute(t *testing.T, ns, prefix, dev string) bool {
	t.Helper()
	found := false
	err := netnsx.Do(ns, func() error {
		link, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		routes, err := netlink.RouteList(link, netlink.FAMILY_V4)
		for _, r := range routes {
			if r.Dst != nil && r.Dst.String() == prefix {
				found = true
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// -6 on a lab without IPv6 says so and names the shipped lab that has it.
// Needs no lab: the target is chosen before anything is captured.
func TestTrace_IPv6OnAnIPv4OnlyLab_NamesTheDualStackTopology(t *testing.T) {
	_, err := trace.RunFamily(context.Background(), labtest.Load(t, "../../topologies/static.yaml"), nil, "client", "ecs", true)
	want := `trace: node "ecs" has no IPv6 address: lab "static" has no IPv6 at all; topologies/dual-stack.yaml has`
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("err = %v, want %q...", err, want)
	}
}
