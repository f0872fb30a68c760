package topology

import "go.yaml.in/yaml/v3"

// maxExpanded bounds the nodes YAML aliases may expand to: a few aliases
// nested ten deep ("billion laughs") would otherwise take all memory.
const maxExpanded = 100_000

// expander resolves YAML anchors, aliases and `<<` merge keys (YAML 1.1's
// merge, which containerlab files use) into a plain tree. Copies keep the
// lines of the anchored text, so an error in shared text points at it.
type expander struct {
	*errs
	budget int
	active map[*yaml.Node]bool // anchors being expanded: an alias to one is a loop
}

func (c *errs) expand(n *yaml.Node) *yaml.Node {
	e := &expander{errs: c, budget: maxExpanded, active: map[*yaml.Node]bool{}}
	return e.node(n)
}

func (e *expander) node(n *yaml.Node) *yaml.Node {
	if n == nil {
		return nil
	}
	if e.budget--; e.budget < 0 {
		if e.budget == -1 {
			e.at(n.Line, "YAML aliases here expand to more than %d values: write the repeated parts out", maxExpanded)
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Line: n.Line}
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil || e.active[n.Alias] {
			e.at(n.Line, "alias *%s refers to a value that contains it: YAML aliases cannot loop", n.Value)
			return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Line: n.Line}
		}
		return e.node(n.Alias)
	}
	e.active[n] = true
	defer delete(e.active, n)
	out := *n
	out.Anchor = ""
	out.Content = nil
	if n.Kind != yaml.MappingNode {
		for _, c := range n.Content {
			out.Content = append(out.Content, e.node(c))
		}
		return &out
	}
	// Keys written in the mapping win over merged ones; among merged
	// mappings the first listed wins, as YAML 1.1 says.
	own := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if !isMerge(n.Content[i]) {
			own[n.Content[i].Value] = true
		}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !isMerge(k) {
			out.Content = append(out.Content, e.node(k), e.node(v))
			continue
		}
		v = e.node(v)
		sources := []*yaml.Node{v}
		if v.Kind == yaml.SequenceNode {
			sources = v.Content
		}
		for _, src := range sources {
			if src.Kind != yaml.MappingNode {
				e.at(k.Line, "merge key <<: takes a mapping or a list of mappings (usually *anchor), not %s", describe(src))
				continue
			}
			for j := 0; j+1 < len(src.Content); j += 2 {
				key := src.Content[j].Value
				if own[key] {
					continue
				}
				own[key] = true
				out.Content = append(out.Content, src.Content[j], src.Content[j+1])
			}
		}
	}
	return &out
}

func isMerge(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && (k.Tag == "!!merge" || k.Value == "<<" && k.Style == 0)
}
