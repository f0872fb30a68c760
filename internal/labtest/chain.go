package labtest

import (
	"fmt"
	"strings"
)

// Chain returns the topology text of n routers in a line with a host at each
// end, every router with static routes toward both hosts: a lab whose size is
// one number, for tests and benchmarks that need a big deploy.
func Chain(name string, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "name: %s\ntopology:\n  nodes:\n", name)
	// Link i joins node i and node i+1 (node 0 and node n+1 are the hosts)
	// on 10.x.y.0/30, router side addresses .1/.2.
	link := func(i int) (a, z string) {
		base := fmt.Sprintf("10.%d.%d.", 64+i/16384, (i/64)%256)
		off := (i % 64) * 4
		return fmt.Sprintf("%s%d", base, off+1), fmt.Sprintf("%s%d", base, off+2)
	}
	first, _ := link(0)
	_, last := link(n)
	fmt.Fprintf(&b, "    h0:\n      kind: host\n      interfaces: {eth1: %s/30}\n", first)
	_, gw := link(0)
	fmt.Fprintf(&b, "      routes: [{dst: default, via: %s}]\n", gw)
	for i := 1; i <= n; i++ {
		_, left := link(i - 1)
		right, _ := link(i)
		prevHop, _ := link(i - 1)
		_, nextHop := link(i)
		fmt.Fprintf(&b, "    r%d:\n      kind: cen\n      interfaces: {eth1: %s/30, eth2: %s/30}\n", i, left, right)
		fmt.Fprintf(&b, "      routes:\n")
		if i > 1 {
			fmt.Fprintf(&b, "        - {dst: %s/32, via: %s}\n", first, prevHop)
		}
		if i < n {
			fmt.Fprintf(&b, "        - {dst: %s/32, via: %s}\n", last, nextHop)
		}
	}
	lastGw, _ := link(n)
	fmt.Fprintf(&b, "    h1:\n      kind: host\n      interfaces: {eth1: %s/30}\n", last)
	fmt.Fprintf(&b, "      routes: [{dst: default, via: %s}]\n", lastGw)
	b.WriteString("  links:\n")
	fmt.Fprintf(&b, "    - endpoints: [h0:eth1, r1:eth1]\n")
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, "    - endpoints: [r%d:eth2, r%d:eth1]\n", i, i+1)
	}
	fmt.Fprintf(&b, "    - endpoints: [r%d:eth2, h1:eth1]\n", n)
	return b.String()
}
