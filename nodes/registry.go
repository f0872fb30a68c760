// Package nodes holds the node kinds of a lab, one file per kind, each
// describing the cloud or data-center element it stands for. Kinds are
// registered explicitly from Default, never from init side effects.
package nodes

import (
	"fmt"
	"sort"

	"github.com/emu-lab/emu/internal/topology"
)

// Kind is what every node of one kind shares.
type Kind struct {
	Name    string
	Element string // the real-world element it emulates, for help and inspect
	topology.Roles
	// Rules are the provider's constraints on this kind of node.
	Rules []rule
	// Bandwidth is the kind's bandwidth spec; nil when the provider sells
	// none for the element.
	Bandwidth *BandwidthSpec
}

// Registry maps kind names to kinds.
type Registry struct {
	kinds map[string]*Kind
}

// Register adds a kind; registering a name twice is a programming error.
func (r *Registry) Register(k *Kind) {
	if r.kinds == nil {
		r.kinds = map[string]*Kind{}
	}
	if _, dup := r.kinds[k.Name]; dup {
		panic(fmt.Sprintf("nodes: kind %q registered twice", k.Name))
	}
	r.kinds[k.Name] = k
}

// Get returns the named kind, or nil.
func (r *Registry) Get(name string) *Kind { return r.kinds[name] }

// Roles returns what nodes of the named kind do; the zero Roles for an
// unknown kind.
func (r *Registry) Roles(name string) topology.Roles {
	if k := r.kinds[name]; k != nil {
		return k.Roles
	}
	return topology.Roles{}
}

// Known reports whether a kind of that name is registered.
func (r *Registry) Known(name string) bool { return r.kinds[name] != nil }

// Names lists the registered kinds, sorted.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.kinds))
	for n := range r.kinds {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Default is the registry of every kind emu ships.
func Default() *Registry {
	r := &Registry{}
	registerHost(r)
	registerLinux(r)
	registerOnpremGateway(r)
	registerVBR(r)
	registerCEN(r)
	registerVPC(r)
	registerVPNGateway(r)
	return r
}
