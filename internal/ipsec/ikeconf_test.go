package ipsec

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/emu-lab/emu/internal/ipsec/esp"
	"github.com/emu-lab/emu/internal/topology"
)

// Every encryption and authentication the provider's IpsecConfig allows
// (SPEC §10) must key a CHILD SA of emu's ESP engine, and every IkeConfig
// value an IKE SA: the topology accepts them all, so none may fail later.
func TestIKEConfig_EveryProviderAlgorithm_MapsToAnEngineTransform(t *testing.T) {
	seen := map[string]bool{}
	for _, enc := range topology.EncAlgs {
		for _, auth := range topology.AuthAlgs {
			tun := &topology.Tunnel{Name: "vpn1", Local: netip.MustParseAddr("169.254.10.1"), Remote: netip.MustParseAddr("169.254.10.2"),
				IKE: &topology.IKE{Version: "ikev2", IKEEncAlg: enc, IKEAuthAlg: auth, IKEPFS: "group2", PSK: "s3cret",
					IPsecEncAlg: enc, IPsecAuthAlg: auth, IPsecPFS: topology.PFSDisabled}}
			c, err := (&Secrets{}).ikeConfig(tun)
			if err != nil {
				t.Fatalf("%s-%s: %v", enc, auth, err)
			}
			alg, err := c.ESP.ESPAlgorithm()
			if err != nil {
				t.Fatalf("ESP %s-%s: %v", enc, auth, err)
			}
			if want := enc + "-cbc-" + auth; alg.String() != want {
				t.Errorf("ESP %s-%s is the engine's %v, want %s", enc, auth, alg, want)
			}
			if c.IKE.Encr == 0 || c.IKE.Integ == 0 || c.IKE.PRF == 0 || c.IKE.DH != 2 {
				t.Errorf("IKE %s-%s-group2 resolved to %+v", enc, auth, c.IKE)
			}
			seen[alg.String()] = true
		}
	}
	if len(seen) != len(topology.EncAlgs)*len(topology.AuthAlgs) {
		t.Errorf("%d distinct ESP transforms for %d provider pairs", len(seen), len(topology.EncAlgs)*len(topology.AuthAlgs))
	}
}

// A manually keyed tunnel may name any transform of the engine, and only
// those: topology.Ciphers and esp.Algorithms are the same set.
func TestCiphers_TopologyNamesAreTheEngineAlgorithms(t *testing.T) {
	var names []string
	for _, a := range esp.Algorithms() {
		names = append(names, a.String())
	}
	slices.Sort(names)
	got := slices.Sorted(slices.Values(topology.Ciphers))
	if !slices.Equal(got, names) {
		t.Errorf("topology.Ciphers %v\nesp.Algorithms %v", got, names)
	}
	if topology.Ciphers[0] != esp.Algorithm(0).String() {
		t.Errorf("default cipher %s, engine default %v", topology.Ciphers[0], esp.Algorithm(0))
	}
}
