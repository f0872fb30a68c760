// Package plan turns a validated topology into the ordered list of objects a
// deploy creates. A plan is pure data: --dry-run prints it, apply executes it,
// and nothing in it needs the topology file again.
package plan

import (
	"fmt"
	"net/netip"

	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/nodes"
)

// Plan is everything one lab deploy creates, stage by stage. Every step of a
// stage can run in parallel with the others of that stage; a stage starts
// when the previous one is complete.
type Plan struct {
	Lab      string
	Topology string // absolute path of the topology file
	LabDir   string
	Nodes    []Node
	Stages   []Stage
}

// Node is what inspect needs to know of a node without the topology file.
type Node struct {
	Name      string `json:"name"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
}

// Stage is a named group of independent steps.
type Stage struct {
	Name  string
	Steps []Step
}

// Step is one object to create. Its concrete type says which.
type Step interface{ String() string }

// Namespace is a network namespace for one node, mounted under /run/netns.
type Namespace struct {
	Name       string
	Forwarding bool // router-like kinds forward between interfaces
	IPv6       bool // the node has IPv6 addresses or routes
}

// Veth is a link: a veth pair whose ends are created directly in their nodes'
// namespaces, so nothing ever appears in the host namespace.
type Veth struct {
	A, B End
	MTU  int
}

// End is one end of a veth pair.
type End struct {
	Namespace string
	Interface string
}

// Address is an interface address.
type Address struct {
	Namespace string
	Interface string
	Prefix    netip.Prefix
}

// Route is a static route in a namespace's main table.
type Route struct {
	Namespace string
	Dst       netip.Prefix
	Via       netip.Addr
	Dev       string
	Metric    int
}

func (s Namespace) String() string {
	fwd := "host"
	if s.Forwarding {
		fwd = "forwarding"
	}
	return fmt.Sprintf("netns %s (%s)", s.Name, fwd)
}

func (s Veth) String() string {
	mtu := ""
	if s.MTU > 0 {
		mtu = fmt.Sprintf(" mtu %d", s.MTU)
	}
	return fmt.Sprintf("veth %s:%s <-> %s:%s%s", s.A.Namespace, s.A.Interface, s.B.Namespace, s.B.Interface, mtu)
}

func (s Address) String() string {
	return fmt.Sprintf("addr %s dev %s in %s", s.Prefix, s.Interface, s.Namespace)
}

func (s Route) String() string {
	out := fmt.Sprintf("route %s", s.Dst)
	if s.Via.IsValid() {
		out += " via " + s.Via.String()
	}
	if s.Dev != "" {
		out += " dev " + s.Dev
	}
	if s.Metric != 0 {
		out += fmt.Sprintf(" metric %d", s.Metric)
	}
	return out + " in " + s.Namespace
}

// NamespaceName is the namespace of a node, named so `ip netns exec` works.
func NamespaceName(lab, node string) string { return "emu-" + lab + "-" + node }

// Build makes the plan of a topology.
func Build(t *topology.Topology, kinds *nodes.Registry) *Plan {
	p := &Plan{Lab: t.Name, Topology: t.File, LabDir: t.LabDir()}
	var nss, veths, addrs, routes []Step
	for _, n := range t.Nodes {
		ns := NamespaceName(t.Name, n.Name)
		p.Nodes = append(p.Nodes, Node{Name: n.Name, Kind: n.Kind, Namespace: ns})
		nss = append(nss, Namespace{Name: ns, Forwarding: kinds.Get(n.Kind).Forwards, IPv6: usesIPv6(n)})
		for _, ifc := range n.Interfaces {
			for _, a := range ifc.Addrs {
				addrs = append(addrs, Address{Namespace: ns, Interface: ifc.Name, Prefix: a})
			}
		}
		for _, r := range n.Routes {
			routes = append(routes, Route{Namespace: ns, Dst: r.Dst, Via: r.Via, Dev: r.Dev, Metric: r.Metric})
		}
	}
	for _, l := range t.Links {
		v := Veth{}
		for i, e := range l.Ends {
			end := End{Namespace: NamespaceName(t.Name, e.Node), Interface: e.Interface}
			if i == 0 {
				v.A = end
			} else {
				v.B = end
			}
			if mtu := t.Node(e.Node).Interface(e.Interface).MTU; mtu > v.MTU {
				v.MTU = mtu
			}
		}
		veths = append(veths, v)
	}
	p.Stages = []Stage{
		{Name: "namespaces", Steps: nss},
		{Name: "links", Steps: veths},
		{Name: "addresses", Steps: addrs},
		{Name: "routes", Steps: routes},
	}
	return p
}

func usesIPv6(n *topology.Node) bool {
	for _, ifc := range n.Interfaces {
		for _, a := range ifc.Addrs {
			if a.Addr().Is6() {
				return true
			}
		}
	}
	for _, r := range n.Routes {
		if r.Dst.Addr().Is6() {
			return true
		}
	}
	return false
}

// StepCount is the number of steps of all stages.
func (p *Plan) StepCount() int {
	n := 0
	for _, s := range p.Stages {
		n += len(s.Steps)
	}
	return n
}
