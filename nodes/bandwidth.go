package nodes

import (
	"fmt"
	"slices"
	"strings"

	"github.com/emu-lab/emu/internal/topology"
)

// BandwidthSpec is how a kind emulates the provider's bandwidth spec (a
// node's `bandwidth:`, Mbit/s): which values the provider sells, and which
// interfaces' egress carries the element's traffic and is limited to it.
type BandwidthSpec struct {
	// Of names what the spec is the bandwidth of, for the plan.
	Of string
	// Field names the provider's API field, for messages.
	Field string
	// Allowed lists the values the provider sells; nil allows any in
	// 1..100000 (the topology's range).
	Allowed []int
	// Limits returns the interfaces to limit; none means the node lacks
	// what the spec applies to, which validation reports.
	Limits func(t *topology.Topology, n *topology.Node) []topology.Endpoint
	// SplitESP gives ESP and the rest the full rate each: the two
	// directions through a one-armed gateway leave by one interface, ESP
	// toward the data center and clear into the VPC.
	SplitESP bool
}

// Limits returns the interfaces whose egress a node's bandwidth limits,
// with its kind's spec; nil when the node has no bandwidth or its kind no
// spec (refused by Validate).
func (r *Registry) Limits(t *topology.Topology, n *topology.Node) ([]topology.Endpoint, *BandwidthSpec) {
	k := r.Get(n.Kind)
	if n.Bandwidth == 0 || k == nil || k.Bandwidth == nil {
		return nil, nil
	}
	return k.Bandwidth.Limits(t, n), k.Bandwidth
}

// bandwidthProblems checks a node's `bandwidth:` against its kind's spec.
func (r *Registry) bandwidthProblems(t *topology.Topology, n *topology.Node) []problem {
	if n.Bandwidth == 0 {
		return nil
	}
	k := r.Get(n.Kind)
	if k == nil {
		return nil
	}
	if k.Bandwidth == nil {
		var with []string
		for _, name := range r.Names() {
			if s := r.Get(name).Bandwidth; s != nil {
				with = append(with, fmt.Sprintf("%s (%s)", name, s.Field))
			}
		}
		return []problem{problemf(n.BandwidthLine, "node %q: kind %s has no bandwidth spec to emulate: `bandwidth:` belongs to %s; remove it here", n.Name, n.Kind, strings.Join(with, ", "))}
	}
	s := k.Bandwidth
	var out []problem
	if s.Allowed != nil && !slices.Contains(s.Allowed, n.Bandwidth) {
		out = append(out, problemf(n.BandwidthLine, "node %q: bandwidth %d Mbit/s is not sold for a %s (%s): use one of %s", n.Name, n.Bandwidth, k.Element, s.Field, joinInts(s.Allowed)))
	}
	if len(s.Limits(t, n)) == 0 {
		out = append(out, problemf(n.BandwidthLine, "node %q: bandwidth %d Mbit/s (%s) limits nothing: the %s has no link it applies to", n.Name, n.Bandwidth, s.Field, k.Element))
	}
	return out
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, " or ")
}

// ownInterfaces limits everything the node sends.
func ownInterfaces(t *topology.Topology, n *topology.Node) []topology.Endpoint {
	var out []topology.Endpoint
	for _, l := range t.Links {
		for _, e := range l.Ends {
			if e.Node == n.Name {
				out = append(out, e)
			}
		}
	}
	return out
}

// circuit limits both ends of the node's links to an on-premises gateway:
// the Express Connect circuit, each direction at the circuit's bandwidth.
func circuit(t *topology.Topology, n *topology.Node) []topology.Endpoint {
	var out []topology.Endpoint
	for _, l := range t.Links {
		a, b := l.Ends[0], l.Ends[1]
		if b.Node == n.Name {
			a, b = b, a
		}
		if peer := t.Node(b.Node); a.Node == n.Name && peer != nil && peer.Roles.CustomerEdge {
			out = append(out, a, b)
		}
	}
	return out
}
