package topology_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/nodes"
)

// parseIn writes a topology into a fresh directory (so binds resolve
// against it) and parses it.
func parseIn(t *testing.T, dir, data string) (*topology.Topology, error) {
	t.Helper()
	path := filepath.Join(dir, "lab.clab.yml")
	if err := os.WriteFile(path, []byte(strings.TrimPrefix(data, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	return topology.Load(path, nodes.Default())
}

func TestParse_ContainerlabAnchorsAliasesMergeKeysAndUpperCaseNames(t *testing.T) {
	topo := parse(t, `
name: lab
x-common: &router
  kind: linux
  exec: [ip link set lo up]
x-env: &env {A: "1"}
topology:
  nodes:
    R1:
      <<: *router
      env: *env
    R2:
      <<: [*router]
      exec: [echo own]   # the node's own field wins over the merged one
  links:
    - endpoints: ["R1:eth1", "R2:eth1"]
`)
	r1, r2 := topo.Node("R1"), topo.Node("R2")
	if r1 == nil || r2 == nil {
		t.Fatalf("nodes R1, R2 missing: %+v", topo.Nodes)
	}
	if r1.Kind != "linux" || r2.Kind != "linux" {
		t.Errorf("kinds %q %q, want linux from the merge key", r1.Kind, r2.Kind)
	}
	if got := r1.Software.Exec; len(got) != 1 || got[0].Text != "ip link set lo up" {
		t.Errorf("R1 exec = %+v, want the anchored command", got)
	}
	if got := r2.Software.Exec; len(got) != 1 || got[0].Text != "echo own" {
		t.Errorf("R2 exec = %+v, want its own command", got)
	}
	if !reflect.DeepEqual(r1.Software.Env, []string{"A=1"}) {
		t.Errorf("R1 env = %v, want [A=1] through the alias", r1.Software.Env)
	}
	// Interfaces come from the links, as containerlab files declare them.
	if got := r1.InterfaceNames(); !reflect.DeepEqual(got, []string{"eth1"}) {
		t.Errorf("R1 interfaces = %v, want [eth1] from its link", got)
	}
}

func TestParse_ContainerlabGroupsKindsDefaults_NodeWinsOverGroupOverKindOverDefaults(t *testing.T) {
	topo := parse(t, `
name: lab
topology:
  defaults:
    kind: linux
    env: {FROM: defaults}
    exec: [echo defaults]
  kinds:
    linux:
      exec: [echo kind]
  groups:
    hosts:
      kind: host
      env: {FROM: group}
  nodes:
    a: {group: hosts, interfaces: {eth1: 10.0.0.1/24}}
    b: {interfaces: {eth1: 10.0.0.2/24}, env: {FROM: node}}
  links:
    - endpoints: ["a:eth1", "b:eth1"]
`)
	a, b := topo.Node("a"), topo.Node("b")
	if a.Kind != "host" || !a.Roles.EndSystem || b.Kind != "linux" {
		t.Errorf("kinds a=%s b=%s, want host (group) and linux (defaults)", a.Kind, b.Kind)
	}
	if !reflect.DeepEqual(a.Software.Env, []string{"FROM=group"}) || !reflect.DeepEqual(b.Software.Env, []string{"FROM=node"}) {
		t.Errorf("env a=%v b=%v", a.Software.Env, b.Software.Env)
	}
	if a.Software.Exec[0].Text != "echo defaults" || b.Software.Exec[0].Text != "echo kind" {
		t.Errorf("exec a=%v (want the defaults') b=%v (want the linux kind's)", a.Software.Exec, b.Software.Exec)
	}
}

// containerlab merges env key by key, defaults < kind < group < node
// (Topology.GetNodeEnv); every other field is taken whole from the highest
// layer that sets it.
func TestParse_Env_MergedKeyByKey_DefaultsKindGroupNode_AsContainerlab(t *testing.T) {
	topo := parse(t, `
name: lab
topology:
  defaults:
    kind: linux
    env: {A: defaults, B: defaults, C: defaults, E: defaults}
  kinds:
    linux:
      env: {B: kind, D: kind}
  groups:
    g:
      env: {C: group, E: group}
  nodes:
    a: {group: g, interfaces: {eth1: 10.0.0.1/24}, env: {A: node}}
    b: {interfaces: {eth1: 10.0.0.2/24}}
  links:
    - endpoints: ["a:eth1", "b:eth1"]
`)
	want := map[string][]string{
		"a": {"A=node", "B=kind", "C=group", "D=kind", "E=group"},
		"b": {"A=defaults", "B=kind", "C=defaults", "D=kind", "E=defaults"},
	}
	for name, env := range want {
		if got := topo.Node(name).Software.Env; !reflect.DeepEqual(got, env) {
			t.Errorf("node %s env = %v, want %v", name, got, env)
		}
	}
}

func TestParse_Env_BadKeyInAKindLayer_ReportedAtItsLine(t *testing.T) {
	_, err := topology.Parse("/labs/lab.yaml", []byte(`name: lab
topology:
  kinds:
    linux:
      env: {1BAD: x}
  nodes:
    a: {kind: linux, env: {OK: y}}
`), nodes.Default())
	want := `/labs/lab.yaml:5: node "a" env: "1BAD" is not a variable name`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Parse error = %v, want %q", err, want)
	}
}

func TestParse_ContainerlabFieldsEmuCannotHonour_WarnedWithFileLine(t *testing.T) {
	topo := parse(t, `
name: lab
mgmt:
  network: test
topology:
  nodes:
    l1:
      kind: linux
      image: alpine:3
      cmd: sleep 9999
      mgmt-ipv4: 172.20.20.99
`)
	want := []string{
		`/labs/lab.yaml:2: top level: containerlab field "mgmt" is not supported by emu: ignored`,
		`/labs/lab.yaml:9: node "l1": containerlab field "cmd" is not supported by emu: ignored`,
		`/labs/lab.yaml:10: node "l1": containerlab field "mgmt-ipv4" is not supported by emu: ignored`,
		`/labs/lab.yaml:8: node "l1": image alpine:3 is used only with ` + "`runtime: docker`",
	}
	for _, w := range want {
		found := false
		for _, got := range topo.Warnings {
			found = found || strings.HasPrefix(got, w)
		}
		if !found {
			t.Errorf("no warning %q in:\n%s", w, strings.Join(topo.Warnings, "\n"))
		}
	}
}

func TestParse_Software_ExecBindsEnvDaemons(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "frr"), 0o755); err != nil {
		t.Fatal(err)
	}
	topo, err := parseIn(t, dir, `
name: lab
topology:
  nodes:
    r:
      kind: linux
      binds: [frr:/etc/frr:ro, /dev/null:/etc/x]
      env: {B: two, A: one}
      daemons:
        - {name: zebra, command: /usr/lib/frr/zebra --log stdout, wait-for: /run/frr/zserv.api}
        - {name: bgpd, command: /usr/lib/frr/bgpd --log stdout}
      exec: [vtysh -c 'show version']
`)
	if err != nil {
		t.Fatal(err)
	}
	sw := topo.Node("r").Software
	wantBinds := []topology.Bind{{Line: 6, Host: filepath.Join(dir, "frr"), Node: "/etc/frr", ReadOnly: true}, {Line: 6, Host: "/dev/null", Node: "/etc/x"}}
	if !reflect.DeepEqual(sw.Binds, wantBinds) {
		t.Errorf("binds = %+v\nwant %+v", sw.Binds, wantBinds)
	}
	if !reflect.DeepEqual(sw.Env, []string{"A=one", "B=two"}) {
		t.Errorf("env = %v", sw.Env)
	}
	if len(sw.Daemons) != 2 || sw.Daemons[0].WaitFor != "/run/frr/zserv.api" || sw.Daemons[1].Name != "bgpd" {
		t.Errorf("daemons = %+v", sw.Daemons)
	}
	if len(sw.Exec) != 1 || !sw.Runs() {
		t.Errorf("exec = %+v", sw.Exec)
	}
}

