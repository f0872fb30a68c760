package topology_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/nodes"
)

// mark is the comment that shows, in a test topology, the line the first
// error must point at. A case without it expects an error with no line.
const mark = "# <- error"

// badInputs are topology files with one mistake each, the line it is on
// marked, and words of the message that tell the user how to fix it. The
// fuzz target starts from them too.
var badInputs = []struct {
	name string
	yaml string
	want string // substring of the first error's message
}{
	// The file as a whole.
	{"not YAML", `
name: lab
topology: [nodes, # <- error
`, "not valid YAML"},
	{"tab indentation", `
name: lab
topology:
	nodes: {} # <- error
`, "a tab indents this line (column 1): YAML indents with spaces only; replace the tab with spaces"},
	{"tab after spaces in the indentation", "name: lab\ntopology:\n  nodes:\n    a: {kind: host}\n  \tlinks: [] # <- error\n",
		"a tab indents this line (column 3)"},
	{"tab on a line of its own", "name: lab\ntopology:\n  nodes:\n    a:\n      kind: host\n\t # <- error\n",
		"a tab indents this line (column 1)"},
	{"tab before the first key", "\tname: lab # <- error\n", "a tab indents this line (column 1)"},
	{"NUL byte", "name: lab\ntopology:\n  nodes:\n    a: {kind: ho\x00st} # <- error\n",
		"a NUL byte at column 17: a topology is YAML text, not a binary file"},
	{"not UTF-8", "name: lab\ntopology:\n  nodes:\n    a: {kind: h\xf6st} # <- error\n",
		"byte 0xf6 at column 16 is not UTF-8: a topology is UTF-8 text; save the file as UTF-8"},
	{"control character", "name: lab\x1b # <- error\ntopology: {nodes: {a: {kind: host}}}\n",
		"control character U+001B at column 10: YAML does not allow it"},
	{"second YAML document", `
name: lab
topology:
  nodes:
    a: {kind: host}
--- # <- error
name: other
`, "a second YAML document starts here (`---`): emu reads one lab per file and would ignore it: remove the `---` and what follows, or move that lab to its own file"},
	{"broken second YAML document", `
name: lab
topology:
  nodes:
    a: {kind: host}
--- # <- error
name: [other
`, "a second YAML document starts here (`---`)"},
	{"empty file", ``, "it needs at least `name:` and `topology: {nodes: ...}`"},
	{"only comments", `
# a lab, some day
`, "it needs at least `name:`"},
	{"top level is a list", `
- name: lab # <- error
`, "top level must be a mapping of key: value, not a list"},

	// Top-level fields.
	{"missing name", `topology: # <- error
  nodes:
    a: {kind: host}
`, "add one at the top, e.g. `name: mylab`"},
	{"bad lab name chars", `
name: My Lab # <- error
topology:
  nodes:
    a: {kind: host}
`, "may hold only letters, digits, '-' and '_'"},
	{"lab name too long", `
name: a-lab-name-that-is-far-too-long-for-ip-netns # <- error
topology:
  nodes:
    a: {kind: host}
`, "use at most 32"},
	{"lab name is a list", `
name: [a, b] # <- error
topology:
  nodes:
    a: {kind: host}
`, "name must be a single value, not a list"},
	{"unknown top-level field", `
name: lab
methd: static # <- error
topology:
  nodes:
    a: {kind: host}
`, `unknown field "methd" (did you mean "method"?)`},
	{"top-level field given twice", `
name: lab
name: lab2 # <- error
topology:
  nodes:
    a: {kind: host}
`, `"name" is given twice (first at line 1): keep one`},
	{"unknown method", `
name: lab
method: statik # <- error
topology:
  nodes:
    a: {kind: host}
`, `method "statik" is not one of static, static-bgp, bgp (did you mean "static"?)`},
	{"no topology section", `
name: lab # <- error
`, "add `topology:` with `nodes:` and `links:`"},
	{"topology section is a value", `
name: lab
topology: nodes # <- error
`, "topology must be a mapping of key: value, not the value \"nodes\""},
	{"no nodes", `
name: lab
topology: # <- error
  links: []
`, "declare them under `topology: nodes:`"},
	{"empty nodes", `
name: lab
topology:
  nodes: {} # <- error
`, "declare them under `topology: nodes:`"},
	{"YAML merge key that is not a mapping", `
name: lab
topology:
  nodes:
    a: &k host
    b: {<<: *k} # <- error
`, `merge key <<: takes a mapping or a list of mappings (usually *anchor), not the value "host"`},
	{"nodes as a list", `
name: lab
topology:
  nodes:
    - a # <- error
`, "nodes must be a mapping of key: value, not a list"},
	{"unknown topology field", `
name: lab
topology:
  node: # <- error
    a: {kind: host}
`, `unknown field "node" (did you mean "nodes"?)`},

	// Defaults and kinds.
	{"defaults.kind unknown", `
name: lab
topology:
  defaults:
    kind: hots # <- error
  nodes:
    a: {}
`, `unknown kind "hots" (did you mean "host"?): use one of cen, host, linux, onprem-gateway, vbr, vpc, vpn-gateway`},
	{"kinds section with unknown kind", `
name: lab
topology:
  kinds:
    router: {} # <- error
  nodes:
    a: {kind: host}
`, `unknown kind "router": use one of cen, host`},

	// Nodes.
	{"unknown node field", `
name: lab
topology:
  nodes:
    a:
      kind: host
      interface: # <- error
        eth1: 10.0.0.1/24
`, `unknown field "interface" (did you mean "interfaces"?) (allowed: kind, group, interfaces, routes`},
	{"node without kind", `
name: lab
topology:
  nodes:
    a: # <- error
      interfaces: {}
`, "add `kind:` (one of cen, host, linux, onprem-gateway, vbr, vpc, vpn-gateway) or set `topology: defaults: kind:`"},
	{"unknown kind", `
name: lab
topology:
  nodes:
    a:
      kind: vpn-gw # <- error
`, `unknown kind "vpn-gw": use one of cen, host, linux, onprem-gateway, vbr, vpc, vpn-gateway`},
	{"kind typo", `
name: lab
topology:
  nodes:
    a:
      kind: vpn-gatway # <- error
`, `(did you mean "vpn-gateway"?)`},
	{"bad node name", `
name: lab
topology:
  nodes:
    "client 1": # <- error
      kind: host
`, `node name "client 1" may hold only letters`},
	{"node name with a colon", `
name: lab
topology:
  nodes:
    "a:b": # <- error
      kind: host
`, `node name "a:b" may hold only letters`},
	{"duplicate node", `
name: lab
topology:
  nodes:
    a: {kind: host}
    a: {kind: vbr} # <- error
`, `nodes: "a" is given twice (first at line 4): keep one`},

	// Interfaces and addresses.
	{"interface name over 15 chars", `
name: lab
topology:
  nodes:
    a:
      kind: host
      interfaces:
        uplink-to-the-vbr: 10.0.0.1/24 # <- error
`, `interface name "uplink-to-the-vbr" is 17 characters: Linux allows at most 15`},
	{"bad interface name chars", `
name: lab
topology:
  nodes:
    a:
      kind: host
      interfaces:
        eth/1: 10.0.0.1/24 # <- error
`, `interface name "eth/1" may hold only letters, digits, '.', '-' and '_'`},
	{"interfaces as a list", `
name: lab
topology:
  nodes:
    a:
      kind: host
      interfaces:
        - eth1 # <- error
`, `interfaces of "a" must be a mapping of key: value, not a list`},
	{"bad CIDR", `
name: lab
topology:
  nodes:
    a:
      kind: host
      interfaces:
        eth1: 10.0.0.300/24 # <- error
`, `"10.0.0.300/24" is not an address with prefix length (like 10.0.0.1/24 or fd00::1/64)`},
	{"address without prefix length", `
name: lab
topology:
  nodes:
    a:
      kind: host
      interfaces:
        eth1: 10.0.0.1 # <- error
`, "write 10.0.0.1/24 for a subnet, or /32 for a single address"},
	{"IPv6 address without prefix length", `
name: lab
topology:
  nodes:
    a:
      kind: host
      interfaces:
        eth1: [10.0.0.1/24, "fd00::1"] # <- error
`, "write fd00::1/64 for a subnet, or /128 for a single address"},
	{"address list holds a mapping", `
name: lab
topology:
  nodes:
    a:
      kind: host
      interfaces:
        eth1:
          - {ip: 10.0.0.1/24} # <- error
`, "addresses: each entry must be a single value, not a mapping"},
	{"unknown interface field", `
name: lab
topology:
  nodes:
    a:
      kind: host
      interfaces:
        eth1:
          address: 10.0.0.1/24 # <- error
`, `unknown field "address" (did you mean "addresses"?)`},
	{"mtu out of range", `
name: lab
topology:
  nodes:
    a:
      kind: host
      interfaces:
        eth1:
          addresses: 10.0.0.1/24
          mtu: 70000 # <- error
`, "mtu must be a whole number from 68 to 65535"},
	{"mtu not a number", `
name: lab
topology:
  nodes:
    a:
      kind: host
      interfaces:
        eth1: {mtu: jumbo} # <- error
`, `mtu must be a whole number from 68 to 65535, not "jumbo"`},
	{"duplicate address in the lab", `
name: lab
topology:
  nodes:
    a:
      kind: host
      interfaces:
        eth1: 10.0.0.1/24
    b:
      kind: host
      interfaces:
        eth1: 10.0.0.1/24 # <- error
  links:
    - endpoints: ["a:eth1", "b:eth1"]
`, "already used by a:eth1: every address in a lab must be unique"},
	{"overlapping subnets on one node", `
name: lab
topology:
  nodes:
    a:
      kind: vbr
      interfaces:
        eth1: 10.0.0.1/24
        eth2: 10.0.0.129/25 # <- error
    b:
      kind: host
      interfaces:
        eth1: 10.0.0.2/24
    c:
      kind: host
      interfaces:
        eth1: 10.0.0.130/25
  links:
    - endpoints: ["a:eth1", "b:eth1"]
    - endpoints: ["a:eth2", "c:eth1"]
`, `node "a": subnet 10.0.0.128/25 on eth2 overlaps 10.0.0.0/24 on eth1: give each interface its own subnet`},

	// Links.
	{"links as a mapping", `
name: lab
topology:
  nodes:
    a: {kind: host}
  links:
    endpoints: ["a:eth1", "b:eth1"] # <- error
`, `links must be a list (entries starting with "- "), not a mapping`},
	{"unknown link field", `
name: lab
topology:
  nodes:
    a: {kind: host}
  links:
    - endpoint: ["a:eth1", "b:eth1"] # <- error
`, `unknown field "endpoint" (did you mean "endpoints"?)`},
	{"link endpoint malformed", `
name: lab
topology:
  nodes:
    a: {kind: host, interfaces: {eth1: 10.0.0.1/24}}
    b: {kind: host, interfaces: {eth1: 10.0.0.2/24}}
  links:
    - endpoints: ["a:eth1",
                  "b-eth1"] # <- error
`, `link endpoint "b-eth1" must be written node:interface, like "vbr:eth1"`},
	{"link with one endpoint", `
name: lab
topology:
  nodes:
    a: {kind: host, interfaces: {eth1: 10.0.0.1/24}}
  links:
    - endpoints: ["a:eth1"] # <- error
`, "a link needs exactly two endpoints, like `endpoints: [\"a:eth1\", \"b:eth1\"]`, found 1"},
	{"link with three endpoints", `
name: lab
topology:
  nodes:
    a: {kind: host, interfaces: {eth1: 10.0.0.1/24}}
    b: {kind: host, interfaces: {eth1: 10.0.0.2/24}}
    c: {kind: host, interfaces: {eth1: 10.0.0.3/24}}
  links:
    - endpoints: ["a:eth1", "b:eth1", "c:eth1"] # <- error
`, "a link needs exactly two endpoints, like `endpoints: [\"a:eth1\", \"b:eth1\"]`, found 3"},
	{"link without endpoints", `
name: lab
topology:
  nodes:
    a: {kind: host}
  links:
    - {} # <- error
`, "a link needs exactly two endpoints"},
	{"link to undeclared node", `
name: lab
topology:
  nodes:
    a: {kind: host, interfaces: {eth1: 10.0.0.1/24}}
    b: {kind: host, interfaces: {eth1: 10.0.0.2/24}}
  links:
    - endpoints: ["a:eth1", "c:eth1"] # <- error
`, `link "c:eth1": node "c" is not declared (declared: a, b)`},
	{"link to undeclared interface", `
name: lab
topology:
  nodes:
    a: {kind: host, interfaces: {eth1: 10.0.0.1/24}}
    b: {kind: vbr, interfaces: {eth1: 10.0.0.2/24, eth2: 10.0.1.1/24}}
  links:
    - endpoints: ["a:eth1", "b:eth9"] # <- error
`, "node \"b\" has no interface eth9 (declared: eth1, eth2): add it under the node's `interfaces:`"},
	{"interface used by two links", `
name: lab
topology:
  nodes:
    a: {kind: vbr, interfaces: {eth1: 10.0.0.1/24}}
    b: {kind: host, interfaces: {eth1: 10.0.0.2/24}}
    c: {kind: host, interfaces: {eth1: 10.0.0.3/24}}
  links:
    - endpoints: ["a:eth1", "b:eth1"]
    - endpoints: ["a:eth1", "c:eth1"] # <- error
`, "interface a:eth1 is already wired by the link at line 8: each interface takes one link"},
	{"link from an interface to itself", `
name: lab
topology:
  nodes:
    a: {kind: host, interfaces: {eth1: 10.0.0.1/24}}
  links:
    - endpoints: ["a:eth1", "a:eth1"] # <- error
`, "connects an interface to itself: name two different interfaces"},
	{"loopback in a link", `
name: lab
topology:
  nodes:
    a: {kind: host, interfaces: {lo: 192.0.2.1/32}}
    b: {kind: host, interfaces: {eth1: 10.0.0.2/24}}
  links:
    - endpoints: ["a:lo", "b:eth1"] # <- error
`, "lo is the loopback interface and cannot be wired: use an interface like eth1"},
	{"interface declared but not linked", `
name: lab
topology:
  nodes:
    a:
      kind: vbr
      interfaces:
        eth1: 10.0.0.1/24
        eth2: 10.0.1.1/24 # <- error
    b: {kind: host, interfaces: {eth1: 10.0.0.2/24}}
  links:
    - endpoints: ["a:eth1", "b:eth1"]
`, "interface a:eth2 is declared but no link uses it: add a link or remove the interface"},
	{"link ends in different subnets", `
name: lab
topology:
  nodes:
    a: {kind: host, interfaces: {eth1: 10.0.0.1/24}}
    b: {kind: host, interfaces: {eth1: 10.0.1.2/24}}
  links:
    - endpoints: ["a:eth1", "b:eth1"] # <- error
`, "addresses 10.0.0.1/24 and 10.0.1.2/24 are in different subnets: put both ends in one subnet"},

	// Routes.
	{"routes as a mapping", `
name: lab
topology:
  nodes:
    a:
      kind: host
      routes:
        dst: default # <- error
`, `routes of "a" must be a list (entries starting with "- "), not a mapping`},
	{"unknown route field", `
name: lab
topology:
  nodes:
    a:
      kind: host
      routes:
        - {dst: default, gw: 10.0.0.1} # <- error
`, `unknown field "gw" (allowed: dst, via, dev, metric`},
	{"route dst not a prefix", `
name: lab
topology:
  nodes:
    a:
      kind: host
      routes:
        - {dst: internet, via: 10.0.0.2} # <- error
`, `route dst: "internet" is not an address with prefix length (like 10.0.0.1/24 or fd00::1/64)`},
	{"route dst without prefix length", `
name: lab
topology:
  nodes:
    a:
      kind: host
      routes:
        - {dst: 10.9.0.0, via: 10.0.0.2} # <- error
`, "write 10.9.0.0/24 for a subnet, or /32 for a single address"},
	{"route dst with host bits", `
name: lab
topology:
  nodes:
    a:
      kind: host
      routes:
        - {dst: 10.9.1.0/16, via: 10.0.0.2} # <- error
`, "destination 10.9.1.0/16 has host bits set: write 10.9.0.0/16"},
	{"route without dst", `
name: lab
topology:
  nodes:
    a:
      kind: host
      routes:
        - {via: 10.0.0.2} # <- error
`, "has no `dst:`: give the destination prefix (or `default`)"},
	{"route without via and dev", `
name: lab
topology:
  nodes:
    a:
      kind: host
      routes:
        - {dst: default} # <- error
`, "needs `via:` (next-hop address) or `dev:` (an interface of the node)"},
	{"route via not an address", `
name: lab
topology:
  nodes:
    a:
      kind: host
      routes:
        - {dst: default, via: 10.0.0.2/24} # <- error
`, `via "10.0.0.2/24" is not an IP address (write the next hop's address, without a prefix length)`},
	{"route metric not a number", `
name: lab
topology:
  nodes:
    a:
      kind: host
      routes:
        - {dst: default, via: 10.0.0.2, metric: -1} # <- error
`, "metric must be a whole number from 0 to 2147483647"},
	{"route via outside every connected subnet", `
name: lab
topology:
  nodes:
    a:
      kind: host
      interfaces: {eth1: 10.0.0.1/24}
      routes:
        - {dst: default, via: 10.0.1.1} # <- error
    b: {kind: host, interfaces: {eth1: 10.0.0.2/24}}
  links:
    - endpoints: ["a:eth1", "b:eth1"]
`, "next hop 10.0.1.1 is outside every connected subnet of the node (10.0.0.0/24): use a neighbour's address on a shared link"},
	{"route via own address", `
name: lab
topology:
  nodes:
    a:
      kind: host
      interfaces: {eth1: 10.0.0.1/24}
      routes:
        - {dst: default, via: 10.0.0.1} # <- error
    b: {kind: host, interfaces: {eth1: 10.0.0.2/24}}
  links:
    - endpoints: ["a:eth1", "b:eth1"]
`, "next hop 10.0.0.1 is the node's own address: give a neighbour's address"},
	{"route dev not an interface", `
name: lab
topology:
  nodes:
    a:
      kind: host
      interfaces: {eth1: 10.0.0.1/24}
      routes:
        - {dst: default, dev: eth0} # <- error
    b: {kind: host, interfaces: {eth1: 10.0.0.2/24}}
  links:
    - endpoints: ["a:eth1", "b:eth1"]
`, "dev eth0 is not an interface of the node (declared: eth1)"},
	{"route via outside its dev's subnet", `
name: lab
topology:
  nodes:
    a:
      kind: vbr
      interfaces: {eth1: 10.0.0.1/24, eth2: 10.0.1.1/24}
      routes:
        - {dst: default, via: 10.0.1.2, dev: eth1} # <- error
    b: {kind: host, interfaces: {eth1: 10.0.0.2/24}}
    c: {kind: host, interfaces: {eth1: 10.0.1.2/24}}
  links:
    - endpoints: ["a:eth1", "b:eth1"]
    - endpoints: ["a:eth2", "c:eth1"]
`, "next hop 10.0.1.2 is not in a subnet of eth1 (10.0.0.0/24)"},
	{"duplicate route", `
name: lab
topology:
  nodes:
    a:
      kind: host
      interfaces: {eth1: 10.0.0.1/24}
      routes:
        - {dst: 10.9.0.0/16, via: 10.0.0.2}
        - {dst: 10.9.0.0/16, via: 10.0.0.3} # <- error
    b: {kind: host, interfaces: {eth1: 10.0.0.2/24}}
  links:
    - endpoints: ["a:eth1", "b:eth1"]
`, "a route to 10.9.0.0/16 with metric 0 is already given at line 8: keep one, or give them different metrics"},
	{"route family mismatch", `
name: lab
topology:
  nodes:
    a:
      kind: host
      interfaces: {eth1: [10.0.0.1/24, "fd00::1/64"]}
      routes:
        - {dst: default, via: "fd00::2"} # <- error
    b: {kind: host, interfaces: {eth1: [10.0.0.2/24, "fd00::2/64"]}}
  links:
    - endpoints: ["a:eth1", "b:eth1"]
`, "next hop fd00::2 is of the other IP family: give a next hop of the destination's family (`dst: default` is IPv4; write `::/0` for IPv6)"},

	// IPsec connections: the two ends must describe one tunnel.
	{"tunnel addresses not in one /30", `
name: lab
topology:
  nodes:
    a:
      kind: onprem-gateway
      interfaces: {eth1: 10.0.0.1/30}
      ipsec: [{name: t, local: 10.0.0.1, remote: 10.0.0.2, address: 169.254.10.1/30}] # <- error
    b:
      kind: vpn-gateway
      interfaces: {eth1: 10.0.0.2/30}
      ipsec: [{name: t, local: 10.0.0.2, remote: 10.0.0.1, address: 169.254.11.2/30}]
  links:
    - endpoints: ["a:eth1", "b:eth1"]
`, `node "a" connection t: tunnel addresses 169.254.10.1/30 here and 169.254.11.2/30 on "b" (line 11) are not in one subnet: the ends of a tunnel share one /30, e.g. 169.254.10.1/30 and 169.254.10.2/30`},
	{"tunnel ends with the same address", `
name: lab
topology:
  nodes:
    a:
      kind: onprem-gateway
      interfaces: {eth1: 10.0.0.1/30}
      ipsec: [{name: t, local: 10.0.0.1, remote: 10.0.0.2, address: 169.254.10.1/30}] # <- error
    b:
      kind: vpn-gateway
      interfaces: {eth1: 10.0.0.2/30}
      ipsec: [{name: t, local: 10.0.0.2, remote: 10.0.0.1, address: 169.254.10.1/30}]
  links:
    - endpoints: ["a:eth1", "b:eth1"]
`, "both ends have tunnel address 169.254.10.1 (the other at line 11): give each end its own address of 169.254.10.0/30, e.g. 169.254.10.1 and 169.254.10.2"},
	{"tunnel address is the subnet's network address", `
name: lab
topology:
  nodes:
    a:
      kind: onprem-gateway
      interfaces: {eth1: 10.0.0.1/30}
      ipsec: [{name: t, local: 10.0.0.1, remote: 10.0.0.2, address: 169.254.10.0/30}] # <- error
    b:
      kind: vpn-gateway
      interfaces: {eth1: 10.0.0.2/30}
      ipsec: [{name: t, local: 10.0.0.2, remote: 10.0.0.1, address: 169.254.10.2/30}]
  links:
    - endpoints: ["a:eth1", "b:eth1"]
`, "tunnel address 169.254.10.0 is the network or broadcast address of 169.254.10.0/30: use its host addresses, e.g. 169.254.10.1 and 169.254.10.2"},
	{"only one tunnel end has an address", `
name: lab
topology:
  nodes:
    a:
      kind: onprem-gateway
      interfaces: {eth1: 10.0.0.1/30}
      ipsec: [{name: t, local: 10.0.0.1, remote: 10.0.0.2}]
    b:
      kind: vpn-gateway
      interfaces: {eth1: 10.0.0.2/30}
      ipsec: [{name: u, local: 10.0.0.2, remote: 10.0.0.1, address: 169.254.10.2/30}] # <- error
  links:
    - endpoints: ["a:eth1", "b:eth1"]
`, `node "b" connection u has tunnel address 169.254.10.2/30 but the other end ("a" connection t, line 7) has none: give it ` + "`address: 169.254.10.1/30`" + ` (both ends in one subnet), or remove this one`},
	{"tunnel ends do not mirror each other", `
name: lab
topology:
  nodes:
    a:
      kind: onprem-gateway
      interfaces: {eth1: 10.0.0.1/29}
      ipsec: [{name: t, local: 10.0.0.1, remote: 10.0.0.2}] # <- error
    b:
      kind: vpn-gateway
      interfaces: {eth1: 10.0.0.2/29}
      ipsec: [{name: u, local: 10.0.0.2, remote: 10.0.0.3}]
  links:
    - endpoints: ["a:eth1", "b:eth1"]
`, `node "a" connection t: the other end on "b" (connection u, line 11) goes from 10.0.0.2 to 10.0.0.3, not to 10.0.0.1: local and remote of the two ends must mirror each other: set ` + "`remote: 10.0.0.1`" + ` there`},
	{"two connections with the same endpoints on one node", `
name: lab
topology:
  nodes:
    a:
      kind: onprem-gateway
      interfaces: {eth1: 10.0.0.1/30}
      ipsec:
        - {name: t1, local: 10.0.0.1, remote: 10.0.0.2, interface: ipsec0}
        - {name: t2, local: 10.0.0.1, remote: 10.0.0.2, interface: ipsec1} # <- error
    b:
      kind: vpn-gateway
      interfaces: {eth1: 10.0.0.2/30}
      ipsec: [{name: u, local: 10.0.0.2, remote: 10.0.0.1}]
  links:
    - endpoints: ["a:eth1", "b:eth1"]
`, `node "a" connection t2: connection t1 (line 8) already joins 10.0.0.1 and 10.0.0.2: two connections between the same endpoints cannot be told apart on the wire`},
}

