package checks_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/emu-lab/emu/internal/capture"
	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/probe"
)

// sendUDPFlows sends one datagram of size bytes on each of flows UDP flows
// from namespace ns to dst, each from its own source port: flows that
// differ only in their ports, as a data center's many connections do.
func sendUDPFlows(t *testing.T, ns string, dst netip.AddrPort, flows, size int) {
	t.Helper()
	payload := make([]byte, size)
	copy(payload, probe.Marker())
	for i := range flows {
		var c net.Conn
		err := netnsx.Do(ns, func() (err error) {
			c, err = net.DialUDP("udp", &net.UDPAddr{Port: 41000 + i}, net.UDPAddrFromAddrPort(dst))
			return err
		})
		if err != nil {
			t.Fatalf("flow %d from %s: %v", i, ns, err)
		}
		_, err = c.Write(payload)
		c.Close()
		if err != nil {
			t.Fatalf("flow %d from %s: %v", i, ns, err)
		}
		// One at a time, so no flow is lost to a full queue.
		time.Sleep(2 * time.Millisecond)
	}
}

// espPerSPI counts by SPI the ESP frames from one of srcs larger than
// minLen: the flows' datagrams, not the BGP keepalives in the same tunnels.
func espPerSPI(pkts []capture.Packet, srcs map[netip.Addr]bool, minLen int) (per map[uint32]int, total int) {
	per = map[uint32]int{}
	for _, p := range pkts {
		h, err := p.Decode()
		if err == nil && h.ESP && srcs[h.Src] && p.Length > minLen {
			per[h.SPI]++
			total++
		}
	}
	return per, total
}

func TestTransitRouter_64UDPFlows_SpreadOverBothTunnels(t *testing.T) {
	l := labtest.Deploy(t, "transit-router.yaml")
	if !reachable(l, 5*time.Second) {
		t.Fatal("no traffic through the tunnels")
	}
	onprem, cloud := map[netip.Addr]bool{}, map[netip.Addr]bool{}
	for _, tun := range l.Topology.Node("onprem").Tunnels {
		onprem[tun.Local], cloud[tun.Remote] = true, true
	}
	const flows, size = 64, 600
	for _, dir := range []struct {
		from, to string
		dst      netip.Addr          // of the flows
		gateways map[netip.Addr]bool // the outer sources: the sending gateway's
	}{
		// The on-prem gateway hashes client → ECS flows onto its tunnels,
		// the VPN gateway ECS → client flows; the circuit carries both.
		{"client", "ecs", ecsAddr, onprem},
		{"ecs", "client", netip.MustParseAddr("10.1.0.10"), cloud},
	} {
		t.Run(dir.from+"→"+dir.to, func(t *testing.T) {
			c, err := capture.Start(context.Background(), l.NS("vbr"), "eth1", capture.Options{})
			if err != nil {
				t.Fatal(err)
			}
			sendUDPFlows(t, l.NS(dir.from), netip.AddrPortFrom(dir.dst, 9), flows, size)
			time.Sleep(50 * time.Millisecond)
			if err := c.Stop(); err != nil {
				t.Fatal(err)
			}
			per, total := espPerSPI(c.Packets(), dir.gateways, size)
			t.Logf("%d flows %s → %s: ESP frames per SPI %v", flows, dir.from, dir.to, per)
			if total != flows {
				t.Fatalf("%d flow datagrams crossed the circuit as ESP, want %d", total, flows)
			}
			if len(per) != 2 {
				t.Fatalf("flows took %d tunnel(s) (%s), want both", len(per), fmt.Sprint(per))
			}
			for spi, n := range per {
				if n < flows/4 {
					t.Errorf("tunnel of SPI 0x%08x carried %d of %d flows, want at least a quarter", spi, n, flows)
				}
			}
		})
	}
}
