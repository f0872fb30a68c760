package topology_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/nodes"
	"github.com/emu-lab/emu/topologies"
)

func TestExternalIPsec_ShippedStrongSwanScenario_PairsWithTheVPNGateway(t *testing.T) {
	data, err := topologies.FS.ReadFile("strongswan-onprem.yaml")
	if err != nil {
		t.Fatal(err)
	}
	topo, err := topology.Parse(besideItsConfig(t), data, nodes.Default())
	if err != nil {
		t.Fatal(err)
	}
	onprem, vpngw := topo.Node("onprem").Tunnels[0], topo.Node("vpngw").Tunnels[0]
	if !onprem.External() || onprem.Speaker != "strongswan" || vpngw.External() {
		t.Errorf("speakers: onprem %q, vpngw %q", onprem.Speaker, vpngw.Speaker)
	}
	if onprem.Peer.Node != "vpngw" || vpngw.Peer.Node != "onprem" {
		t.Errorf("not paired: onprem's peer %q, vpngw's %q", onprem.Peer.Node, vpngw.Peer.Node)
	}
	// strongSwan answers; the VPN gateway initiates, again after a failure.
	if onprem.IKE.Initiate || !vpngw.IKE.Initiate {
		t.Errorf("initiate: onprem %v, vpngw %v", onprem.IKE.Initiate, vpngw.IKE.Initiate)
	}
	if onprem.DPD != nil {
		t.Errorf("an agent probe on the end emu does not run: %+v", onprem.DPD)
	}
}

// besideItsConfig is a topology file name in a directory holding the
// strongswan-onprem/ the scenario binds.
func besideItsConfig(t *testing.T) string {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "strongswan-onprem"), 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "lab.yaml")
}

// markNth puts the error mark on the line of the nth (from 1) occurrence of
// at in s.
func markNth(s, at string, nth int) string {
	i := 0
	for range nth {
		j := strings.Index(s[i:], at)
		if j < 0 {
			return s
		}
		i += j + len(at)
	}
	end := i + strings.IndexByte(s[i:], '\n')
	return s[:end] + " " + mark + s[end:]
}

func TestExternalIPsec_PairingRules_FileLineAndFix(t *testing.T) {
	data, err := topologies.FS.ReadFile("strongswan-onprem.yaml")
	if err != nil {
		t.Fatal(err)
	}
	shipped := string(data)
	const (
		onpremIKE = "            ike-version: ikev2" // first: onprem's block; second: vpngw's
		psk       = "psk: emu-onprem-Psk-2026"
	)
	for _, tc := range []struct {
		name string
		edit func(string) string
		want string
	}{
		{"generated PSK on the software's end", func(s string) string {
			return markNth(strings.Replace(s, psk, "psk: generate", 1), onpremIKE, 1)
		}, `node "onprem" connection to-vpc (run by strongswan) ike: psk "generate" would make a key only emu's end knows: write the PSK of strongswan's configuration`},
		{"generated PSK on emu's end", func(s string) string {
			return markNth(strings.Replace(s, psk+"   #", "psk: generate   #", 1), onpremIKE, 2)
		}, `node "vpngw" connection to-dc ike: psk "generate" would make a key strongswan on "onprem" never gets`},
		{"different PSKs", func(s string) string {
			return markNth(strings.Replace(s, psk+"   #", "psk: another-one   #", 1), onpremIKE, 1)
		}, `psk differs from the one on "vpngw"`},
		{"proposal differs", func(s string) string {
			return markNth(strings.Replace(s, psk+"   #", "ike-enc-alg: aes256\n            "+psk+"   #", 1), onpremIKE, 1)
		}, `ike: ike-enc-alg aes here, aes256 on "vpngw"`},
		{"subnets not mirrored", func(s string) string {
			return markNth(strings.Replace(s, "local-subnets: [172.16.2.0/24]", "local-subnets: [172.16.0.0/16]", 1), onpremIKE, 1)
		}, `remote-subnets [172.16.2.0/24] here, [172.16.0.0/16] on "vpngw"`},
		{"identity not mirrored", func(s string) string {
			return markNth(strings.Replace(s, psk+"   #", "local-id: vpn.example.com\n            "+psk+"   #", 1), onpremIKE, 1)
		}, `remote-id 172.16.1.10 here, vpn.example.com on "vpngw"`},
		{"node runs no program", func(s string) string {
			cut := s[strings.Index(s, "      binds:\n"):strings.Index(s, "      ipsec:\n")]
			return markNth(strings.Replace(s, cut, "", 1), "- name: to-vpc", 1)
		}, `node "onprem" connection to-vpc (run by strongswan) runs in the node, but the node runs no program: add ` + "`daemons:`"},
		{"tunnel address on the software's end", func(s string) string {
			return markNth(strings.Replace(s, "interface: ipsec0     #", "address: 169.254.10.1/30\n          interface: ipsec0     #", 1), "- name: to-vpc", 1)
		}, "emu does not make the tunnel interface of an end it does not run, so it cannot give it `address: 169.254.10.1/30`"},
		{"route into the software's interface", func(s string) string {
			return strings.Replace(s, "        - {dst: 172.16.0.0/16, via: 10.0.0.2}\n", "        - {dst: 172.16.0.0/16, via: 10.0.0.2}\n        - {dst: 172.16.2.0/24, dev: ipsec0} "+mark+"\n", 1)
		}, `node "onprem" route 172.16.2.0/24 dev ipsec0: strongswan makes that interface after emu installs the node's routes`},
		{"both ends run by software", func(s string) string {
			return markNth(strings.Replace(s, "        - name: to-dc\n", "        - name: to-dc\n          speaker: libreswan\n", 1), "- name: to-vpc", 1)
		}, `the other end on "vpngw" (line 99) is run by libreswan: emu must run one end of a connection`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := tc.edit(shipped)
			if text == shipped {
				t.Fatal("the edit changed nothing: the shipped file changed, update the test")
			}
			_, err := topology.Parse(besideItsConfig(t), []byte(text), nodes.Default())
			if err == nil {
				t.Fatal("accepted")
			}
			var got *topology.Error
			for _, e := range allErrors(t, err) {
				if strings.Contains(e.Msg, tc.want) {
					got = e
				}
			}
			if got == nil {
				t.Fatalf("no error says %q:\n%v", tc.want, err)
			}
			if want := markedLine(text); got.Line != want {
				t.Errorf("error on line %d, want %d: %v", got.Line, want, got)
			}
		})
	}
}
