package nodes_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/nodes"
	"github.com/emu-lab/emu/topologies"
)

// load writes the shipped static scenario with edits (pairs of old, new;
// every occurrence replaced) and loads it.
func load(t *testing.T, edits ...string) error {
	t.Helper()
	return loadEdited(t, "static.yaml", edits...)
}

// loadEdited writes a shipped scenario as lab.yaml with edits and loads it.
func loadEdited(t *testing.T, scenario string, edits ...string) error {
	t.Helper()
	data, err := topologies.FS.ReadFile(scenario)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for i := 0; i+1 < len(edits); i += 2 {
		if !strings.Contains(text, edits[i]) {
			t.Fatalf("%s no longer contains %q", scenario, edits[i])
		}
		text = strings.ReplaceAll(text, edits[i], edits[i+1])
	}
	path := filepath.Join(t.TempDir(), "lab.yaml")
	os.WriteFile(path, []byte(text), 0o644)
	_, err = nodes.Load(path)
	return err
}

func TestLoad_ShippedStaticScenario_IsValid(t *testing.T) {
	if err := load(t, "name: static", "name: static"); err != nil {
		t.Fatal(err)
	}
}

func TestLoad_RejectsWhatTheProviderRejects(t *testing.T) {
	// Both ends of the tunnel move: they share one /30.
	for _, tc := range []struct {
		name  string
		edits []string
		want  string
	}{
		{"tunnel CIDR outside 169.254.0.0/16", []string{"169.254.10.", "10.99.0."}, "must be a /30 inside 169.254.0.0/16"},
		{"tunnel CIDR not a /30", []string{"169.254.10.1/30", "169.254.10.1/29", "169.254.10.2/30", "169.254.10.2/29"}, "must be a /30 inside 169.254.0.0/16"},
		{"reserved tunnel CIDR 169.254.3.0/30", []string{"169.254.10.", "169.254.3."}, "reserved by the provider"},
		{"reserved tunnel CIDR 169.254.169.252/30", []string{"169.254.10.1/30", "169.254.169.253/30", "169.254.10.2/30", "169.254.169.254/30"}, "reserved by the provider"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := load(t, tc.edits...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "lab.yaml:") {
				t.Errorf("error has no file:line: %v", err)
			}
		})
	}
}

func TestLoad_OnpremGatewayIPInForbiddenRange_Rejected(t *testing.T) {
	// Move the whole Express Connect /30 into the shared address space.
	data, _ := topologies.FS.ReadFile("static.yaml")
	text := strings.ReplaceAll(string(data), "10.0.0.", "100.64.0.")
	path := filepath.Join(t.TempDir(), "lab.yaml")
	os.WriteFile(path, []byte(text), 0o644)
	_, err := nodes.Load(path)
	if err == nil || !strings.Contains(err.Error(), "lies in 100.64.0.0/10") {
		t.Fatalf("got %v, want the gateway IP range refused", err)
	}
}

func TestLoad_VBROnBGPWithStaticVPNGateway_RejectedNamingTheMethods(t *testing.T) {
	data, _ := topologies.FS.ReadFile("static.yaml")
	text := strings.Replace(string(data), "      routes:\n        - {dst: 10.1.0.0/24, via: 10.0.0.1}", `      bgp:
        asn: 45104
        neighbors: [{address: 10.0.0.1, asn: 65001}]
      routes:
        - {dst: 10.1.0.0/24, via: 10.0.0.1}`, 1)
	text = strings.Replace(text, "      ipsec:\n        - name: to-vpc", `      bgp:
        asn: 65001
        neighbors: [{address: 10.0.0.2, asn: 45104}]
      ipsec:
        - name: to-vpc`, 1)
	path := filepath.Join(t.TempDir(), "lab.yaml")
	os.WriteFile(path, []byte(text), 0o644)
	_, err := nodes.Load(path)
	if err == nil || !strings.Contains(err.Error(), `VBR "vbr" runs BGP but VPN gateway "vpngw" uses static routing`) || !strings.Contains(err.Error(), "method 3") {
		t.Fatalf("got %v, want the invalid method combination named", err)
	}
}

