package checks_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/emu-lab/emu/internal/capture"
	"github.com/emu-lab/emu/internal/checks"
	"github.com/emu-lab/emu/internal/checks/checktest"
	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/probe"
	"github.com/emu-lab/emu/internal/trace"
)

func TestTransitRouter_64UDPFlows_SpreadOverBothTunnels(t *testing.T) {
	l := labtest.Deploy(t, "transit-router.yaml")
	conns, err := lab.ReadConns(l.Plan.LabDir)
	if err != nil {
		t.Fatal(err)
	}
	labc := checks.Lab{Topology: l.Topology, Conns: conns, Dir: l.Plan.LabDir}
	if !reachable(l, 5*time.Second) {
		t.Fatal("no traffic through the tunnels")
	}
	// 64 flows each way; each gateway's two tunnels (SPIs on the wire) must
	// carry at least 16 of them each.
	results := checktest.Run(t, labc, checks.ECMP)
	for _, r := range results {
		t.Logf("%s: %s", r.Check, r.Evidence)
	}
	requirePassed(t, results)
	if len(results) != 2 {
		t.Fatalf("%d ecmp results, want one per gateway with two tunnels (onprem, vpngw)", len(results))
	}
}

// udpDatagram sends payload from namespace src to dst with the DF bit set
// or clear (IP_MTU_DISCOVER), and reports whether a listener in namespace
// dstNS received it whole within a second.
func udpDatagram(t *testing.T, srcNS, dstNS string, dst netip.AddrPort, payload []byte, df bool) bool {
	t.Helper()
	var ln *net.UDPConn
	if err := netnsx.Do(dstNS, func() (err error) {
		ln, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(dst))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var c *net.UDPConn
	if err := netnsx.Do(srcNS, func() (err error) {
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mode := unix.IP_PMTUDISC_DONT
	if df {
		mode = unix.IP_PMTUDISC_DO
	}
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, mode) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	if _, err := c.Write(payload); err != nil {
		t.Fatalf("send %d bytes (DF %v) from %s: %v", len(payload), df, srcNS, err)
	}
	ln.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 65536)
	n, err := ln.Read(buf)
	return err == nil && n == len(payload)
}

// outerFlags returns the outer IPv4 header's DF and fragment state of an
// ESP frame.
func outerFlags(p capture.Packet) (df, fragment bool) {
	ip := p.Data[14:]
	flags := binary.BigEndian.Uint16(ip[6:])
	return flags&0x4000 != 0, flags&0x3fff != 0
}

func TestTunnel_DFClearDatagramOverSmallerPathMTU_FragmentedOutsideAndDelivered(t *testing.T) {
	// The VBR ↔ CEN attachment has a smaller MTU than the tunnel's packets
	// need: a datagram that fits the tunnel interface (1400) becomes an
	// ESP packet of about 1360 bytes, too big for 1300.
	text := strings.Replace(labtest.Shipped(t, staticTopology), "eth2: 10.0.1.1/30 ", "eth2: {addresses: [10.0.1.1/30], mtu: 1300} ", 1)
	l := labtest.DeployText(t, text)
	if !reachable(l, 3*time.Second) {
		t.Fatal("no traffic through the tunnel")
	}
	c, err := capture.Start(context.Background(), l.NS("cen"), "eth1", capture.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dst := netip.AddrPortFrom(ecsAddr, 40200)
	big := make([]byte, 1300)
	copy(big, probe.Marker())
	// The first one counts: with DF forced on the outer header it is lost
	// (the kernel only learns the path MTU from the ICMP error it causes).
	clearDelivered := udpDatagram(t, l.NS("client"), l.NS("ecs"), dst, big, false)
	// A small datagram with DF: the outer header must carry DF too.
	small := big[:200]
	setDelivered := udpDatagram(t, l.NS("client"), l.NS("ecs"), dst, small, true)
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if !clearDelivered {
		t.Error("the first 1300-byte datagram with DF clear was not delivered through the tunnel")
	}
	if !setDelivered {
		t.Error("a 200-byte datagram with DF set was not delivered through the tunnel")
	}
	fragments, smallDF := 0, 0
	for _, p := range c.Packets() {
		h, err := p.Decode()
		if err != nil || h.Protocol != 50 || h.Src != l.Topology.Node("onprem").Tunnels[0].Local {
			continue
		}
		df, frag := outerFlags(p)
		switch {
		case frag && !df:
			fragments++
		case df && p.Length > 250 && p.Length < 400: // not DPD's pings
			smallDF++
		}
	}
	t.Logf("on cen:eth1 (mtu 1300): %d ESP fragments, %d small ESP packets with DF", fragments, smallDF)
	if fragments < 2 {
		t.Errorf("saw %d outer fragments of the DF-clear datagram's ESP packet on cen:eth1, want 2", fragments)
	}
	if smallDF == 0 {
		t.Error("the DF-set datagram's ESP packet crossed without DF: the outer DF must copy the inner")
	}
}

func TestDualStack_IPv6InsideIPv4Tunnel_ConnectivityEncryptionAndPathPass(t *testing.T) {
	l := labtest.Deploy(t, "dual-stack.yaml")
	conns, err := lab.ReadConns(l.Plan.LabDir)
	if err != nil {
		t.Fatal(err)
	}
	labc := checks.Lab{Topology: l.Topology, Conns: conns, Dir: l.Plan.LabDir}
	results := checktest.Run(t, labc, checks.For(labc)...)
	requirePassed(t, results)
	seen := map[string]string{}
	for _, r := range results {
		seen[r.Check] = r.Evidence
	}
	for _, want := range []string{"ping6 client → ecs", "tcp6 client → ecs:40123", "ping6 ecs → client", "tcp6 ecs → client:40123", "path6"} {
		if _, ok := seen[want]; !ok {
			t.Errorf("no %q check ran on a dual-stack lab", want)
		}
	}
	// The inner packets are IPv6 inside IPv4 ESP on every hop of the private path.
	hops, err := trace.RunFamily(context.Background(), l.Topology, conns, "client", "ecs", true)
	if err != nil {
		t.Fatal(err)
	}
	encrypted := 0
	for _, h := range hops {
		if !h.Encrypted {
			continue
		}
		encrypted++
		if !h.OuterSrc.Is4() || !h.InnerSrc.Is6() || !h.InnerDst.Is6() {
			t.Errorf("step %d at %s: outer %s → %s, inner %s → %s: want IPv6 inside IPv4", h.Step, h.Node, h.OuterSrc, h.OuterDst, h.InnerSrc, h.InnerDst)
		}
	}
	if encrypted == 0 {
		t.Fatal("the IPv6 echo crossed no hop encrypted")
	}
}

// withBandwidth adds `bandwidth: mbit` to the first node of kind in the
// shipped static scenario.
func withBandwidth(t *testing.T, kind string, mbit int) string {
	t.Helper()
	text := labtest.Shipped(t, staticTopology)
	out := strings.Replace(text, "      kind: "+kind+"\n", fmt.Sprintf("      kind: %s\n      bandwidth: %d\n", kind, mbit), 1)
	if out == text {
		t.Fatalf("%s has no node of kind %s", staticTopology, kind)
	}
	return out
}

// removeRootQdisc deletes an interface's root qdisc (the spec's shaper).
func removeRootQdisc(t *testing.T, ns, ifname string) {
	t.Helper()
	err := netnsx.Do(ns, func() error {
		link, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		return netlink.QdiscDel(&netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: link.Attrs().Index, Parent: netlink.HANDLE_ROOT}})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// txBytes reads an interface's transmitted bytes.
func txBytes(t *testing.T, ns, ifname string) uint64 {
	t.Helper()
	var n uint64
	err := netnsx.Do(ns, func() error {
		link, err := netlink.LinkByName(ifname)
		if err == nil {
			n = link.Attrs().Statistics.TxBytes
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestBandwidth_SpecsLimitATCPStreamToWithin10Percent(t *testing.T) {
	if os.Getenv("EMU_VMTEST") == "1" {
		// Measured there: 7 Mbit/s through kernel ESP, 62 Mbit/s plain.
		t.Skip("the kernel-ESP VM emulates its CPU (TCG): it carries less than the specs, so no rate can be judged")
	}
	const seconds = 4
	for _, c := range []struct {
		name, kind string
		mbit       int
		// The stream: through the tunnel for the VPN gateway, over the
		// circuit itself (on-prem gateway → VBR) for the circuit.
		from, to  string
		node, ifc string // an interface the spec limits, on the stream's way
	}{
		{"VPN gateway 200 Mbit/s", "vpn-gateway", 200, "client", "ecs", "vpngw", "eth1"},
		{"Express Connect circuit 100 Mbit/s", "vbr", 100, "onprem", "vbr", "onprem", "eth2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := labtest.DeployText(t, withBandwidth(t, c.kind, c.mbit))
			if !reachable(l, 3*time.Second) {
				t.Fatal("no traffic through the tunnel")
			}
			dst := netip.AddrPortFrom(l.Topology.Node(c.to).Interfaces[0].Addrs[0].Addr(), 40300)
			spec := float64(c.mbit) * 1e6
			// Above the spec is a shaper that does not limit: a defect, at
			// once. Below it, a busy machine may have starved the stream
			// (the userspace tunnel needs CPU to fill 200 Mbit/s): measure
			// again, a bounded number of times, before calling it a defect.
			const attempts = 3
			for i := 1; ; i++ {
				before := txBytes(t, l.NS(c.node), c.ifc)
				start := time.Now()
				bps, err := probe.Throughput(context.Background(), l.NS(c.from), l.NS(c.to), dst, seconds*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				wire := float64(txBytes(t, l.NS(c.node), c.ifc)-before) * 8 / time.Since(start).Seconds()
				t.Logf("attempt %d, spec %d Mbit/s: TCP stream %s → %s %.1f Mbit/s (%.0f%%); %s:%s sent %.1f Mbit/s (%.0f%%)", i, c.mbit, c.from, dst, bps/1e6, 100*bps/spec, c.node, c.ifc, wire/1e6, 100*wire/spec)
				if bps > 1.1*spec {
					t.Fatalf("TCP stream at %.1f Mbit/s, above the %d Mbit/s spec by more than 10%%: the spec does not limit", bps/1e6, c.mbit)
				}
				if bps >= 0.9*spec {
					return
				}
				if i == attempts {
					// Control: the same path without the shaper. If it cannot
					// carry well above the spec either, the machine (not the
					// shaper) set the rate, and no verdict on the lower bound
					// can be drawn from it.
					removeRootQdisc(t, l.NS(c.node), c.ifc)
					free, err := probe.Throughput(context.Background(), l.NS(c.from), l.NS(c.to), dst, seconds*time.Second)
					if err != nil {
						t.Fatal(err)
					}
					t.Logf("control without the spec: %.1f Mbit/s", free/1e6)
					if free < 1.2*spec {
						t.Skipf("inconclusive: without the spec the path carried only %.1f Mbit/s now (machine busy), so a rate under the %d Mbit/s spec proves nothing; re-run on a quieter machine", free/1e6, c.mbit)
					}
					t.Fatalf("TCP stream at %.1f Mbit/s in %d attempts, want within 10%% of the %d Mbit/s spec (the same path without it carries %.1f)", bps/1e6, attempts, c.mbit, free/1e6)
				}
			}
		})
	}
}
