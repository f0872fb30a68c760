package topology_test

import (
	"strings"
	"testing"
	"time"

	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/nodes"
	"github.com/emu-lab/emu/topologies"
)

// withIKE returns the shipped static scenario with an `ike:` block (lines
// indented under each connection) added to the on-prem and VPN gateway ends.
func withIKE(t *testing.T, onprem, vpngw string) string {
	t.Helper()
	data, err := topologies.FS.ReadFile("static.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for addr, block := range map[string]string{"169.254.10.1/30": onprem, "169.254.10.2/30": vpngw} {
		if block == "" {
			continue
		}
		at := "address: " + addr + "\n"
		indent := "          "
		s = strings.Replace(s, at, at+indent+"ike:\n"+indent+"  "+strings.ReplaceAll(strings.TrimSpace(block), "\n", "\n"+indent+"  ")+"\n", 1)
	}
	return s
}

func TestIKE_ProviderDefaults_ResolveForIKEv2(t *testing.T) {
	topo, err := topology.Parse("lab.yaml", []byte(withIKE(t, "ike-version: ikev2", "ike-version: ikev2")), nodes.Default())
	if err != nil {
		t.Fatal(err)
	}
	onprem, vpngw := topo.Node("onprem").Tunnels[0].IKE, topo.Node("vpngw").Tunnels[0].IKE
	want := topology.IKE{Version: "ikev2", IKEEncAlg: "aes", IKEAuthAlg: "sha1", IKEPFS: "group2", IKELifetime: 24 * time.Hour,
		PSK: topology.KeyGenerate, IPsecEncAlg: "aes", IPsecAuthAlg: "sha1", IPsecPFS: "group2", IPsecLifetime: 24 * time.Hour,
		DPD: true, NATTraversal: true}
	for _, k := range []*topology.IKE{onprem, vpngw} {
		got := *k
		got.Line, got.Initiate = 0, false
		if got.Version != want.Version || got.IKEEncAlg != want.IKEEncAlg || got.IKEPFS != want.IKEPFS || got.IKELifetime != want.IKELifetime ||
			got.PSK != want.PSK || got.IPsecPFS != want.IPsecPFS || got.IPsecLifetime != want.IPsecLifetime || !got.DPD || !got.NATTraversal {
			t.Errorf("resolved %+v, want the provider's defaults %+v", got, want)
		}
	}
	// Neither end says who initiates: the lower endpoint address does.
	if !onprem.Initiate || vpngw.Initiate {
		t.Errorf("initiate: onprem %v, vpngw %v; want onprem only", onprem.Initiate, vpngw.Initiate)
	}
}

func TestIKE_RejectsWhatTheProviderDoesNot(t *testing.T) {
	ok := "ike-version: ikev2"
	for _, tc := range []struct {
		name, onprem, vpngw, want string
	}{
		{"ikev1 refused", "ike-version: ikev1 # <- error", ok, "ikev1 (the provider's default) is not emulated: emu negotiates IKEv2 only"},
		{"version omitted", "psk: generate", ok, "the provider's default ike-version is ikev1"},
		{"unknown encryption", ok + "\nike-enc-alg: aes512 # <- error", ok, `ike-enc-alg "aes512" is not allowed by the provider: use one of aes, aes192, aes256, des, 3des`},
		{"unknown DH group", ok + "\nike-pfs: group19 # <- error", ok, "use one of group2, group1, group5, group14"},
		{"lifetime too long", ok + "\nike-lifetime: 86401 # <- error", ok, "must be a whole number from 0 to 86400"},
		{"psk with a space", ok + "\npsk: two words # <- error", ok, "psk must be printable ASCII without spaces"},
		{"identity neither IP nor FQDN", ok + "\nlocal-id: not_an@fqdn # <- error", ok, "must be an IP address or an FQDN"},
		{"unknown ESP encryption", ok + "\nipsec-enc-alg: aes-gcm # <- error", ok, `ipsec-enc-alg "aes-gcm" is not allowed by the provider: use one of aes, aes192, aes256, des, 3des`},
		{"PFS value", ok + "\nipsec-pfs: off # <- error", ok, "use one of group2, disabled, group1, group5, group14"},
		{"one end manual", ok, "", "one end is keyed by IKE and the other"},
		{"both initiate", ok + "\ninitiate: on", ok + "\ninitiate: on", "both ends say `initiate: on`"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := withIKE(t, tc.onprem, tc.vpngw)
			_, err := topology.Parse("lab.yaml", []byte(data), nodes.Default())
			if err == nil {
				t.Fatal("accepted")
			}
			first := firstError(t, err)
			if !strings.Contains(first.Msg, tc.want) {
				t.Fatalf("first error does not say %q:\n%v", tc.want, err)
			}
			if want := markedLine(data); want != 0 && first.Line != want {
				t.Errorf("error on line %d, want %d: %v", first.Line, want, first)
			}
			if first.Line == 0 {
				t.Errorf("error without a line: %v", first)
			}
		})
	}
}
