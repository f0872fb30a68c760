package topology

import (
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// field is one key of a YAML mapping with the node that holds its value.
type field struct {
	key  string
	line int
	val  *yaml.Node
}

// fields returns a mapping's keys in file order, reporting keys not in known
// (with the closest known key as a hint) and keys given twice.
func (c *errs) fields(n *yaml.Node, what string, known ...string) []field {
	return c.fieldsOr(n, what, nil, known...)
}

// fieldsOr is fields that only warns about the keys in ignored: containerlab
// fields emu cannot honour.
func (c *errs) fieldsOr(n *yaml.Node, what string, ignored []string, known ...string) []field {
	if n == nil || isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		c.at(n.Line, "%s must be a mapping of key: value, not %s", what, describe(n))
		return nil
	}
	var out []field
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			c.at(k.Line, "%s: keys must be plain names", what)
			continue
		}
		if prev, dup := seen[k.Value]; dup {
			c.at(k.Line, "%s: %q is given twice (first at line %d): keep one", what, k.Value, prev)
			continue
		}
		seen[k.Value] = k.Line
		if strings.HasPrefix(k.Value, "x-") && slices.Contains(ignored, "x-*") {
			continue // an extension field, holding YAML anchors, as in Compose files
		}
		if slices.Contains(ignored, k.Value) {
			c.warn(k.Line, "%s: containerlab field %q is not supported by emu: ignored", what, k.Value)
			continue
		}
		if known != nil && !slices.Contains(known, k.Value) {
			c.at(k.Line, "%s: unknown field %q%s (allowed: %s)", what, k.Value, hint(k.Value, known), strings.Join(known, ", "))
			continue
		}
		out = append(out, field{key: k.Value, line: k.Line, val: v})
	}
	return out
}

func (c *errs) str(n *yaml.Node, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		c.at(n.Line, "%s must be a single value, not %s", what, describe(n))
		return "", false
	}
	return n.Value, true
}

func (c *errs) integer(n *yaml.Node, what string, lo, hi int) (int, bool) {
	s, ok := c.str(n, what)
	if !ok {
		return 0, false
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < lo || v > hi {
		c.at(n.Line, "%s must be a whole number from %d to %d, not %q", what, lo, hi, s)
		return 0, false
	}
	return v, true
}

// strs accepts one value or a list of values, the way users write them.
func (c *errs) strs(n *yaml.Node, what string) []*yaml.Node {
	switch {
	case isNull(n):
		return nil
	case n.Kind == yaml.ScalarNode:
		return []*yaml.Node{n}
	case n.Kind == yaml.SequenceNode:
		var out []*yaml.Node
		for _, item := range n.Content {
			if item.Kind != yaml.ScalarNode {
				c.at(item.Line, "%s: each entry must be a single value, not %s", what, describe(item))
				continue
			}
			out = append(out, item)
		}
		return out
	}
	c.at(n.Line, "%s must be a value or a list of values, not %s", what, describe(n))
	return nil
}

func (c *errs) seq(n *yaml.Node, what string) []*yaml.Node {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		c.at(n.Line, "%s must be a list (entries starting with \"- \"), not %s", what, describe(n))
		return nil
	}
	return n.Content
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	if isNull(n) {
		return "an empty value"
	}
	return "the value " + strconv.Quote(n.Value)
}

// hint names the known word closest to a typo, if one is close enough.
func hint(word string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(word, k); d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" {
		return ""
	}
	return " (did you mean " + strconv.Quote(best) + "?)"
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
