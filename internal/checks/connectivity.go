package checks

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/emu-lab/emu/internal/probe"
	"github.com/emu-lab/emu/internal/topology"
)

// Connectivity pings between every pair of hosts (kind host) and runs a TCP
// exchange carrying a random marker, each direction separately. Hosts are
// found by kind, never by name, so any renamed topology works.
var Connectivity = Check{Name: "connectivity", Run: connectivity}

const tcpPort = 40123

func connectivity(ctx context.Context, l Lab) []Result {
	var out []Result
	hosts := hostsOf(l.Topology)
	if len(hosts) < 2 {
		return []Result{{Check: "connectivity", Passed: false, Evidence: fmt.Sprintf("needs two nodes of kind host, found %d", len(hosts))}}
	}
	for _, a := range hosts {
		for _, b := range hosts {
			if a.node == b.node {
				continue
			}
			for _, dst := range a.targets(b) {
				family := familySuffix(dst)
				name := fmt.Sprintf("ping%s %s → %s", family, a.node.Name, b.node.Name)
				start := time.Now()
				rtt, err := probe.Ping(l.NS(a.node.Name), dst, 2*time.Second)
				out = append(out, result(name, start, err, fmt.Sprintf("echo reply from %s in %s", dst, rtt.Round(time.Microsecond))))

				name = fmt.Sprintf("tcp%s %s → %s:%d", family, a.node.Name, b.node.Name, tcpPort)
				start = time.Now()
				marker := probe.Marker()
				tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err = probe.TCPExchange(tctx, l.NS(a.node.Name), l.NS(b.node.Name), netip.AddrPortFrom(dst, tcpPort), marker)
				cancel()
				out = append(out, result(name, start, err, fmt.Sprintf("marker %s echoed back", marker)))
			}
		}
	}
	return out
}

type host struct {
	node  *topology.Node
	addr  netip.Addr // the first IPv4 address, else the first IPv6 one
	addr6 netip.Addr // the first IPv6 address, if any
}

// hostsOf returns each host node with its addresses.
func hostsOf(t *topology.Topology) []host {
	var out []host
	for _, n := range t.Nodes {
		if h, ok := hostOf(n); ok {
			out = append(out, h)
		}
	}
	return out
}

// hostOf returns an end system with its addresses; ok is false for another
// node, or an end system without an address.
func hostOf(n *topology.Node) (host, bool) {
	if !n.Roles.EndSystem {
		return host{}, false
	}
	var v4, v6 netip.Addr
	for _, ifc := range n.Interfaces {
		for _, p := range ifc.Addrs {
			switch a := p.Addr(); {
			case a.Is4() && !v4.IsValid():
				v4 = a
			case a.Is6() && !v6.IsValid():
				v6 = a
			}
		}
	}
	switch {
	case v4.IsValid():
		return host{node: n, addr: v4, addr6: v6}, true
	case v6.IsValid():
		return host{node: n, addr: v6, addr6: v6}, true
	}
	return host{}, false
}

// endPair returns the end systems a probe across the tunnel joins: one on
// the data center's side, one on the VPC's (topology.EndSystemPair), or
// why there is no such pair.
func endPair(t *topology.Topology) (dc, cloud host, why string) {
	a, b, ok := t.EndSystemPair()
	if !ok {
		return host{}, host{}, fmt.Sprintf("needs an end system (kind host) on each side of the IPsec connections, or two in a lab without them; found %d", len(hostsOf(t)))
	}
	dc, okA := hostOf(a)
	cloud, okB := hostOf(b)
	if !okA || !okB {
		return host{}, host{}, fmt.Sprintf("end systems %s and %s need an address each", a.Name, b.Name)
	}
	return dc, cloud, ""
}

// targets lists the addresses of b that h reaches in a family both have:
// IPv4, and IPv6 too, so a dual-stack lab proves both.
func (h host) targets(b host) []netip.Addr {
	var out []netip.Addr
	if h.addr.Is4() && b.addr.Is4() {
		out = append(out, b.addr)
	}
	if h.addr6.IsValid() && b.addr6.IsValid() {
		out = append(out, b.addr6)
	}
	return out
}

// familySuffix marks the checks of IPv6 traffic ("ping6", "tcp6"), as the
// tools name them; IPv4 checks keep their plain names.
func familySuffix(a netip.Addr) string {
	if a.Is6() {
		return "6"
	}
	return ""
}

func result(name string, start time.Time, err error, okEvidence string) Result {
	r := Result{Check: name, Passed: err == nil, Evidence: okEvidence, Duration: time.Since(start)}
	if err != nil {
		r.Evidence = err.Error()
	}
	return r
}