func TestParse_BindWithMissingHostPath_FailsWithFileLine(t *testing.T) {
	dir := t.TempDir()
	_, err := parseIn(t, dir, `
name: lab
topology:
  nodes:
    r:
      kind: linux
      binds:
        - router1/frr.conf:/etc/frr/frr.conf
`)
	want := filepath.Join(dir, "lab.clab.yml") + `:7: node "r" binds: host path ` + filepath.Join(dir, "router1/frr.conf") + " does not exist: create it or fix the path"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v\nwant it to say %q", err, want)
	}
}

func TestParse_ExternalBGPSpeaker_PairsWithEmuPeerAndChecksASN(t *testing.T) {
	const lab = `
name: lab
topology:
  nodes:
    gw:
      kind: onprem-gateway
      interfaces: {eth1: 10.0.0.1/30}
      daemons: [{name: bgpd, command: /usr/lib/frr/bgpd}]
      bgp:
        speaker: frr
        asn: 65001
        networks: [10.1.0.0/24]
        neighbors: [{address: 10.0.0.2, asn: 45104}]
    vbr:
      kind: vbr
      interfaces: {eth1: 10.0.0.2/30}
      bgp:
        asn: 45104
        neighbors: [{address: 10.0.0.1, asn: ASN}]
  links:
    - endpoints: ["gw:eth1", "vbr:eth1"]
`
	topo := parse(t, strings.Replace(lab, "ASN", "65001", 1))
	if b := topo.Node("gw").BGP; !b.External() || b.Speaker != "frr" || topo.Node("vbr").BGP.External() {
		t.Errorf("speakers: gw %q, vbr %q", b.Speaker, topo.Node("vbr").BGP.Speaker)
	}
	_, err := topology.Parse("/labs/lab.yaml", []byte(strings.Replace(lab, "ASN", "65009", 1)), nodes.Default())
	if err == nil || !strings.Contains(err.Error(), `node "vbr" bgp neighbor 10.0.0.1 (gw) has asn 65001, not 65009`) {
		t.Errorf("wrong ASN toward the external speaker: err = %v", err)
	}
	noDaemon := strings.Replace(strings.Replace(lab, "ASN", "65001", 1), "      daemons: [{name: bgpd, command: /usr/lib/frr/bgpd}]\n", "", 1)
	_, err = topology.Parse("/labs/lab.yaml", []byte(noDaemon), nodes.Default())
	if err == nil || !strings.Contains(err.Error(), `lab.yaml:9: node "gw": bgp speaker frr runs in the node, but the node runs no program`) {
		t.Errorf("external speaker without a program: err = %v", err)
	}
}
