// Package bench measures emu's deploy and destroy of a lab against a plain
// shell script of ip commands that creates the same kernel objects. The
// table program is bench/deploy; bench/deploy_test.go holds the `go test
// -bench` entry points.
package bench

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Lab is a topology to measure. Every run gives it a fresh lab name, so its
// YAML text is produced per run.
type Lab struct {
	Label string // row name in the table
	YAML  func(name string) []byte
}

// FileLab is a topology file measured without its IPsec tunnels (every
// node's `ipsec:` and the routes through a tunnel interface are dropped): a
// shell script of ip commands has no counterpart of the tunnel stage, so both
// sides build exactly the namespaces, links, addresses and plain routes.
func FileLab(label, path string) (Lab, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Lab{}, fmt.Errorf("lab %s: %w", label, err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil || len(doc.Content) == 0 {
		return Lab{}, fmt.Errorf("%s: not a topology (%v)", path, err)
	}
	top := doc.Content[0]
	name := value(top, "name")
	if name == nil {
		return Lab{}, fmt.Errorf("%s: no top-level `name:` to replace", path)
	}
	if nodes := value(value(top, "topology"), "nodes"); nodes != nil {
		for i := 1; i < len(nodes.Content); i += 2 {
			dropTunnels(nodes.Content[i])
		}
	}
	return Lab{Label: label, YAML: func(lab string) []byte {
		name.Value = lab
		out, err := yaml.Marshal(&doc)
		if err != nil {
			panic(fmt.Sprintf("bench: re-encode %s: %v", path, err))
		}
		return out
	}}, nil
}

// dropTunnels removes a node's `ipsec:` and its routes whose dev is not one
// of its declared interfaces, which leaves routes through tunnel interfaces.
func dropTunnels(node *yaml.Node) {
	deleteKey(node, "ipsec")
	declared := map[string]bool{}
	if ifs := value(node, "interfaces"); ifs != nil {
		for i := 0; i < len(ifs.Content); i += 2 {
			declared[ifs.Content[i].Value] = true
		}
	}
	routes := value(node, "routes")
	if routes == nil {
		return
	}
	routes.Content = slices.DeleteFunc(routes.Content, func(r *yaml.Node) bool {
		dev := value(r, "dev")
		return dev != nil && !declared[dev.Value]
	})
}

// value is the value of key in mapping m, or nil.
func value(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func deleteKey(m *yaml.Node, key string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = slices.Delete(m.Content, i, i+2)
			return
		}
	}
}

// Chain is n forwarding routers in a row (kinds vbr and cen alternating),
// each linked to the next over a /30, with a host at each end. Every router
// has a static route to each host subnet it is not attached to and every
// host a default route, so the route stage has about 2n steps.
func Chain(n int) Lab {
	return Lab{Label: fmt.Sprintf("chain-%d", n), YAML: func(name string) []byte { return chainYAML(name, n) }}
}

func chainYAML(name string, n int) []byte {
	// Link i (0..n) joins the node on its left (host "ha" for i = 0, else
	// router i) to the node on its right (router i+1, or host "hb" for
	// i = n), on subnet 10.0.0.0 + 4i /30: left end .1, right end .2.
	subnet := func(i int) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 14), byte(i >> 6), byte(i << 2)}), 30)
	}
	left := func(i int) netip.Addr { return subnet(i).Addr().Next() }
	right := func(i int) netip.Addr { return left(i).Next() }
	router := func(i int) string { return fmt.Sprintf("r%d", i) }

	var b strings.Builder
	fmt.Fprintf(&b, "name: %s\ntopology:\n  nodes:\n", name)
	fmt.Fprintf(&b, "    ha:\n      kind: host\n      interfaces: {eth1: %s/30}\n      routes:\n        - {dst: default, via: %s}\n", left(0), right(0))
	for i := 1; i <= n; i++ {
		kind := "vbr"
		if i%2 == 0 {
			kind = "cen"
		}
		var routes []string
		if i > 1 {
			routes = append(routes, fmt.Sprintf("{dst: %s, via: %s}", subnet(0), left(i-1)))
		}
		if i < n {
			routes = append(routes, fmt.Sprintf("{dst: %s, via: %s}", subnet(n), right(i)))
		}
		fmt.Fprintf(&b, "    %s:\n      kind: %s\n      interfaces: {eth1: %s/30, eth2: %s/30}\n", router(i), kind, right(i-1), left(i))
		if len(routes) > 0 {
			fmt.Fprintf(&b, "      routes: [%s]\n", strings.Join(routes, ", "))
		}
	}
	fmt.Fprintf(&b, "    hb:\n      kind: host\n      interfaces: {eth1: %s/30}\n      routes:\n        - {dst: default, via: %s}\n", right(n), left(n))
	b.WriteString("  links:\n")
	for i := 0; i <= n; i++ {
		a, z := router(i)+":eth2", router(i+1)+":eth1"
		if i == 0 {
			a = "ha:eth1"
		}
		if i == n {
			z = "hb:eth1"
		}
		fmt.Fprintf(&b, "    - endpoints: [%q, %q]\n", a, z)
	}
	return []byte(b.String())
}
