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
			name := fmt.Sprintf("ping %s → %s", a.node.Name, b.node.Name)
			start := time.Now()
			rtt, err := probe.Ping(l.NS(a.node.Name), b.addr, 2*time.Second)
			out = append(out, result(name, start, err, fmt.Sprintf("echo reply from %s in %s", b.addr, rtt.Round(time.Microsecond))))

			name = fmt.Sprintf("tcp %s → %s:%d", a.node.Name, b.node.Name, tcpPort)
			start = time.Now()
			marker := probe.Marker()
			tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = probe.TCPExchange(tctx, l.NS(a.node.Name), l.NS(b.node.Name), netip.AddrPortFrom(b.addr, tcpPort), marker)
			cancel()
			out = append(out, result(name, start, err, fmt.Sprintf("marker %s echoed back", marker)))
		}
	}
	return out
}

type host struct {
	node *topology.Node
	addr netip.Addr
}

// hostsOf returns each host node with its first IPv4 (else IPv6) address.
func hostsOf(t *topology.Topology) []host {
	var out []host
	for _, n := range t.Nodes {
		if n.Kind != "host" {
			continue
		}
		var addr netip.Addr
		for _, ifc := range n.Interfaces {
			for _, p := range ifc.Addrs {
				if !addr.IsValid() || (p.Addr().Is4() && !addr.Is4()) {
					addr = p.Addr()
				}
			}
		}
		if addr.IsValid() {
			out = append(out, host{n, addr})
		}
	}
	return out
}

func result(name string, start time.Time, err error, okEvidence string) Result {
	r := Result{Check: name, Passed: err == nil, Evidence: okEvidence, Duration: time.Since(start)}
	if err != nil {
		r.Evidence = err.Error()
	}
	return r
}
