package plan_test

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/nodes"
	"github.com/emu-lab/emu/topologies"
)

// rawTopology is the shipped file read the simplest way, as the oracle of
// what the plan must contain: not through package topology.
type rawTopology struct {
	Name     string
	Topology struct {
		Nodes map[string]struct {
			Interfaces map[string]any
			IPsec      []map[string]any `yaml:"ipsec"`
		}
		Links []struct{ Endpoints []string }
	}
}

func load(t *testing.T, file, dataplane string) (*rawTopology, *plan.Plan) {
	t.Helper()
	text, err := topologies.FS.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var raw rawTopology
	if err := yaml.Unmarshal(text, &raw); err != nil {
		t.Fatal(err)
	}
	topo, err := topology.Parse("/labs/"+file, text, nodes.Default())
	if err == nil {
		err = nodes.Default().Validate(topo)
	}
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.Build(topo, nodes.Default(), &ipsec.Secrets{}, dataplane)
	if err != nil {
		t.Fatal(err)
	}
	return &raw, p
}

func stepsOf[S plan.Step](p *plan.Plan) []S {
	var out []S
	for _, st := range p.Stages {
		for _, s := range st.Steps {
			if s, ok := s.(S); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

func TestBuild_Static_ANamespacePerNodeAVethPerLinkEveryAddress(t *testing.T) {
	raw, p := load(t, "static.yaml", plan.Userspace)
	ns := func(node string) string { return "emu-" + raw.Name + "-" + node }

	var wantNS, gotNS, wantAddrs, gotAddrs, wantLinks, gotLinks []string
	for node, n := range raw.Topology.Nodes {
		wantNS = append(wantNS, ns(node))
		for ifc, v := range n.Interfaces {
			cidr, ok := v.(string)
			if !ok {
				t.Fatalf("%s:%s: the oracle reads only the `eth1: CIDR` form", node, ifc)
			}
			wantAddrs = append(wantAddrs, ns(node)+" "+ifc+" "+netip.MustParsePrefix(cidr).String())
		}
	}
	for _, s := range stepsOf[plan.Namespace](p) {
		gotNS = append(gotNS, s.Name)
	}
	for _, s := range stepsOf[plan.Address](p) {
		gotAddrs = append(gotAddrs, s.Namespace+" "+s.Interface+" "+s.Prefix.String())
	}
	pair := func(a, b string) string {
		if b < a {
			a, b = b, a
		}
		return a + " <-> " + b
	}
	for _, l := range raw.Topology.Links {
		a, b, _ := strings.Cut(l.Endpoints[0], ":")
		c, d, _ := strings.Cut(l.Endpoints[1], ":")
		wantLinks = append(wantLinks, pair(ns(a)+":"+b, ns(c)+":"+d))
	}
	for _, s := range stepsOf[plan.Veth](p) {
		gotLinks = append(gotLinks, pair(s.A.Namespace+":"+s.A.Interface, s.B.Namespace+":"+s.B.Interface))
	}
	for _, c := range []struct {
		what      string
		want, got []string
	}{{"namespaces", wantNS, gotNS}, {"addresses", wantAddrs, gotAddrs}, {"veths", wantLinks, gotLinks}} {
		slices.Sort(c.want)
		slices.Sort(c.got)
		if !slices.Equal(c.want, c.got) {
			t.Errorf("%s:\n got %q\nwant %q", c.what, c.got, c.want)
		}
	}
}

// Every ipsec connection of the file becomes one kernel tunnel, or one
// tunnel of its node's agent: never both, never none.
func TestBuild_Dataplane_EachConnectionOnExactlyOneDataplane(t *testing.T) {
	for _, file := range []string{"static.yaml", "bgp.yaml", "transit-router.yaml"} {
		for _, dp := range []string{plan.Kernel, plan.Userspace} {
			raw, p := load(t, file, dp)
			want := 0
			for _, n := range raw.Topology.Nodes {
				want += len(n.IPsec)
			}
			kernel, agent := len(stepsOf[plan.KernelTunnel](p)), 0
			for _, a := range stepsOf[plan.Agent](p) {
				agent += len(a.Tunnels)
			}
			if dp == plan.Kernel && (kernel != want || agent != 0) || dp == plan.Userspace && (agent != want || kernel != 0) {
				t.Errorf("%s on %s: %d kernel tunnels, %d agent tunnels, want %d connections on %s only", file, dp, kernel, agent, want, dp)
			}
		}
	}
}

// --dry-run prints every step: no key may appear in what it prints.
func TestBuild_StepsPrintNoKey(t *testing.T) {
	for _, dp := range []string{plan.Kernel, plan.Userspace} {
		_, p := load(t, "static-bgp.yaml", dp)
		var conns []ipsec.Conn
		for _, a := range stepsOf[plan.Agent](p) {
			conns = append(conns, a.Tunnels...)
		}
		for _, k := range stepsOf[plan.KernelTunnel](p) {
			conns = append(conns, k.Conn)
		}
		if len(conns) == 0 {
			t.Fatalf("%s: no connection in the plan: the test proves nothing", dp)
		}
		var printed strings.Builder
		for _, st := range p.Stages {
			for _, s := range st.Steps {
				fmt.Fprintln(&printed, s)
			}
		}
		for _, c := range conns {
			for _, key := range [][]byte{c.Out.EncKey, c.In.EncKey} {
				if h := hex.EncodeToString(key); strings.Contains(strings.ToLower(printed.String()), h[:16]) {
					t.Errorf("%s: the printed plan shows key %s…", dp, h[:16])
				}
			}
		}
	}
}

// TestBuild_IKE_PrintsProposalsNeverThePSK: an IKE-keyed connection goes to
// its agent with the pre-shared key; the printed plan names the proposals
// and who initiates, never the key, on either dataplane.
func TestBuild_IKE_PrintsProposalsNeverThePSK(t *testing.T) {
	text, err := topologies.FS.ReadFile("static.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const psk = "Sup3rSecretPSK"
	s := string(text)
	for _, addr := range []string{"169.254.10.1/30", "169.254.10.2/30"} {
		s = strings.Replace(s, "address: "+addr+"\n", "address: "+addr+"\n          ike: {ike-version: ikev2, psk: "+psk+"}\n", 1)
	}
	topo, err := topology.Parse("/labs/ike.yaml", []byte(s), nodes.Default())
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.Build(topo, nodes.Default(), &ipsec.Secrets{}, plan.Userspace)
	if err != nil {
		t.Fatal(err)
	}
	var printed strings.Builder
	n := 0
	for _, a := range stepsOf[plan.Agent](p) {
		for _, c := range a.Tunnels {
			if c.IKE == nil || string(c.IKE.PSK) != psk {
				t.Errorf("%s: connection %s reaches its agent without its IKE config and PSK", a.Node, c.Name)
			}
			n++
		}
		fmt.Fprintln(&printed, a)
	}
	if n != 2 {
		t.Fatalf("%d IKE-keyed connections in the plan, want 2", n)
	}
	out := printed.String()
	if strings.Contains(out, psk) || !strings.Contains(out, "keyed by IKEv2 as initiator: IKE:AES_CBC_128/PRF_HMAC_SHA1/HMAC_SHA1_96/MODP_1024") {
		t.Errorf("printed plan:\n%s", out)
	}
	// On the kernel dataplane deploy makes the interfaces and policies and
	// each agent keys its kernel tunnel with what it negotiates.
	p, err = plan.Build(topo, nodes.Default(), &ipsec.Secrets{}, plan.Kernel)
	if err != nil {
		t.Fatalf("kernel dataplane: %v", err)
	}
	printed.Reset()
	kernel := stepsOf[plan.KernelTunnel](p)
	for _, k := range kernel {
		fmt.Fprintln(&printed, k)
	}
	n = 0
	for _, a := range stepsOf[plan.Agent](p) {
		for _, k := range a.XFRM {
			if k.Conn.IKE == nil || string(k.Conn.IKE.PSK) != psk || !slices.ContainsFunc(kernel, func(s plan.KernelTunnel) bool {
				return s.Node == k.Node && s.IfID == k.IfID && s.Conn.IKE == k.Conn.IKE
			}) {
				t.Errorf("%s: connection %s reaches its agent without its IKE config or its kernel tunnel's if_id", a.Node, k.Conn.Name)
			}
			n++
		}
		fmt.Fprintln(&printed, a)
	}
	if out := printed.String(); n != 2 || strings.Contains(out, psk) || !strings.Contains(out, "keyed by IKEv2 as initiator") || !strings.Contains(out, "its CHILD SAs into XFRM if_id 1") {
		t.Errorf("kernel dataplane: %d agents key XFRM tunnels, want 2; printed plan:\n%s", n, out)
	}
}

// An end run by software in the node (strongSwan) gets nothing from emu: no
// agent, no SAs, no tunnel; its emu peer's agent runs IKE with the PSK given.
func TestBuild_ExternalIPsecEnd_EmuRunsOnlyThePeersEnd(t *testing.T) {
	text, err := topologies.FS.ReadFile("strongswan-onprem.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "strongswan-onprem"), 0o755); err != nil {
		t.Fatal(err)
	}
	topo, err := topology.Parse(filepath.Join(dir, "lab.yaml"), text, nodes.Default())
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.Build(topo, nodes.Default(), &ipsec.Secrets{}, plan.Userspace)
	if err != nil {
		t.Fatal(err)
	}
	agents := stepsOf[plan.Agent](p)
	if len(agents) != 1 || agents[0].Node != "vpngw" || len(agents[0].Tunnels) != 1 {
		t.Fatalf("agents %+v, want only vpngw's with its one connection", agents)
	}
	c := agents[0].Tunnels[0]
	if c.IKE == nil || string(c.IKE.PSK) != "emu-onprem-Psk-2026" || !c.IKE.Initiate {
		t.Errorf("vpngw's connection: %+v", c.IKE)
	}
	if k := stepsOf[plan.KernelTunnel](p); len(k) != 0 {
		t.Errorf("kernel tunnels %+v", k)
	}
	if sw := stepsOf[plan.Software](p); len(sw) != 1 || sw[0].Node != "onprem" {
		t.Errorf("software %+v, want onprem's charon", sw)
	}
}
