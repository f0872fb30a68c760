package nodes

import (
	"fmt"
	"net/netip"

	"github.com/emu-lab/emu/internal/topology"
)

// rule checks one kind-specific constraint of a validated topology and
// reports what breaks it, located at the offending line.
type rule func(t *topology.Topology, n *topology.Node) []problem

type problem struct {
	line int
	msg  string
	warn bool // the lab still works, but not as the user likely means
}

func problemf(line int, format string, args ...any) problem {
	return problem{line: line, msg: fmt.Sprintf(format, args...)}
}

func warnf(line int, format string, args ...any) problem {
	return problem{line: line, msg: fmt.Sprintf(format, args...), warn: true}
}

// Load reads a topology file and checks it against the kinds' own rules
// (the provider's constraints), so every entry point validates the same way.
// Warnings come back with a valid topology.
func Load(path string) (*topology.Topology, []string, error) {
	r := Default()
	t, err := topology.Load(path, r)
	if err != nil {
		return nil, nil, err
	}
	warnings, err := r.Validate(t)
	if err != nil {
		return nil, nil, err
	}
	return t, warnings, nil
}

// Validate applies the rules of every node's kind.
func (r *Registry) Validate(t *topology.Topology) (warnings []string, err error) {
	var errs topology.Errors
	for _, n := range t.Nodes {
		k := r.Get(n.Kind)
		if k == nil {
			continue
		}
		for _, check := range k.Rules {
			for _, p := range check(t, n) {
				e := &topology.Error{File: t.File, Line: p.line, Msg: p.msg}
				if p.warn {
					warnings = append(warnings, "warning: "+e.Error())
				} else {
					errs = append(errs, e)
				}
			}
		}
	}
	if len(errs) == 0 {
		return warnings, nil
	}
	return warnings, errs
}

// ownerOf is the node with that interface or tunnel address, or nil.
func ownerOf(t *topology.Topology, a netip.Addr) *topology.Node {
	for _, n := range t.Nodes {
		if n.Owns(a) {
			return n
		}
		for _, tun := range n.Tunnels {
			if tun.Address.IsValid() && tun.Address.Addr() == a {
				return n
			}
		}
	}
	return nil
}

// inAny reports the first of the prefixes that holds a, or "".
func inAny(a netip.Addr, prefixes ...string) string {
	for _, s := range prefixes {
		if netip.MustParsePrefix(s).Contains(a) {
			return s
		}
	}
	return ""
}
