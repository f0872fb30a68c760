package checks_test

import (
	"context"
	"strings"
	"testing"

	"github.com/emu-lab/emu/internal/checks"
	"github.com/emu-lab/emu/internal/labtest"
)

func TestIKE_StaticScenario_NegotiatesThenTrafficIsEncrypted(t *testing.T) {
	l := labtest.DeployText(t, labtest.IKEKeyed(t, "", ""))
	lab := checks.Lab{Topology: l.Topology, Dir: l.Plan.LabDir}
	rs := checks.Run(context.Background(), lab, []checks.Check{checks.IKE, checks.Connectivity, checks.Encryption})
	requirePassed(t, rs)
	for _, r := range rs {
		t.Log(r.Check, r.Evidence)
	}
	for _, want := range []string{"phase 1 established (IKE:AES_CBC_128/PRF_HMAC_SHA1/HMAC_SHA1_96/MODP_1024)", "phase 2 established (ESP:AES_CBC_128/HMAC_SHA1_96/NO_EXT_SEQ, ESP,", "0.0.0.0/0 === 0.0.0.0/0"} {
		if !strings.Contains(rs[0].Evidence, want) {
			t.Errorf("ike evidence lacks %q: %s", want, rs[0].Evidence)
		}
	}
}

func TestIKE_WrongPSK_CheckFailsWithAuthenticationFailed(t *testing.T) {
	l := labtest.DeployText(t, labtest.IKEKeyed(t, "psk: the-on-prem-key", "psk: the-providers-key"))
	lab := checks.Lab{Topology: l.Topology, Dir: l.Plan.LabDir}
	rs := checks.Run(context.Background(), lab, []checks.Check{checks.IKE})
	for _, r := range rs {
		t.Log(r.Check, r.Evidence)
		if r.Passed || !strings.Contains(r.Evidence, "AUTHENTICATION_FAILED") {
			t.Errorf("%s: passed=%v, evidence %s", r.Check, r.Passed, r.Evidence)
		}
	}
}

func TestIKE_ForcedEncap_EncryptionCheckSeesESPInUDP(t *testing.T) {
	l := labtest.DeployText(t, labtest.IKEKeyed(t, "force-encap: on", ""))
	lab := checks.Lab{Topology: l.Topology, Dir: l.Plan.LabDir}
	// The path check decrypts ESP in UDP too, after the UDP header.
	rs := checks.Run(context.Background(), lab, []checks.Check{checks.IKE, checks.Connectivity, checks.Encryption, checks.Path})
	requirePassed(t, rs)
	if !strings.Contains(rs[0].Evidence, "ESP in UDP/4500") {
		t.Errorf("ike evidence: %s", rs[0].Evidence)
	}
	if enc := rs[len(rs)-2].Evidence; !strings.Contains(enc, "of the ESP in UDP/4500") {
		t.Errorf("encryption evidence does not count ESP in UDP: %s", enc)
	}
}
