package topology

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Kinds is what the topology needs to know of the node kinds: which exist
// and the roles each plays. The kinds themselves live in package nodes, which
// validates what is specific to each.
type Kinds interface {
	Known(kind string) bool
	Names() []string
	Roles(kind string) Roles
}

// Methods are the configuration methods of SPEC §3.
var Methods = []string{"static", "static-bgp", "bgp"}

const (
	maxIfName = 15 // IFNAMSIZ - 1
	maxName   = 32 // keeps emu-<lab>-<node> readable in `ip netns`
)

var nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)
var ifNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// Load reads and validates a topology file.
func Load(path string, kinds Kinds) (*Topology, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("topology %s: %w", path, err)
	}
	data, err := readFile(abs)
	if err != nil {
		return nil, err
	}
	return Parse(abs, data, kinds)
}

// Parse validates topology text; file is used in messages and for the lab
// directory.
func Parse(file string, data []byte, kinds Kinds) (*Topology, error) {
	c := &errs{file: file}
	doc, err := decodeOne(file, data)
	if err != nil {
		return nil, err
	}
	if len(doc.Content) == 0 {
		return nil, &Error{File: file, Msg: "the file is empty: it needs at least `name:` and `topology: {nodes: ...}`"}
	}
	t := &Topology{File: file, Dataplane: Dataplanes[0]}
	r := resolver{errs: c, kinds: kinds, t: t}
	r.top(c.expand(doc.Content[0]))
	if err := c.err(); err != nil {
		return nil, err
	}
	r.check()
	if err := c.err(); err != nil {
		return nil, err
	}
	t.Warnings = c.warnings
	t.Source = data
	return t, nil
}

type resolver struct {
	*errs
	kinds Kinds
	t     *Topology
	// Node settings shared containerlab-style: a node's own field wins over
	// its group's, which wins over its kind's, which wins over `defaults:`.
	defaults *yaml.Node
	perKind  map[string]*yaml.Node
	groups   map[string]*yaml.Node
	// implicit: nodes without `interfaces:`, which get the interfaces their
	// links name (containerlab files declare interfaces only in links).
	implicit map[string]bool
}

// Runtimes a node can run in.
const (
	RuntimeNamespace = "namespace"
	RuntimeDocker    = "docker"
)

// DefaultImage is the node image `make images` builds.
const DefaultImage = "emu-node:latest"

// containerlab fields emu cannot honour: a file that uses them still
// deploys, with a warning at each (SPEC §4: never silently dropped).
var (
	clabTopFields  = []string{"prefix", "mgmt", "settings", "debug", "x-*"}
	clabLinkFields = []string{"mtu", "type", "vars", "labels"}
	clabNodeFields = []string{"type", "image-pull-policy", "license", "position", "entrypoint", "cmd",
		"subject-alternative-names", "ports", "mgmt-ipv4", "mgmt-ipv6", "env-files", "user", "labels",
		"publish", "network-mode", "memory", "cpu", "cpu-set", "shm-size", "sysctls", "extras", "wait-for",
		"dns", "certificate", "healthcheck", "aliases", "startup-config", "startup-delay",
		"enforce-startup-config", "suppress-startup-config", "auto-remove", "restart-policy", "config",
		"devices", "cap-add", "stages", "components", "mac-address", "kernel-modules"}
)

// nodeFields are the fields a node (and so `defaults:`, `kinds:` and
// `groups:` entries) takes.
var nodeFields = []string{"kind", "group", "interfaces", "routes", "ipsec", "ipsec-dataplane", "bgp",
	"runtime", "image", "bandwidth", "exec", "binds", "env", "daemons"}