func TestLoad_ShippedMethodScenarios_AreValid(t *testing.T) {
	for _, f := range []string{"static.yaml", "static-bgp.yaml", "bgp.yaml", "static-healthcheck.yaml", "transit-router.yaml", "dual-stack.yaml"} {
		data, err := topologies.FS.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), f)
		os.WriteFile(path, data, 0o644)
		if _, err := nodes.Load(path); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// The provider warns when the VBR and the VPN gateway see different
// on-premises ASNs; here each session's ASN must match the peer's own, so
// the mismatch is an error that names the fix.
func TestLoad_Method3DifferentOnpremASNs_Rejected(t *testing.T) {
	data, _ := topologies.FS.ReadFile("bgp.yaml")
	text := strings.Replace(string(data), "          - {address: 10.0.0.1, asn: 65001}", "          - {address: 10.0.0.1, asn: 65002}", 1)
	text = strings.Replace(text, "      bgp:\n        asn: 65001", "      bgp:\n        asn: 65002", 1)
	path := filepath.Join(t.TempDir(), "lab.yaml")
	os.WriteFile(path, []byte(text), 0o644)
	_, err := nodes.Load(path)
	if err == nil || !strings.Contains(err.Error(), "has asn 65002, not 65001") {
		t.Fatalf("got %v", err)
	}
}

// The on-premises end holds the other half of the provider's tunnel CIDR:
// the provider's rule is reported on its line too.
func TestLoad_OnpremTunnelCIDROutsideTheProvidersRules_Rejected(t *testing.T) {
	err := load(t, "169.254.10.", "10.99.0.")
	want := `lab.yaml:26: node "onprem" connection to-vpc: tunnel CIDR 10.99.0.0/30 must be a /30 inside 169.254.0.0/16, e.g. 169.254.10.0/30`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want %q", err, want)
	}
}

