package topology_test

import (
	"os"
	"strings"
	"testing"

	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/nodes"
)

// A tunnel whose peer announces, over BGP through the tunnel, a prefix
// covering the tunnel's own remote endpoint is refused unless a more
// specific route pins the endpoint to the plain path: deployed, such a
// tunnel bounced every ~10 s with 49% loss.
func TestParse_BGPOverTheTunnelCoversItsEndpoint_RejectedWithThePinToAdd(t *testing.T) {
	pin := "        - {dst: 172.16.1.10/32, via: 10.0.0.2}\n"
	for _, tc := range []struct {
		name, scenario string
		edits          []string // pairs of old, new
		want           string   // in the first error
	}{
		{"method 2 without the pinned endpoint", "static-bgp.yaml", []string{pin, ""},
			`lab.yaml:43: node "onprem" learns 172.16.1.0/24 over BGP from "vpngw" (169.254.10.2) through tunnel to-vpc (originated by "vpc": redistribute connected, bgp at line 80), and that prefix covers the tunnel's own remote endpoint 172.16.1.10: BGP would route the ESP of tunnel to-vpc into a tunnel (recursive routing: the tunnel breaks, BGP withdraws the route after the hold time, the tunnel comes back, and so on every few seconds). Pin the endpoint to the plain path on "onprem" with a more specific static route: add ` + "`{dst: 172.16.1.10/32, via: 10.0.0.2}`" + ` to its ` + "`routes:`" + `, or stop announcing 172.16.1.0/24 over the tunnel`},
		{"method 2 with a pin no more specific than BGP's route", "static-bgp.yaml", []string{pin, "        - {dst: 172.16.1.0/24, via: 10.0.0.2, metric: 30}\n"},
			`lab.yaml:43: node "onprem" learns 172.16.1.0/24 over BGP from "vpngw"`},
		{"method 3 without the pinned endpoint: the fix goes through the VBR session", "bgp.yaml", []string{pin, ""},
			"Pin the endpoint to the plain path on \"onprem\" with a more specific static route: add `{dst: 172.16.1.10/32, via: 10.0.0.2}`"},
		{"on-prem announcing its circuit over the tunnel", "static-bgp.yaml", []string{"        asn: 65001\n", "        asn: 65001\n        redistribute: [connected]\n"},
			`lab.yaml:103: node "vpngw" learns 10.0.0.0/30 over BGP from "onprem" (169.254.10.1) through tunnel to-dc (originated by "onprem": redistribute connected, bgp at line 40), and that prefix covers the tunnel's own remote endpoint 10.0.0.1: BGP would route the ESP of tunnel to-dc into a tunnel (recursive routing: the tunnel breaks, BGP withdraws the route after the hold time, the tunnel comes back, and so on every few seconds). Pin the endpoint to the plain path on "vpngw" with a more specific static route: add ` + "`{dst: 10.0.0.1/32, via: 172.16.1.1}`" + ` to its ` + "`routes:`" + `, or stop announcing 10.0.0.0/30 over the tunnel`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := os.ReadFile("../../topologies/" + tc.scenario)
			if err != nil {
				t.Fatal(err)
			}
			text := string(data)
			for i := 0; i+1 < len(tc.edits); i += 2 {
				if !strings.Contains(text, tc.edits[i]) {
					t.Fatalf("%s no longer contains %q", tc.scenario, tc.edits[i])
				}
				text = strings.Replace(text, tc.edits[i], tc.edits[i+1], 1)
			}
			_, err = topology.Parse("lab.yaml", []byte(text), nodes.Default())
			if err == nil {
				t.Fatal("Parse accepted the recursive setup")
			}
			if got := firstError(t, err).Error(); !strings.Contains(got, tc.want) {
				t.Errorf("first error:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

// With two tunnels (the transit router's ECMP pair), a prefix learned over
// one that covers the other's endpoint sends that tunnel's ESP through the
// first: refused too, once per endpoint.
func TestParse_BGPOverOneTunnelCoversTheOthersEndpoint_Rejected(t *testing.T) {
	data, err := os.ReadFile("../../topologies/transit-router.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pin := "        - {dst: 172.16.1.11/32, via: 10.0.0.2}\n"
	if !strings.Contains(string(data), pin) {
		t.Fatalf("transit-router.yaml no longer pins %q", pin)
	}
	_, err = topology.Parse("lab.yaml", []byte(strings.Replace(string(data), pin, "", 1)), nodes.Default())
	if err == nil {
		t.Fatal("Parse accepted the recursive setup")
	}
	all := allErrors(t, err)
	if len(all) != 1 || !strings.Contains(all[0].Msg, `node "onprem" learns 172.16.1.0/24 over BGP from "vpngw" (169.254.10.2) through tunnel to-vpc-1`) ||
		!strings.Contains(all[0].Msg, "covers the remote endpoint 172.16.1.11 of tunnel to-vpc-2") ||
		!strings.Contains(all[0].Msg, "add `{dst: 172.16.1.11/32, via: 10.0.0.2}`") {
		t.Errorf("want one error for endpoint 172.16.1.11, got:\n%v", err)
	}
}

// The negative control: a pin as specific as BGP's route but with a lower
// metric wins in the kernel, and is accepted.
func TestParse_EndpointPinnedWithALowerMetric_Accepted(t *testing.T) {
	data, err := os.ReadFile("../../topologies/static-bgp.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(data), "{dst: 172.16.1.10/32, via: 10.0.0.2}", "{dst: 172.16.1.0/24, via: 10.0.0.2, metric: 5}", 1)
	if _, err := topology.Parse("lab.yaml", []byte(text), nodes.Default()); err != nil {
		t.Fatal(err)
	}
}

// A network listed twice (or once more with host bits) is announced once:
// counted twice, the bgp check waited 10 s for a prefix that never came and
// failed a healthy lab. Refused, naming the line.
func TestParse_BGPNetworkListedTwice_Rejected(t *testing.T) {
	data, err := os.ReadFile("../../topologies/bgp.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, dup := range []string{"10.1.0.0/24", "10.1.0.1/24"} {
		old := "networks: [10.1.0.0/24]"
		if !strings.Contains(string(data), old) {
			t.Fatalf("bgp.yaml no longer has %q", old)
		}
		text := strings.Replace(string(data), old, "networks: [10.1.0.0/24, "+dup+"]", 1)
		_, err = topology.Parse("lab.yaml", []byte(text), nodes.Default())
		if err == nil {
			t.Fatalf("Parse accepted network 10.1.0.0/24 listed again as %s", dup)
		}
		if got := firstError(t, err).Error(); !strings.Contains(got, "network 10.1.0.0/24 is listed twice (as "+dup+"): list each prefix once") {
			t.Errorf("first error: %s", got)
		}
	}
}