func (r *resolver) top(n *yaml.Node) {
	var topo *yaml.Node
	topoLine := 0
	nameLine := 0
	for _, f := range r.fieldsOr(n, "top level", clabTopFields, "name", "method", "ipsec-dataplane", "topology") {
		switch f.key {
		case "name":
			nameLine = f.line
			if s, ok := r.str(f.val, "name"); ok {
				r.t.Name = s
				r.checkName(f.line, "lab name", s)
			}
		case "method":
			if s, ok := r.str(f.val, "method"); ok {
				if !slices.Contains(Methods, s) {
					r.at(f.line, "method %q is not one of %s%s", s, strings.Join(Methods, ", "), hint(s, Methods))
				}
				r.t.Method, r.t.MethodLine = s, f.line
			}
		case "ipsec-dataplane":
			if s, ok := r.str(f.val, "ipsec-dataplane"); ok {
				if !slices.Contains(Dataplanes, s) {
					r.at(f.line, "ipsec-dataplane %q is not one of %s", s, strings.Join(Dataplanes, ", "))
				}
				r.t.Dataplane = s
			}
		case "topology":
			topo, topoLine = f.val, f.line
		}
	}
	if nameLine == 0 && len(r.list) == 0 {
		r.at(n.Line, "the lab has no `name:`: add one at the top, e.g. `name: mylab` (it names the namespaces emu-<name>-<node>)")
	}
	if topo == nil {
		if len(r.list) == 0 {
			r.at(n.Line, "no `topology:` section: add `topology:` with `nodes:` and `links:`")
		}
		return
	}
	var nodes, links *yaml.Node
	nodesLine := 0
	for _, f := range r.fields(topo, "topology", "defaults", "kinds", "groups", "nodes", "links") {
		switch f.key {
		case "defaults":
			r.defaults = f.val
			for _, df := range r.fields(f.val, "defaults") {
				if df.key == "kind" {
					if s, ok := r.str(df.val, "defaults.kind"); ok {
						r.kindKnown(df.line, s)
					}
				}
			}
		case "kinds":
			r.perKind = map[string]*yaml.Node{}
			for _, kf := range r.fields(f.val, "kinds") {
				r.kindKnown(kf.line, kf.key)
				r.perKind[kf.key] = kf.val
			}
		case "groups":
			r.groups = map[string]*yaml.Node{}
			for _, gf := range r.fields(f.val, "groups") {
				r.groups[gf.key] = gf.val
			}
		case "nodes":
			nodes, nodesLine = f.val, f.line
		case "links":
			links = f.val
		}
	}
	if nodes == nil || len(nodes.Content) == 0 {
		if nodesLine == 0 {
			nodesLine = topoLine
		}
		r.at(nodesLine, "topology has no nodes: declare them under `topology: nodes:`")
		return
	}
	for _, f := range r.fields(nodes, "nodes") {
		r.node(f)
	}
	for _, l := range r.seq(links, "links") {
		r.link(l)
	}
	r.implyInterfaces()
}

// implyInterfaces gives a node declared without `interfaces:` the
// interfaces its links name, without addresses (its `exec` may add them).
func (r *resolver) implyInterfaces() {
	for _, l := range r.t.Links {
		for _, e := range l.Ends {
			n := r.t.Node(e.Node)
			if n != nil && r.implicit[n.Name] && n.Interface(e.Interface) == nil && e.Interface != Loopback {
				n.Interfaces = append(n.Interfaces, &Interface{Name: e.Interface, Line: l.Line})
			}
		}
	}
}

// scalarOf returns the value of key in mapping m, or "".
func scalarOf(m *yaml.Node, key string) string {
	if v := valueOf(m, key); v != nil && v.Kind == yaml.ScalarNode && !isNull(v) {
		return v.Value
	}
	return ""
}

