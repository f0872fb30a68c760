// Package graph draws a topology: nodes by kind, links with interface names
// and addresses, and each IPsec connection as an overlay edge between its
// gateways. Output is Graphviz DOT or Mermaid, both plain text.
package graph

import (
	"fmt"
	"io"
	"strings"

	"github.com/emu-lab/emu/internal/topology"
)

// shape is how the node's kind says it is drawn, so the elements tell apart
// at a glance; a kind that says nothing is a plain box.
func shape(n *topology.Node) topology.Shape {
	if n.Roles.Shape.DOT == "" {
		return topology.Shape{DOT: "box", MermaidOpen: "[", MermaidClose: "]"}
	}
	return n.Roles.Shape
}

func addrs(n *topology.Node, ifname string) string {
	ifc := n.Interface(ifname)
	if ifc == nil || len(ifc.Addrs) == 0 {
		return ifname
	}
	s := make([]string, len(ifc.Addrs))
	for i, a := range ifc.Addrs {
		s[i] = a.String()
	}
	return ifname + " " + strings.Join(s, ",")
}

// tunnels lists each connection once, from the end that sorts first.
func tunnels(t *topology.Topology) [][2]string {
	var out [][2]string
	for _, n := range t.Nodes {
		for _, tun := range n.Tunnels {
			if n.Name < tun.Peer.Node {
				keying := tun.Cipher // manual keys: the ESP transform
				if tun.IKE != nil {
					keying = tun.IKE.Proposals()
				}
				label := fmt.Sprintf("IPsec %s: %s ↔ %s (%s)", tun.Name, tun.Local, tun.Remote, keying)
				out = append(out, [2]string{n.Name + "\x00" + tun.Peer.Node, label})
			}
		}
	}
	return out
}

// DOT writes the topology in Graphviz's language.
func DOT(w io.Writer, t *topology.Topology) error {
	var b strings.Builder
	fmt.Fprintf(&b, "graph %q {\n  layout=dot; rankdir=LR; node [fontname=Helvetica]; edge [fontname=Helvetica, fontsize=10];\n", t.Name)
	for _, n := range t.Nodes {
		fmt.Fprintf(&b, "  %q [shape=%s, label=%q];\n", n.Name, shape(n).DOT, n.Name+"\n"+n.Kind)
	}
	for _, l := range t.Links {
		a, z := l.Ends[0], l.Ends[1]
		fmt.Fprintf(&b, "  %q -- %q [taillabel=%q, headlabel=%q];\n", a.Node, z.Node, addrs(t.Node(a.Node), a.Interface), addrs(t.Node(z.Node), z.Interface))
	}
	for _, tun := range tunnels(t) {
		ends := strings.SplitN(tun[0], "\x00", 2)
		fmt.Fprintf(&b, "  %q -- %q [style=dashed, color=darkgreen, constraint=false, label=%q];\n", ends[0], ends[1], tun[1])
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// Mermaid writes a Mermaid flowchart, which GitHub renders in Markdown.
func Mermaid(w io.Writer, t *topology.Topology) error {
	var b strings.Builder
	b.WriteString("flowchart LR\n")
	id := func(name string) string { return strings.NewReplacer("-", "_").Replace(name) }
	for _, n := range t.Nodes {
		s := shape(n)
		fmt.Fprintf(&b, "  %s%s\"%s<br/><small>%s</small>\"%s\n", id(n.Name), s.MermaidOpen, n.Name, n.Kind, s.MermaidClose)
	}
	for _, l := range t.Links {
		a, z := l.Ends[0], l.Ends[1]
		fmt.Fprintf(&b, "  %s ---|\"%s — %s\"| %s\n", id(a.Node), addrs(t.Node(a.Node), a.Interface), addrs(t.Node(z.Node), z.Interface), id(z.Node))
	}
	for _, tun := range tunnels(t) {
		ends := strings.SplitN(tun[0], "\x00", 2)
		fmt.Fprintf(&b, "  %s -.-|\"%s\"| %s\n", id(ends[0]), tun[1], id(ends[1]))
	}
	_, err := io.WriteString(w, b.String())
	return err
}
