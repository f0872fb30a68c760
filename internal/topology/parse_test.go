package topology_test

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/nodes"
)

const staticFile = "../../topologies/static.yaml"

func parse(t *testing.T, data string) *topology.Topology {
	t.Helper()
	topo, err := topology.Parse("/labs/lab.yaml", []byte(strings.TrimPrefix(data, "\n")), nodes.Default())
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if topo == nil {
		t.Fatal("Parse returned neither a topology nor an error")
	}
	return topo
}

func pfx(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, p := range s {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}

func via(dst, hop string) topology.Route {
	return topology.Route{Dst: netip.MustParsePrefix(dst), Via: netip.MustParseAddr(hop)}
}

func link(a, b string) *topology.Link {
	end := func(s string) topology.Endpoint {
		n, i, _ := strings.Cut(s, ":")
		return topology.Endpoint{Node: n, Interface: i}
	}
	return &topology.Link{Ends: [2]topology.Endpoint{end(a), end(b)}}
}

func TestLoad_StaticScenario_ResolvesIntoTheModel(t *testing.T) {
	topo, err := topology.Load(staticFile, nodes.Default())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	abs, _ := filepath.Abs(staticFile)
	if topo.File != abs {
		t.Errorf("File = %q, want the absolute path %q", topo.File, abs)
	}
	ifc := func(name string, addrs ...string) *topology.Interface {
		return &topology.Interface{Name: name, Addrs: pfx(addrs...)}
	}
	dev := func(dst, dev string) topology.Route {
		return topology.Route{Dst: netip.MustParsePrefix(dst), Dev: dev}
	}
	metric := func(r topology.Route, m int) topology.Route { r.Metric = m; return r }
	// Tunnels (ipsec:) have tests of their own; this is the wired lab.
	want := &topology.Topology{
		Name:   "static",
		Method: "static",
		Nodes: []*topology.Node{
			{Name: "client", Kind: "host",
				Interfaces: []*topology.Interface{ifc("eth1", "10.1.0.10/24")},
				Routes:     []topology.Route{via("0.0.0.0/0", "10.1.0.1")}},
			{Name: "onprem", Kind: "onprem-gateway",
				Interfaces: []*topology.Interface{ifc("eth1", "10.1.0.1/24"), ifc("eth2", "10.0.0.1/30")},
				Routes:     []topology.Route{via("172.16.0.0/16", "10.0.0.2"), dev("172.16.2.0/24", "ipsec0")}},
			{Name: "vbr", Kind: "vbr",
				Interfaces: []*topology.Interface{ifc("eth1", "10.0.0.2/30"), ifc("eth2", "10.0.1.1/30")},
				Routes:     []topology.Route{via("10.1.0.0/24", "10.0.0.1"), via("172.16.0.0/16", "10.0.1.2")}},
			{Name: "cen", Kind: "cen",
				Interfaces: []*topology.Interface{ifc("eth1", "10.0.1.2/30"), ifc("eth2", "10.0.2.1/30")},
				Routes: []topology.Route{via("10.0.0.0/30", "10.0.1.1"), via("10.1.0.0/24", "10.0.1.1"),
					via("172.16.0.0/16", "10.0.2.2")}},
			{Name: "vpc", Kind: "vpc",
				Interfaces: []*topology.Interface{ifc("eth1", "10.0.2.2/30"), ifc("eth2", "172.16.1.1/24"),
					ifc("eth3", "172.16.2.1/24")},
				Routes: []topology.Route{via("10.0.0.0/30", "10.0.2.1"),
					metric(via("10.1.0.0/24", "172.16.1.10"), 10), metric(via("10.1.0.0/24", "10.0.2.1"), 100)}},
			{Name: "vpngw", Kind: "vpn-gateway",
				Interfaces: []*topology.Interface{ifc("eth1", "172.16.1.10/24")},
				Routes:     []topology.Route{via("0.0.0.0/0", "172.16.1.1"), dev("10.1.0.0/24", "ipsec0")}},
			{Name: "ecs", Kind: "host",
				Interfaces: []*topology.Interface{ifc("eth1", "172.16.2.10/24")},
				Routes:     []topology.Route{via("0.0.0.0/0", "172.16.2.1")}},
		},
		Links: []*topology.Link{
			link("client:eth1", "onprem:eth1"),
			link("onprem:eth2", "vbr:eth1"),
			link("vbr:eth2", "cen:eth1"),
			link("cen:eth2", "vpc:eth1"),
			link("vpc:eth2", "vpngw:eth1"),
			link("vpc:eth3", "ecs:eth1"),
		},
	}
	if got := wiredLab(topo); !reflect.DeepEqual(got, want) {
		t.Errorf("model differs:\n got %s\nwant %s", dump(got), dump(want))
	}

	// Lines point at the declaring key, for later errors (plan, apply) to cite.
	data, _ := os.ReadFile(staticFile)
	vbr := topo.Node("vbr")
	node := lineOf(t, data, "    vbr:", 0)
	eth2 := lineOf(t, data, "        eth2:", node)
	route := lineOf(t, data, "- {dst: 172.16.0.0/16, via: 10.0.1.2}", node)
	if vbr.Line != node || vbr.Interface("eth2").Line != eth2 || vbr.Routes[1].Line != route {
		t.Errorf("vbr lines: node %d, eth2 %d, second route %d; want %d, %d, %d",
			vbr.Line, vbr.Interface("eth2").Line, vbr.Routes[1].Line, node, eth2, route)
	}
	if got, want := topo.Links[5].Line, lineOf(t, data, `"vpc:eth3", "ecs:eth1"`, 0); got != want {
		t.Errorf("last link on line %d, want %d", got, want)
	}
}

// lineOf is the 1-based number of the first line after line from that holds s.
func lineOf(t *testing.T, data []byte, s string, from int) int {
	t.Helper()
	for i, l := range strings.Split(string(data), "\n") {
		if i+1 > from && strings.Contains(l, s) {
			return i + 1
		}
	}
	t.Fatalf("no line holds %q", s)
	return 0
}

// wiredLab keeps what the wiring stages use (nodes, kinds, interfaces,
// routes, links) without lines, so models compare by content.
func wiredLab(t *topology.Topology) *topology.Topology {
	c := &topology.Topology{Name: t.Name, Method: t.Method}
	for _, n := range t.Nodes {
		nc := &topology.Node{Name: n.Name, Kind: n.Kind}
		for _, i := range n.Interfaces {
			ic := *i
			ic.Line = 0
			nc.Interfaces = append(nc.Interfaces, &ic)
		}
		for _, r := range n.Routes {
			r.Line = 0
			nc.Routes = append(nc.Routes, r)
		}
		c.Nodes = append(c.Nodes, nc)
	}
	for _, l := range t.Links {
		c.Links = append(c.Links, &topology.Link{Ends: l.Ends})
	}
	return c
}

func dump(t *topology.Topology) string {
	var b strings.Builder
	b.WriteString(t.Name + " method=" + t.Method + "\n")
	for _, n := range t.Nodes {
		b.WriteString("  " + n.Name + " (" + n.Kind + ")")
		for _, i := range n.Interfaces {
			b.WriteString(" " + i.Name + "=")
			for _, a := range i.Addrs {
				b.WriteString(a.String() + ",")
			}
		}
		for _, r := range n.Routes {
			b.WriteString(fmt.Sprintf(" route %v via %v dev %q metric %d", r.Dst, r.Via, r.Dev, r.Metric))
		}
		b.WriteString("\n")
	}
	for _, l := range t.Links {
		b.WriteString("  " + l.Ends[0].String() + " -- " + l.Ends[1].String() + "\n")
	}
	return b.String()
}

func TestParse_InterfaceShorthands(t *testing.T) {
	topo := parse(t, `
name: lab
topology:
  nodes:
    r:
      kind: vbr
      interfaces:
        eth1: 10.0.0.1/24                              # one address
        eth2: [10.0.1.1/24, "fd00:1::1/64"]            # a list
        eth3: {addresses: 10.0.2.1/24, mtu: 9000}      # a mapping
        eth4:                                          # no address at all
        eth5: {mtu: 1400}                              # a mapping without addresses
        lo: 192.0.2.1/32                               # loopback, never linked
    a: {kind: host, interfaces: {eth1: 10.0.0.2/24}}
    b: {kind: host, interfaces: {eth1: [10.0.1.2/24, "fd00:1::2/64"]}}
    c: {kind: host, interfaces: {eth1: {addresses: [10.0.2.2/24], mtu: 9000}}}
    d: {kind: host, interfaces: {eth1: }}
    e: {kind: host, interfaces: {eth1: {}}}
  links:
    - endpoints: ["r:eth1", "a:eth1"]
    - endpoints: ["r:eth2", "b:eth1"]
    - endpoints: ["r:eth3", "c:eth1"]
    - endpoints: ["r:eth4", "d:eth1"]
    - endpoints: ["r:eth5", "e:eth1"]
`)
	r := topo.Node("r")
	want := []*topology.Interface{
		{Name: "eth1", Line: 7, Addrs: pfx("10.0.0.1/24")},
		{Name: "eth2", Line: 8, Addrs: pfx("10.0.1.1/24", "fd00:1::1/64")},
		{Name: "eth3", Line: 9, Addrs: pfx("10.0.2.1/24"), MTU: 9000},
		{Name: "eth4", Line: 10},
		{Name: "eth5", Line: 11, MTU: 1400},
		{Name: "lo", Line: 12, Addrs: pfx("192.0.2.1/32")},
	}
	if !reflect.DeepEqual(r.Interfaces, want) {
		for i, ifc := range r.Interfaces {
			t.Logf("got %d: %+v", i, *ifc)
		}
		t.Errorf("interfaces of r differ from %+v", want)
	}
	if c := topo.Node("c").Interface("eth1"); c.MTU != 9000 || !reflect.DeepEqual(c.Addrs, pfx("10.0.2.2/24")) {
		t.Errorf("c:eth1 = %+v, want 10.0.2.2/24 mtu 9000", *c)
	}
	for _, n := range []string{"d", "e"} {
		if ifc := topo.Node(n).Interface("eth1"); ifc == nil || len(ifc.Addrs) != 0 || ifc.MTU != 0 {
			t.Errorf("%s:eth1 = %+v, want declared with no address and the kernel's MTU", n, ifc)
		}
	}
}

func TestParse_RouteForms(t *testing.T) {
	topo := parse(t, `
name: lab
topology:
  nodes:
    a:
      kind: host
      interfaces: {eth1: [10.0.0.1/24, "fd00::1/64"], eth2: 10.0.1.1/24}
      routes:
        - {dst: default, via: 10.0.0.2}
        - {dst: "::/0", via: "fd00::2"}
        - {dst: 10.8.0.0/16, dev: eth2}
        - {dst: 10.9.0.0/16, via: 10.0.1.2, dev: eth2, metric: 100}
        - {dst: 10.9.0.0/16, via: 10.0.0.2, metric: 200}
    b: {kind: vbr, interfaces: {eth1: [10.0.0.2/24, "fd00::2/64"], eth2: 10.0.1.2/24}}
  links:
    - endpoints: ["a:eth1", "b:eth1"]
    - endpoints: ["a:eth2", "b:eth2"]
`)
	dst, hop := netip.MustParsePrefix, netip.MustParseAddr
	want := []topology.Route{
		{Dst: dst("0.0.0.0/0"), Via: hop("10.0.0.2"), Line: 8},
		{Dst: dst("::/0"), Via: hop("fd00::2"), Line: 9},
		{Dst: dst("10.8.0.0/16"), Dev: "eth2", Line: 10},
		{Dst: dst("10.9.0.0/16"), Via: hop("10.0.1.2"), Dev: "eth2", Metric: 100, Line: 11},
		{Dst: dst("10.9.0.0/16"), Via: hop("10.0.0.2"), Metric: 200, Line: 12},
	}
	if got := topo.Node("a").Routes; !reflect.DeepEqual(got, want) {
		t.Errorf("routes:\n got %+v\nwant %+v", got, want)
	}
	if r := topo.Node("a").Routes[2]; r.Via.IsValid() {
		t.Errorf("on-link route has a next hop %v", r.Via)
	}
}

func TestParse_DefaultsKind_AppliesToNodesWithoutKind(t *testing.T) {
	topo := parse(t, `
name: lab
topology:
  defaults:
    kind: host
  kinds:
    host: {}
  nodes:
    a: {}
    b:
    r: {kind: vbr}
`)
	for name, kind := range map[string]string{"a": "host", "b": "host", "r": "vbr"} {
		if got := topo.Node(name).Kind; got != kind {
			t.Errorf("node %s has kind %q, want %q", name, got, kind)
		}
	}
	if len(topo.Links) != 0 {
		t.Errorf("links = %v, want none", topo.Links)
	}
}

func TestParse_NodesKeepFileOrder(t *testing.T) {
	topo := parse(t, `
name: lab
topology:
  nodes:
    zeta: {kind: host}
    alpha: {kind: host}
    mid: {kind: host}
`)
	var got []string
	for _, n := range topo.Nodes {
		got = append(got, n.Name)
	}
	if want := []string{"zeta", "alpha", "mid"}; !reflect.DeepEqual(got, want) {
		t.Errorf("nodes in order %v, want %v", got, want)
	}
}

func TestLoad_LabDir_IsNextToTheFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "lab.yaml")
	if err := os.WriteFile(path, []byte("name: mylab\ntopology:\n  nodes:\n    a: {kind: host}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A relative path resolves against the working directory, as a user typed it.
	t.Chdir(dir)
	topo, err := topology.Load("lab.yaml", nodes.Default())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got, want := topo.LabDir(), filepath.Join(dir, "emu-mylab"); got != want {
		t.Errorf("LabDir = %q, want %q", got, want)
	}
}

func TestLoad_MissingFile_SaysWhatToGive(t *testing.T) {
	_, err := topology.Load(filepath.Join(t.TempDir(), "nope.yaml"), nodes.Default())
	if err == nil || !strings.Contains(err.Error(), "give the path of a .yaml file with -t") {
		t.Errorf("Load of a missing file: %v", err)
	}
}

func TestLabName_ReadsTheNameOfAnOtherwiseInvalidFile(t *testing.T) {
	for _, tc := range []struct{ name, body string }{
		{"unknown kind", "name: mylab\ntopology:\n  nodes:\n    a: {kind: nonsense}\n"},
		{"wrong shapes", "name: mylab\ntopology: [1, 2]\nextra: {x: y}\n"},
		{"no topology", "# comment\nname: mylab\n"},
		{"broken YAML after the name", "name: mylab\ntopology:\n  nodes: {a: [\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "lab.yaml")
			if err := os.WriteFile(path, []byte(tc.body), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := topology.Load(path, nodes.Default()); err == nil {
				t.Fatal("the body is meant to be invalid, but Load accepted it")
			}
			name, err := topology.LabName(path)
			if err != nil || name != "mylab" {
				t.Errorf("LabName = %q, %v; want mylab", name, err)
			}
		})
	}
}

func TestLabName_RejectsWhatParseRejects(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"no name", "topology: {}\n", "no lab `name:`"},
		{"empty file", "", "no lab `name:`"},
		{"path in the name", "name: ../../etc\n", "may hold only letters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "lab.yaml")
			if err := os.WriteFile(path, []byte(tc.body), 0o644); err != nil {
				t.Fatal(err)
			}
			name, err := topology.LabName(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LabName = %q, %v; want an error saying %q", name, err, tc.want)
			}
		})
	}
}