// valueOf returns the value of key in mapping m, nil if m does not set it.
func valueOf(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// inherit returns a node's mapping completed with the keys it does not set
// from its group, its kind's entry and the defaults, in that order.
func (r *resolver) inherit(f field) *yaml.Node {
	own := f.val
	if own == nil || isNull(own) {
		own = &yaml.Node{Kind: yaml.MappingNode, Line: f.line}
	}
	if own.Kind != yaml.MappingNode {
		return own // reported by fields
	}
	layers := []*yaml.Node{own}
	group := scalarOf(own, "group")
	if group == "" {
		group = scalarOf(r.defaults, "group")
	}
	if group != "" {
		g, ok := r.groups[group]
		if !ok {
			r.at(f.line, "node %q: group %q is not declared under `topology: groups:`", f.key, group)
		}
		layers = append(layers, g)
	}
	kind := scalarOf(own, "kind")
	for _, l := range layers[1:] {
		if kind == "" {
			kind = scalarOf(l, "kind")
		}
	}
	if kind == "" {
		kind = scalarOf(r.defaults, "kind")
	}
	layers = append(layers, r.perKind[kind], r.defaults)
	out := &yaml.Node{Kind: yaml.MappingNode, Line: own.Line}
	set := map[string]bool{}
	for _, l := range layers {
		if l == nil || l.Kind != yaml.MappingNode {
			continue
		}
		for i := 0; i+1 < len(l.Content); i += 2 {
			k := l.Content[i].Value
			if set[k] {
				continue
			}
			set[k] = true
			v := l.Content[i+1]
			if mergedByKey[k] {
				v = mergeByKey(layers, k)
			}
			out.Content = append(out.Content, l.Content[i], v)
		}
	}
	return out
}

// mergedByKey are the mapping fields containerlab merges key by key across
// the layers instead of taking the highest layer's whole: env
// (containerlab's Topology.GetNodeEnv, MergeStringMaps of defaults, kind,
// group, node).
var mergedByKey = map[string]bool{"env": true}

// mergeByKey merges the mappings of field k across layers (highest first):
// each key from the highest layer that sets it, in the order keys first
// appear from the lowest layer up. A layer whose field is not a mapping
// wins whole, so that the field's parser reports it.
func mergeByKey(layers []*yaml.Node, k string) *yaml.Node {
	var maps []*yaml.Node
	var top *yaml.Node
	for _, l := range layers {
		v := valueOf(l, k)
		if top == nil {
			top = v
		}
		switch {
		case v == nil || isNull(v):
		case v.Kind != yaml.MappingNode:
			return v
		default:
			maps = append(maps, v)
		}
	}
	if len(maps) == 0 {
		return top
	}
	out := &yaml.Node{Kind: yaml.MappingNode, Line: maps[0].Line, Column: maps[0].Column}
	at := map[string]int{}
	for i := len(maps) - 1; i >= 0; i-- {
		for j := 0; j+1 < len(maps[i].Content); j += 2 {
			key := maps[i].Content[j].Value
			if n, ok := at[key]; ok {
				out.Content[n+1] = maps[i].Content[j+1]
				continue
			}
			at[key] = len(out.Content)
			out.Content = append(out.Content, maps[i].Content[j], maps[i].Content[j+1])
		}
	}
	return out
}

func (r *resolver) kindKnown(line int, kind string) bool {
	if r.kinds.Known(kind) {
		return true
	}
	names := r.kinds.Names()
	r.at(line, "unknown kind %q%s: use one of %s", kind, hint(kind, names), strings.Join(names, ", "))
	return false
}

func (r *resolver) checkName(line int, what, s string) {
	if msg := nameProblem(what, s); msg != "" {
		r.at(line, "%s", msg)
	}
}

// nameProblem says what is wrong with a lab or node name, or "" if nothing:
// the names end up in namespace names and in the lab directory's path.
func nameProblem(what, s string) string {
	switch {
	case len(s) > maxName:
		return fmt.Sprintf("%s %q is %d characters long: use at most %d", what, s, len(s), maxName)
	case !nameRe.MatchString(s):
		return fmt.Sprintf("%s %q may hold only letters, digits, '-' and '_', starting with a letter or digit", what, s)
	}
	return ""
}

func (r *resolver) node(f field) {
	node := &Node{Name: f.key, Line: f.line, Runtime: RuntimeNamespace, Image: DefaultImage}
	r.checkName(f.line, "node name", f.key)
	kindSet, hasIfaces := false, false
	imageLine := 0
	for _, nf := range r.fieldsOr(r.inherit(f), "node "+strq(f.key), clabNodeFields, nodeFields...) {
		switch nf.key {
		case "kind":
			if s, ok := r.str(nf.val, "kind"); ok {
				kindSet = true
				if r.kindKnown(nf.line, s) {
					node.Kind = s
				}
			}
		case "group":
			r.str(nf.val, "group")
		case "exec", "binds", "env", "daemons":
			r.software(node, nf)
		case "interfaces":
			hasIfaces = true
			for _, i := range r.fields(nf.val, "interfaces of "+strq(f.key)) {
				node.Interfaces = append(node.Interfaces, r.iface(node, i))
			}
		case "bgp":
			node.BGP = r.bgp(node, nf.val)
		case "bandwidth":
			node.Bandwidth, _ = r.integer(nf.val, "node "+strq(f.key)+" bandwidth (Mbit/s)", 1, 100000)
			node.BandwidthLine = nf.line
		case "image":
			if s, ok := r.str(nf.val, "image"); ok {
				node.Image, imageLine = s, nf.line
			}
		case "runtime":
			if s, ok := r.str(nf.val, "runtime"); ok {
				if s != RuntimeNamespace && s != RuntimeDocker {
					r.at(nf.line, "node %q: runtime %q: use %s (the default) or %s", f.key, s, RuntimeNamespace, RuntimeDocker)
				}
				node.Runtime = s
			}
		case "ipsec-dataplane":
			if s, ok := r.str(nf.val, "ipsec-dataplane"); ok {
				if s != "kernel" && s != "userspace" {
					r.at(nf.line, "node %q: ipsec-dataplane %q must be kernel or userspace (the lab-wide setting takes auto)", f.key, s)
				}
				node.Dataplane = s
			}
		case "ipsec":
			for i, c := range r.seq(nf.val, "ipsec of "+strq(f.key)) {
				r.tunnel(node, c, i)
			}
		case "routes":
			for _, rt := range r.seq(nf.val, "routes of "+strq(f.key)) {
				if route, ok := r.route(node, rt); ok {
					node.Routes = append(node.Routes, route)
				}
			}
		}
	}
	if imageLine > 0 && node.Runtime == RuntimeNamespace {
		r.warn(imageLine, "node %q: image %s is used only with `runtime: docker`: this node is a namespace running the host's programs (its exec, daemons)", f.key, node.Image)
	}
	if !hasIfaces {
		if r.implicit == nil {
			r.implicit = map[string]bool{}
		}
		r.implicit[node.Name] = true
	}
	if node.Kind != "" {
		node.Roles = r.kinds.Roles(node.Kind)
	}
	if node.Kind == "" && !kindSet {
		r.at(f.line, "node %q has no kind: add `kind:` (one of %s) or set `topology: defaults: kind:`", f.key, strings.Join(r.kinds.Names(), ", "))
	}
	r.t.Nodes = append(r.t.Nodes, node)
}

func (r *resolver) iface(node *Node, f field) *Interface {
	ifc := &Interface{Name: f.key, Line: f.line}
	switch {
	case len(f.key) > maxIfName:
		r.at(f.line, "node %q: interface name %q is %d characters: Linux allows at most %d", node.Name, f.key, len(f.key), maxIfName)
	case !ifNameRe.MatchString(f.key):
		r.at(f.line, "node %q: interface name %q may hold only letters, digits, '.', '-' and '_'", node.Name, f.key)
	}
	what := fmt.Sprintf("interface %s:%s", node.Name, f.key)
	addrs := f.val
	if f.val.Kind == yaml.MappingNode {
		addrs = nil
		for _, af := range r.fields(f.val, what, "addresses", "mtu") {
			switch af.key {
			case "addresses":
				addrs = af.val
			case "mtu":
				ifc.MTU, _ = r.integer(af.val, what+" mtu", 68, 65535)
			}
		}
	}
	if addrs == nil {
		return ifc
	}
	for _, a := range r.strs(addrs, what+" addresses") {
		if p, ok := r.prefix(a.Line, what, a.Value); ok {
			ifc.Addrs = append(ifc.Addrs, p)
		}
	}
	return ifc
}

func (r *resolver) prefix(line int, what, s string) (netip.Prefix, bool) {
	p, err := netip.ParsePrefix(s)
	if err == nil {
		return p, true
	}
	if a, aerr := netip.ParseAddr(s); aerr == nil {
		r.at(line, "%s: address %s has no prefix length: write %s/%d for a subnet, or /%d for a single address", what, s, s, map[bool]int{true: 24, false: 64}[a.Is4()], a.BitLen())
	} else {
		r.at(line, "%s: %q is not an address with prefix length (like 10.0.0.1/24 or fd00::1/64)", what, s)
	}
	return netip.Prefix{}, false
}

func (r *resolver) route(node *Node, n *yaml.Node) (Route, bool) {
	rt := Route{Line: n.Line}
	what := fmt.Sprintf("node %q route", node.Name)
	ok := true
	hasDst := false
	for _, f := range r.fields(n, what, "dst", "via", "dev", "metric") {
		s, good := r.str(f.val, what+" "+f.key)
		if !good {
			ok = false
			continue
		}
		switch f.key {
		case "dst":
			hasDst = true
			if s == "default" {
				s = "0.0.0.0/0"
			}
			p, good := r.prefix(f.line, what+" dst", s)
			if !good {
				ok = false
				continue
			}
			if p != p.Masked() {
				r.at(f.line, "%s: destination %s has host bits set: write %s", what, p, p.Masked())
				ok = false
			}
			rt.Dst = p
		case "via":
			a, err := netip.ParseAddr(s)
			if err != nil {
				r.at(f.line, "%s: via %q is not an IP address (write the next hop's address, without a prefix length)", what, s)
				ok = false
				continue
			}
			rt.Via = a
		case "dev":
			rt.Dev = s
		case "metric":
			rt.Metric, good = r.integer(f.val, what+" metric", 0, 1<<31-1)
			ok = ok && good
		}
	}
	if !hasDst {
		r.at(n.Line, "%s has no `dst:`: give the destination prefix (or `default`)", what)
		ok = false
	}
	if !rt.Via.IsValid() && rt.Dev == "" && ok {
		r.at(n.Line, "%s to %s needs `via:` (next-hop address) or `dev:` (an interface of the node)", what, rt.Dst)
		ok = false
	}
	return rt, ok
}

func (r *resolver) link(n *yaml.Node) {
	l := &Link{Line: n.Line}
	before := len(r.list)
	var eps []*yaml.Node
	for _, f := range r.fieldsOr(n, "link", clabLinkFields, "endpoints") {
		eps = r.strs(f.val, "link endpoints")
	}
	if len(eps) != 2 {
		// Say so unless this link's shape was already reported; errors
		// elsewhere in the file must not hide it.
		if eps != nil || len(r.list) == before {
			r.at(n.Line, "a link needs exactly two endpoints, like `endpoints: [\"a:eth1\", \"b:eth1\"]`, found %d", len(eps))
		}
		return
	}
	for i, ep := range eps {
		node, ifname, found := strings.Cut(ep.Value, ":")
		if !found || node == "" || ifname == "" {
			r.at(ep.Line, "link endpoint %q must be written node:interface, like \"vbr:eth1\"", ep.Value)
			return
		}
		l.Ends[i] = Endpoint{Node: node, Interface: ifname}
	}
	r.t.Links = append(r.t.Links, l)
}

func strq(s string) string { return fmt.Sprintf("%q", s) }

// yamlErrLine digs the line number out of a yaml.v3 error ("yaml: line 3: ...").
func yamlErrLine(err error) int {
	var line int
	s := err.Error()
	if i := strings.Index(s, "line "); i >= 0 {
		fmt.Sscanf(s[i+5:], "%d", &line)
	}
	return line
}

func yamlErrText(err error) string {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	if i := strings.Index(s, "line "); i == 0 {
		if j := strings.Index(s, ": "); j > 0 {
			s = s[j+2:]
		}
	}
	return s
}
