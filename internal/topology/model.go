// Package topology reads a containerlab-style topology file into a validated
// model. Raw YAML is resolved once into typed values (netip prefixes, node and
// interface references), so no later stage re-parses strings, and every
// problem is reported with the file and line that caused it.
package topology

import (
	"net/netip"
	"path/filepath"
)

// Topology is a validated lab description.
type Topology struct {
	Name       string
	File       string // absolute path of the topology file
	Method     string // configuration method of the shipped scenarios, "" if unset
	MethodLine int    // line of `method:`, for the rules that enforce it
	// Dataplane is how ESP runs: "auto" (kernel if it can, else userspace),
	// "kernel" or "userspace".
	Dataplane string
	Nodes     []*Node
	Links     []*Link
	// Warnings name what the file asks for that emu ignores (containerlab
	// fields it cannot honour), as "file:line: text".
	Warnings []string
	// Source is the text this model was parsed from: a deploy keeps it, so
	// later commands judge the lab as deployed even once File is edited.
	Source []byte
}

// Node is one element of the lab: a namespace of a given kind.
type Node struct {
	Name       string
	Kind       string
	Roles      Roles // what its kind does in the lab
	Line       int
	Interfaces []*Interface
	Routes     []Route
	Tunnels    []*Tunnel
	BGP        *BGP // nil: no BGP speaker
	// Runtime is RuntimeNamespace (a bare network namespace) or
	// RuntimeDocker (a container whose namespace emu wires the same way).
	Runtime string
	Image   string // container image, for RuntimeDocker
	// Dataplane forces this node's tunnels onto "kernel" or "userspace";
	// "" follows the lab (one end kernel, the other userspace interoperate).
	Dataplane string
	// Bandwidth is the provider's bandwidth spec of the element in Mbit/s,
	// 0 for none: a VPN gateway's `Bandwidth` (CreateVpnGateway), a VBR's
	// Express Connect circuit's `bandwidth` (CreatePhysicalConnection). The
	// node's kind says which values are valid and which interfaces it limits.
	Bandwidth     int
	BandwidthLine int
	Software      Software // host programs the node runs (exec, binds, env, daemons)
}

// Interface is a declared interface of a node. Loopback is "lo"; every other
// interface is one end of exactly one link.
type Interface struct {
	Name  string
	Line  int
	Addrs []netip.Prefix
	MTU   int // 0 keeps the kernel default
}

// Route is a static route in a node's main table.
type Route struct {
	Dst    netip.Prefix
	Via    netip.Addr // invalid when the route is on-link through Dev
	Dev    string
	Metric int
	Line   int
}

// Link is a point-to-point wire between two node interfaces (a veth pair).
type Link struct {
	Ends [2]Endpoint
	Line int
}

// Endpoint names one end of a link.
type Endpoint struct {
	Node      string
	Interface string
}

func (e Endpoint) String() string { return e.Node + ":" + e.Interface }

// Loopback is the name of the interface every namespace has without a link.
const Loopback = "lo"

// LabDir is where deploy keeps the lab's records, next to the topology file
// as containerlab does (clab-<name>/).
func (t *Topology) LabDir() string { return LabDir(t.File, t.Name) }

// LabDir is the lab directory of the lab named name deployed from the
// topology file at path: emu-<name>/ beside the file.
func LabDir(path, name string) string {
	return filepath.Join(filepath.Dir(path), "emu-"+name)
}

// NodeNames lists the names of the nodes, in the file's order.
func (t *Topology) NodeNames() []string {
	s := make([]string, len(t.Nodes))
	for i, n := range t.Nodes {
		s[i] = n.Name
	}
	return s
}

// Node returns the named node, or nil.
func (t *Topology) Node(name string) *Node {
	for _, n := range t.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Owner returns the node holding addr on an interface or as a tunnel
// address, or nil.
func (t *Topology) Owner(addr netip.Addr) *Node {
	for _, n := range t.Nodes {
		if n.Owns(addr) || tunnelOwns(n, addr) {
			return n
		}
	}
	return nil
}

// Interface returns the named interface of n, or nil.
func (n *Node) Interface(name string) *Interface {
	for _, i := range n.Interfaces {
		if i.Name == name {
			return i
		}
	}
	return nil
}

// InterfaceNames lists the declared interface names in file order.
func (n *Node) InterfaceNames() []string {
	names := make([]string, len(n.Interfaces))
	for i, ifc := range n.Interfaces {
		names[i] = ifc.Name
	}
	return names
}

// Connected reports the interface whose subnet holds addr, or nil.
func (n *Node) Connected(addr netip.Addr) *Interface {
	for _, ifc := range n.Interfaces {
		for _, p := range ifc.Addrs {
			if p.Bits() < p.Addr().BitLen() && p.Contains(addr) {
				return ifc
			}
		}
	}
	return nil
}

// Owns reports whether addr is one of the node's own addresses.
func (n *Node) Owns(addr netip.Addr) bool {
	for _, ifc := range n.Interfaces {
		for _, p := range ifc.Addrs {
			if p.Addr() == addr {
				return true
			}
		}
	}
	return false
}
