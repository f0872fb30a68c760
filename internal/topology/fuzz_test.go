package topology_test

import (
	"os"
	"strings"
	"testing"

	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/nodes"
)

// FuzzParse checks that no input makes Parse panic, and that an accepted
// file always yields a model whose links join declared interfaces: later
// stages rely on that without checking again.
func FuzzParse(f *testing.F) {
	static, err := os.ReadFile(staticFile)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(static)
	for _, tc := range badInputs {
		f.Add([]byte(strings.TrimPrefix(tc.yaml, "\n")))
	}
	// Shapes YAML allows that a topology never has.
	for _, s := range []string{
		"&a {name: lab, topology: *a}",
		"name: lab\ntopology:\n  nodes:\n    a: &n {kind: host}\n    b: {<<: *n}\n",
		"? [a]\n: b\n",
		"name: lab\nx-r: &r {kind: linux, exec: [true]}\ntopology:\n  groups: {g: {<<: *r, env: {A: b}}}\n  nodes: {R1: {group: g, binds: [/:/mnt:ro]}, R2: {<<: [*r, *r]}}\n  links: [{endpoints: [R1:eth1, R2:eth1], mtu: 9000}]\n",
		"name: lab\ntopology:\n  nodes:\n    a: {kind: linux, daemons: [{name: d, command: x, wait-for: /run/x}], bgp: {speaker: frr, asn: 1}}\n",
		"name: lab\ntopology:\n  defaults: {kind: linux, env: {A: x, B: ~}}\n  kinds: {linux: {env: [A]}}\n  groups: {g: {env: ~}}\n  nodes: {a: {group: g, env: {B: y}}}\n",
		"name: lab\ntopology:\n  nodes:\n    a: {kind: linux, daemons: [{name: c, command: x}], interfaces: {eth1: 10.0.0.1/24}, ipsec: [{local: 10.0.0.1, remote: 10.0.0.2, speaker: strongswan, ike: {ike-version: ikev2, psk: k}}]}\n    b: {kind: linux, interfaces: {eth1: 10.0.0.2/24}, ipsec: [{local: 10.0.0.2, remote: 10.0.0.1, ike: {ike-version: ikev2, psk: k}}]}\n  links: [{endpoints: [a:eth1, b:eth1]}]\n",
		"name: lab\n---\nname: other\n",
		"name: !!binary aGVsbG8=\ntopology: {nodes: {a: {kind: host}}}\n",
		"{name: lab, topology: {nodes: {a: {kind: host, interfaces: {eth1: 10.0.0.1/24}}, b: {kind: host, interfaces: {eth1: 10.0.0.2/24}}}, links: [{endpoints: [a:eth1, b:eth1]}]}}",
	} {
		f.Add([]byte(s))
	}
	kinds := nodes.Default()
	f.Fuzz(func(t *testing.T, data []byte) {
		topo, err := topology.Parse("lab.yaml", data, kinds)
		if err != nil {
			if topo != nil {
				t.Fatalf("Parse returned a topology with the error %v", err)
			}
			for _, e := range allErrors(t, err) {
				if e.Msg == "" {
					t.Fatalf("an error with no message: %#v", e)
				}
			}
			return
		}
		if topo == nil {
			t.Fatal("Parse returned neither a topology nor an error")
		}
		for _, l := range topo.Links {
			if l.Ends[0] == l.Ends[1] {
				t.Fatalf("link on line %d joins %s to itself", l.Line, l.Ends[0])
			}
			for _, e := range l.Ends {
				n := topo.Node(e.Node)
				if n == nil {
					t.Fatalf("link on line %d: node %q is not declared", l.Line, e.Node)
				}
				if e.Interface == topology.Loopback || n.Interface(e.Interface) == nil {
					t.Fatalf("link on line %d: %s is not a declared, wireable interface", l.Line, e)
				}
			}
		}
	})
}