// TestParse_ReportsEveryError checks that one run lists all mistakes of a
// phase, in file order, so users fix them in one pass.
func TestParse_ReportsEveryError(t *testing.T) {
	t.Run("while reading the file", func(t *testing.T) {
		_, err := topology.Parse("lab.yaml", []byte(`name: lab
method: bgpp
topology:
  nodes:
    a:
      kidn: host
    b:
      kind: host
      interfaces:
        eth1: 10.0.0.1
        eth2: {mtu: 10}
      routes:
        - {dst: 10.9.1.0/16, via: 10.0.0.2}
  links:
    - endpoints: ["a:eth1"]
    - {}
`), nodes.Default())
		assertErrors(t, err, []string{
			`lab.yaml:2: method "bgpp"`,
			`lab.yaml:6: node "a": unknown field "kidn"`,
			`lab.yaml:5: node "a" has no kind`,
			`lab.yaml:10: interface b:eth1: address 10.0.0.1 has no prefix length`,
			`lab.yaml:11: interface b:eth2 mtu must be`,
			`lab.yaml:13: node "b" route: destination 10.9.1.0/16 has host bits set`,
			`lab.yaml:15: a link needs exactly two endpoints`,
			`lab.yaml:16: a link needs exactly two endpoints`,
		})
	})
	t.Run("while checking references and addresses", func(t *testing.T) {
		_, err := topology.Parse("lab.yaml", []byte(`name: lab
topology:
  nodes:
    a: {kind: host, interfaces: {eth1: 10.0.0.1/24, eth2: 10.0.1.1/24}}
    b:
      kind: host
      interfaces: {eth1: 10.0.0.1/24}
      routes:
        - {dst: default, via: 10.5.0.1}
  links:
    - endpoints: ["a:eth1", "b:eth1"]
    - endpoints: ["a:eth3", "c:eth1"]
`), nodes.Default())
		assertErrors(t, err, []string{
			`lab.yaml:12: link "a:eth3": node "a" has no interface eth3`,
			`lab.yaml:12: link "c:eth1": node "c" is not declared`,
			`lab.yaml:4: interface a:eth2 is declared but no link uses it`,
			`lab.yaml:7: address 10.0.0.1 on b:eth1 is already used by a:eth1`,
			`lab.yaml:9: node "b" route to 0.0.0.0/0: next hop 10.5.0.1 is outside every connected subnet`,
		})
	})
}

func assertErrors(t *testing.T, err error, want []string) {
	t.Helper()
	if err == nil {
		t.Fatal("Parse accepted the file")
	}
	got := allErrors(t, err)
	for i := 0; i < max(len(got), len(want)); i++ {
		switch {
		case i >= len(got):
			t.Errorf("missing error %d: %s", i, want[i])
		case i >= len(want):
			t.Errorf("unexpected error %d: %v", i, got[i])
		case !strings.HasPrefix(got[i].Error(), want[i]):
			t.Errorf("error %d is %q, want it to start with %q", i, got[i].Error(), want[i])
		}
	}
	if t.Failed() {
		t.Logf("all errors:\n%v", err)
	}
}