// TestParse_RejectsBadInput checks that each mistake is caught, located on
// its line, and explained with the fix.
func TestParse_RejectsBadInput(t *testing.T) {
	seen := map[string]bool{}
	for _, tc := range badInputs {
		if seen[tc.name] {
			t.Fatalf("two cases named %q", tc.name)
		}
		seen[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			data := strings.TrimPrefix(tc.yaml, "\n")
			topo, err := topology.Parse("lab.yaml", []byte(data), nodes.Default())
			if err == nil {
				t.Fatalf("Parse accepted the file: %+v", topo)
			}
			if topo != nil {
				t.Errorf("Parse returned a topology with the error %v", err)
			}
			first := firstError(t, err)
			if got, want := first.Line, markedLine(data); got != want {
				t.Errorf("first error is on line %d, want line %d:\n%v", got, want, err)
			}
			wantPrefix := "lab.yaml: "
			if first.Line > 0 {
				wantPrefix = fmt.Sprintf("lab.yaml:%d: ", first.Line)
			}
			if msg := first.Error(); !strings.HasPrefix(msg, wantPrefix) {
				t.Errorf("error %q does not start with %q", msg, wantPrefix)
			}
			if !strings.Contains(first.Msg, tc.want) {
				t.Errorf("first error does not say %q:\n%v", tc.want, err)
			}
		})
	}
}

// markedLine is the 1-based line holding mark, or 0.
func markedLine(data string) int {
	for i, l := range strings.Split(data, "\n") {
		if strings.Contains(l, mark) {
			return i + 1
		}
	}
	return 0
}

// allErrors unwraps what Parse returns: one *Error or an Errors list.
func allErrors(t *testing.T, err error) topology.Errors {
	t.Helper()
	var list topology.Errors
	if errors.As(err, &list) {
		if len(list) == 0 {
			t.Fatalf("empty error list")
		}
		return list
	}
	var one *topology.Error
	if errors.As(err, &one) {
		return topology.Errors{one}
	}
	t.Fatalf("error %v (%T) is neither *topology.Error nor topology.Errors", err, err)
	return nil
}

func firstError(t *testing.T, err error) *topology.Error {
	t.Helper()
	return allErrors(t, err)[0]
}
