package nodes

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/emu-lab/emu/internal/topology"
)

// rule checks one kind-specific constraint of a validated topology and
// reports what breaks it, located at the offending line.
type rule func(t *topology.Topology, n *topology.Node) []problem

type problem struct {
	line int
	msg  string
}

func problemf(line int, format string, args ...any) problem {
	return problem{line: line, msg: fmt.Sprintf(format, args...)}
}

// Load reads a topology file and checks it against the kinds' own rules
// (the provider's constraints), so every entry point validates the same way.
func Load(path string) (*topology.Topology, error) {
	r := Default()
	t, err := topology.Load(path, r)
	if err != nil {
		return nil, err
	}
	return t, r.Validate(t)
}

// Parse validates topology text as Load does a file; file (an absolute
// path) is used in messages and for the lab directory.
func Parse(file string, data []byte) (*topology.Topology, error) {
	r := Default()
	t, err := topology.Parse(file, data, r)
	if err != nil {
		return nil, err
	}
	return t, r.Validate(t)
}

// Validate applies the rules of every node's kind, then the lab-wide ones.
func (r *Registry) Validate(t *topology.Topology) error {
	var problems []problem
	for _, n := range t.Nodes {
		k := r.Get(n.Kind)
		if k == nil {
			continue
		}
		for _, check := range append(slices.Clip(k.Rules), r.bandwidthProblems) {
			problems = append(problems, check(t, n)...)
		}
	}
	problems = append(problems, methodFollowed(t)...)
	var errs topology.Errors
	for _, p := range problems {
		errs = append(errs, &topology.Error{File: t.File, Line: p.line, Msg: p.msg})
	}
	if len(errs) == 0 {
		return nil
	}
	return errs
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
