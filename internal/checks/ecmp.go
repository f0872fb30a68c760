package checks

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/emu-lab/emu/internal/capture"
	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/probe"
	"github.com/emu-lab/emu/internal/topology"
)

// ECMP proves that a gateway with several IPsec connections to the other
// side spreads flows over all of them, as the provider's transit router
// does with equal-cost routes: ecmpFlows UDP flows that differ only in their
// source ports go each way between the first two hosts, a capture on the
// private path counts the ESP packets of each connection by SPI, and every
// connection of the sending gateway must carry at least half its fair share
// (for two connections: a quarter of the flows each).
var ECMP = Check{Name: "ecmp", Run: ecmp}

const (
	ecmpFlows     = 64
	ecmpFirstPort = 41000
	// ecmpSize tells the flows' ESP packets from the BGP keepalives and
	// dead peer detection probes that share the tunnels.
	ecmpSize = 600
	ecmpPort = 40124
)

// multiTunnelGateways are the nodes with more than one connection: the ones
// whose routes into the tunnels can be equal-cost.
func multiTunnelGateways(t *topology.Topology) []*topology.Node {
	var out []*topology.Node
	for _, n := range t.Nodes {
		if len(n.Tunnels) > 1 {
			out = append(out, n)
		}
	}
	return out
}

func ecmp(ctx context.Context, l Lab) []Result {
	start := time.Now()
	fail := func(format string, args ...any) []Result {
		return []Result{{Check: "ecmp", Evidence: fmt.Sprintf(format, args...), Duration: time.Since(start)}}
	}
	a, b, why := endPair(l.Topology)
	if why != "" {
		return fail("%s", why)
	}
	// One interface of the private path sees every flow once.
	var wire *capture.Endpoint
	for _, n := range l.Topology.Nodes {
		if n.Roles.PrivatePath && len(n.Interfaces) > 0 && wire == nil {
			wire = &capture.Endpoint{NS: l.NS(n.Name), Interface: n.Interfaces[0].Name}
		}
	}
	if wire == nil {
		return fail("no node whose kind lies on the private path (vbr, cen): nothing to watch")
	}
	c, err := capture.Start(ctx, wire.NS, wire.Interface, capture.Options{})
	if err != nil {
		return fail("start capture: %v", err)
	}
	marker := probe.Marker()
	var sendErr error
	for _, pair := range [][2]host{{a, b}, {b, a}} {
		from, to := pair[0], pair[1]
		got, err := probe.UDPFlows(l.NS(from.node.Name), l.NS(to.node.Name), netip.AddrPortFrom(to.addr, ecmpPort), ecmpFlows, ecmpFirstPort, ecmpSize, marker)
		if err == nil && got != ecmpFlows {
			err = fmt.Errorf("%d of %d UDP flows %s → %s arrived", got, ecmpFlows, from.node.Name, to.node.Name)
		}
		if err != nil && sendErr == nil {
			sendErr = err
		}
	}
	time.Sleep(50 * time.Millisecond) // the last frames reach the ring
	if err := c.Stop(); err != nil {
		return fail("capture: %v", err)
	}
	if sendErr != nil {
		return fail("%v", sendErr)
	}
	perSPI := map[uint32]int{}
	for _, p := range c.Packets() {
		if h, err := p.Decode(); err == nil && h.ESP && p.Length > ecmpSize {
			perSPI[h.SPI]++
		}
	}
	var out []Result
	for _, g := range multiTunnelGateways(l.Topology) {
		// The gateway's flows go to the end system on the other side.
		target := b.addr
		if !g.Roles.CustomerEdge {
			target = a.addr
		}
		out = append(out, judgeSpread(l, g, target, perSPI, start))
	}
	var lostErr error
	if d := c.Dropped(); d > 0 {
		lostErr = &capture.LostFramesError{Dropped: d, Where: []string{fmt.Sprintf("%s:%s (%d)", wire.NS, wire.Interface, d)}}
	}
	return spreadUnsureIfLost(out, lostErr)
}