// `method:` is enforced: a file that names a method routes that way, or is
// refused on the line that breaks it, with the two ways out.
func TestLoad_MethodDisagreesWithTheRouting_RejectedOnTheOffendingLine(t *testing.T) {
	for _, tc := range []struct {
		name, scenario, method string
		want                   []string
	}{
		{"method static with BGP on the gateways", "static-bgp.yaml", "static", []string{
			"lab.yaml:40: on-premises gateway \"onprem\" runs BGP, but `method: static` (line 19) is the guide's method 1: static routes on the VBR and on the VPN gateway. Remove its `bgp:` and route statically, or set `method: static-bgp` (or bgp), or drop `method:`",
			"lab.yaml:99: VPN gateway \"vpngw\" runs BGP, but `method: static` (line 19)",
		}},
		{"method static-bgp with the VBR peering with on-prem", "bgp.yaml", "static-bgp", []string{
			"lab.yaml:57: VBR \"vbr\" peers with the on-premises gateway over BGP (10.0.0.1), but `method: static-bgp` (line 17) is the guide's method 2: static routes on the VBR, BGP on the VPN gateway. Route to the data center with a static route instead, or set `method: bgp`, or drop `method:`",
		}},
		{"method bgp with a static VBR", "static-bgp.yaml", "bgp", []string{
			"lab.yaml:52: VBR \"vbr\" has no BGP session with the on-premises gateway, but `method: bgp` (line 19) is the guide's method 3: BGP on the VBR and on the VPN gateway. Add `bgp:` with the on-premises gateway as a neighbor, or set `method: static-bgp`, or drop `method:`",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, _ := topologies.FS.ReadFile(tc.scenario)
			old := regexp.MustCompile(`(?m)^method: .*$`).FindString(string(data))
			err := loadEdited(t, tc.scenario, old, "method: "+tc.method)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestLoad_DataCenterLANOverlapsVPCVSwitch_Rejected(t *testing.T) {
	err := load(t, "10.1.0.0/24", "172.16.2.0/24", "10.1.0.", "172.16.2.1")
	want := "lab.yaml:23: data-center subnet 172.16.2.0/24 on onprem:eth1 overlaps VPC subnet 172.16.2.0/24 on vpc:eth3 (line 59): the VPC delivers those addresses to its own vSwitch, so they never reach the data center: renumber one of them"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want %q", err, want)
	}
}

// The tunnels carry IPv6, BGP does not: an IPv6 network would be announced
// to no one, so it is refused where it is written, with the static-route fix.
func TestLoad_IPv6BGPNetwork_RejectedWithLineAndStaticRouteFix(t *testing.T) {
	data, _ := topologies.FS.ReadFile("bgp.yaml")
	text := strings.Replace(string(data), "networks: [10.1.0.0/24]", `networks: [10.1.0.0/24, "fd00:1::/64"]`, 1)
	if text == string(data) {
		t.Fatal("bgp.yaml no longer has the on-prem networks line this test edits")
	}
	path := filepath.Join(t.TempDir(), "lab.yaml")
	os.WriteFile(path, []byte(text), 0o644)
	line := 0
	for i, l := range strings.Split(text, "\n") {
		if strings.Contains(l, "fd00:1::/64") {
			line = i + 1
		}
	}
	_, err := nodes.Load(path)
	want := fmt.Sprintf("lab.yaml:%d: ", line)
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "IPv4 routes only") || !strings.Contains(err.Error(), "dev: <tunnel interface>") {
		t.Fatalf("got %v, want an error at %s naming the static-route fix", err, want)
	}
}

func TestLoad_BandwidthSpecs_OnlyWhatTheProviderSells(t *testing.T) {
	data, _ := topologies.FS.ReadFile("static.yaml")
	for _, c := range []struct {
		name, after, want string
	}{
		{"VPN gateway 300", "kind: vpn-gateway", "bandwidth 300 Mbit/s is not sold for a private VPN gateway (CreateVpnGateway Bandwidth): use one of 200 or 1000"},
		{"bandwidth on a host", "kind: host", `kind host has no bandwidth spec to emulate: ` + "`bandwidth:`" + ` belongs to vbr (Express Connect circuit bandwidth`},
		{"not a number", "kind: vbr", "bandwidth (Mbit/s) must be a whole number from 1 to 100000"},
	} {
		t.Run(c.name, func(t *testing.T) {
			value := map[string]string{"VPN gateway 300": "300", "bandwidth on a host": "100", "not a number": "1G"}[c.name]
			text := strings.Replace(string(data), "      "+c.after+"\n", "      "+c.after+"\n      bandwidth: "+value+" # <- here\n", 1)
			path := filepath.Join(t.TempDir(), "lab.yaml")
			os.WriteFile(path, []byte(text), 0o644)
			line := 0
			for i, l := range strings.Split(text, "\n") {
				if strings.Contains(l, "# <- here") {
					line = i + 1
				}
			}
			_, err := nodes.Load(path)
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("lab.yaml:%d: ", line)) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want at line %d: %s", err, line, c.want)
			}
		})
	}
	// A VBR without a circuit (no link to an on-premises gateway) has
	// nothing to limit.
	path := filepath.Join(t.TempDir(), "lab.yaml")
	os.WriteFile(path, []byte(`name: lab
topology:
  nodes:
    vbr: {kind: vbr, bandwidth: 100, interfaces: {eth1: 10.0.1.1/30}}
    cen: {kind: cen, interfaces: {eth1: 10.0.1.2/30}}
  links:
    - endpoints: ["vbr:eth1", "cen:eth1"]
`), 0o644)
	if _, err := nodes.Load(path); err == nil || !strings.Contains(err.Error(), "lab.yaml:4: ") || !strings.Contains(err.Error(), "limits nothing") {
		t.Fatalf("got %v, want the VBR's bandwidth refused for lack of a circuit", err)
	}
}

// The provider's rules ask what a node does, not what its kind is called: a
// kind that is not emu's own playing the VBR, VPC, VPN gateway and
// on-premises gateway roles gets the same rules, and a linux node in the
// VBR's place gets none of the VBR's.
func TestRules_AskRoles_ThirdPartyKindsPlayingTheSameRolesGetTheSameRules(t *testing.T) {
	edit := func(scenario string, edits ...string) string {
		data, err := topologies.FS.ReadFile(scenario)
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		for i := 0; i+1 < len(edits); i += 2 {
			if !strings.Contains(text, edits[i]) {
				t.Fatalf("%s no longer contains %q", scenario, edits[i])
			}
			text = strings.ReplaceAll(text, edits[i], edits[i+1])
		}
		return text
	}
	validate := func(r *nodes.Registry, text string) (*topology.Topology, error) {
		path := filepath.Join(t.TempDir(), "lab.yaml")
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		topo, err := topology.Load(path, r)
		if err != nil {
			return nil, err
		}
		return topo, r.Validate(topo)
	}
	for _, tc := range []struct {
		name string
		text string
		want []string // "" for a valid topology
	}{
		{"data-center LAN overlaps a VPC vSwitch", edit("static.yaml", "10.1.0.0/24", "172.16.2.0/24", "10.1.0.", "172.16.2.1"),
			[]string{"overlaps VPC subnet 172.16.2.0/24 on vpc:eth3"}},
		{"method static with BGP on both gateways", edit("static-bgp.yaml", "method: static-bgp", "method: static"),
			[]string{`on-premises gateway "onprem" runs BGP, but`, `VPN gateway "vpngw" runs BGP, but`}},
		{"method static-bgp with the VBR peering with on-prem", edit("bgp.yaml", "method: bgp", "method: static-bgp"),
			[]string{`VBR "vbr" peers with the on-premises gateway over BGP (10.0.0.1)`}},
		{"VBR on BGP with a static VPN gateway", edit("static.yaml",
			"      routes:\n        - {dst: 10.1.0.0/24, via: 10.0.0.1}", "      bgp: {asn: 45104, neighbors: [{address: 10.0.0.1, asn: 65001}]}\n      routes:\n        - {dst: 10.1.0.0/24, via: 10.0.0.1}",
			"      ipsec:\n        - name: to-vpc", "      bgp: {asn: 65001, neighbors: [{address: 10.0.0.2, asn: 45104}]}\n      ipsec:\n        - name: to-vpc"),
			[]string{`VBR "vbr" runs BGP but VPN gateway "vpngw" uses static routing`}},
		{"circuit bandwidth on the VBR's link to on-prem", edit("static.yaml", "      kind: vbr\n", "      kind: vbr\n      bandwidth: 100\n"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, renamed := labtest.ThirdPartyKinds(tc.text)
			if renamed == tc.text {
				t.Fatal("no kind renamed")
			}
			for _, c := range []struct {
				kinds string
				r     *nodes.Registry
				text  string
			}{{"emu's kinds", nodes.Default(), tc.text}, {"third-party kinds", r, renamed}} {
				_, err := validate(c.r, c.text)
				if len(tc.want) == 0 && err != nil {
					t.Errorf("with %s: %v", c.kinds, err)
				}
				for _, w := range tc.want {
					if err == nil || !strings.Contains(err.Error(), w) {
						t.Errorf("with %s: got %v, want %q", c.kinds, err, w)
					}
				}
			}
		})
	}
	t.Run("routes a VPN gateway published", func(t *testing.T) {
		text := edit("static.yaml")
		r, renamed := labtest.ThirdPartyKinds(text)
		own, err := validate(nodes.Default(), text)
		if err != nil {
			t.Fatal(err)
		}
		third, err := validate(r, renamed)
		if err != nil {
			t.Fatal(err)
		}
		if a, b := nodes.PublishedRoutes(own), nodes.PublishedRoutes(third); len(a) == 0 || fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("published routes: %v with emu's kinds, %v with third-party kinds", a, b)
		}
	})
	t.Run("a linux node in the VBR's place is no VBR", func(t *testing.T) {
		_, err := validate(nodes.Default(), edit("bgp.yaml", "method: bgp", "method: static-bgp", "kind: vbr", "kind: linux"))
		if err != nil && strings.Contains(err.Error(), "VBR") {
			t.Errorf("the VBR's rules applied to a linux node: %v", err)
		}
	})
}