// spreadUnsureIfLost turns a failed spread into an inconclusive one when the
// capture lost frames: the missing flows may be among the lost frames. A pass
// stands: every flow was counted on a tunnel.
func spreadUnsureIfLost(rs []Result, lostErr error) []Result {
	for i := range rs {
		if !rs[i].Passed {
			lost(&rs[i], lostErr)
		}
	}
	return rs
}

// judgeSpread says how the flows leaving gateway g for target spread over
// its connections, each known on the wire by its outbound SPI. Before it
// blames the hashing it asks the gateway's kernel which connections had a
// route to target: one without (its tunnel or BGP session down) explains an
// uneven spread.
func judgeSpread(l Lab, g *topology.Node, target netip.Addr, perSPI map[uint32]int, start time.Time) Result {
	r := Result{Check: "ecmp " + g.Name, Duration: time.Since(start)}
	fair := ecmpFlows / len(g.Tunnels)
	total, least := 0, ecmpFlows
	var seen []string
	for _, tun := range g.Tunnels {
		i := slices.IndexFunc(l.Conns, func(c ipsec.Conn) bool { return c.Name == tun.Name && c.Local == tun.Local })
		if i < 0 {
			r.Evidence = fmt.Sprintf("no keys of connection %s in the lab directory: cannot tell its packets", tun.Name)
			return r
		}
		n := perSPI[l.Conns[i].Out.SPI]
		total += n
		least = min(least, n)
		seen = append(seen, fmt.Sprintf("%s (SPI 0x%08x) %d", tun.Name, l.Conns[i].Out.SPI, n))
	}
	r.Evidence = fmt.Sprintf("%d UDP flows out of %s, by connection: %s", ecmpFlows, g.Name, strings.Join(seen, ", "))
	usable, routeErr := routedInterfaces(l.NS(g.Name), target)
	var unusable []string
	for _, tun := range g.Tunnels {
		if routeErr == nil && !usable[tun.Interface] {
			unusable = append(unusable, tun.Name)
		}
	}
	switch {
	case routeErr != nil:
		r.Evidence = fmt.Sprintf("cannot tell which connections had a route: %v; ", routeErr) + r.Evidence
	case len(unusable) > 0:
		r.Evidence = fmt.Sprintf("%s's route to %s does not use %s (its tunnel or BGP session is down), so ECMP had fewer connections to spread over; ",
			g.Name, target, strings.Join(unusable, ", ")) + r.Evidence
		return r
	}
	switch {
	case total != ecmpFlows:
		r.Evidence = fmt.Sprintf("%d of %d flows crossed the private path in %s's tunnels; ", total, ecmpFlows, g.Name) + r.Evidence
	case least < fair/2:
		r.Evidence = fmt.Sprintf("a connection carried fewer than %d flows (half its share): is ECMP hashing the 5-tuple? ", fair/2) + r.Evidence
	default:
		r.Passed = true
	}
	return r
}

// routedInterfaces returns the interfaces of the nexthops of the most
// specific route to dst in namespace ns: the connections ECMP may use.
func routedInterfaces(ns string, dst netip.Addr) (map[string]bool, error) {
	out := map[string]bool{}
	family := netlink.FAMILY_V4
	if dst.Is6() {
		family = netlink.FAMILY_V6
	}
	err := netnsx.Do(ns, func() error {
		routes, err := netlink.RouteList(nil, family)
		if err != nil {
			return err
		}
		best := -1
		var chosen *netlink.Route
		for i := range routes {
			r := &routes[i]
			bits := 0 // a nil Dst is the default route
			if r.Dst != nil {
				p, ok := netipx(r.Dst)
				if !ok || !p.Contains(dst) {
					continue
				}
				bits = p.Bits()
			}
			if bits > best || bits == best && r.Priority < chosen.Priority {
				best, chosen = bits, r
			}
		}
		if chosen == nil {
			return nil
		}
		indexes := []int{chosen.LinkIndex}
		for _, nh := range chosen.MultiPath {
			indexes = append(indexes, nh.LinkIndex)
		}
		for _, i := range indexes {
			if link, err := netlink.LinkByIndex(i); err == nil {
				out[link.Attrs().Name] = true
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("routes in %s: %w", ns, err)
	}
	return out, nil
}

func netipx(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}
