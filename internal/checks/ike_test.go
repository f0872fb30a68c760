package checks_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emu-lab/emu/internal/agent"
	"github.com/emu-lab/emu/internal/checks"
	"github.com/emu-lab/emu/internal/fault"
	"github.com/emu-lab/emu/internal/ipsec/ike"
	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/probe"
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

// A broken tunnel carries nothing of IPsec, as when the private line or the
// peer fails: ESP in UDP stops, and so does IKE, so DPD declares the peer
// dead instead of the console showing the tunnel established.
func TestIKE_ForcedEncap_TunnelDown_StopsESPInUDPAndIKE_DPDTakesItDown(t *testing.T) {
	l := labtest.DeployText(t, labtest.IKEKeyed(t, "force-encap: on", "force-encap: on"))
	lab := checks.Lab{Topology: l.Topology, Dir: l.Plan.LabDir}
	requirePassed(t, checks.Run(context.Background(), lab, []checks.Check{checks.IKE}))
	if _, err := probe.Ping(l.NS("client"), ecsAddr, 2*time.Second); err != nil {
		t.Fatalf("before the fault: %v", err)
	}
	tun := l.Topology.Node("onprem").Tunnels[0]
	if err := fault.TunnelDown(l.NS("onprem"), tun.Name, tun.Local, tun.Remote); err != nil {
		t.Fatal(err)
	}
	if _, err := probe.Ping(l.NS("client"), ecsAddr, time.Second); err == nil {
		t.Fatal("ping crossed a broken ESP-in-UDP tunnel")
	}
	phase1 := func() ike.Status {
		st, err := agent.ReadState(filepath.Join(l.Plan.LabDir, "agents", "onprem.json"))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range st.IKE {
			if s.Name == tun.Name {
				return s
			}
		}
		t.Fatalf("onprem's agent reports no IKE state for %s", tun.Name)
		return ike.Status{}
	}
	deadline := time.Now().Add(15 * time.Second)
	for s := phase1(); s.Phase1 == ike.StateEstablished; s = phase1() {
		if time.Now().After(deadline) {
			t.Fatalf("IKE still established 15 s after the tunnel broke: %s", checks.DescribeIKE(s))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("after the fault: %s", checks.DescribeIKE(phase1()))
	if err := fault.TunnelUp(l.NS("onprem"), tun.Name); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(15 * time.Second) // the initiator retries every 2 s
	for s := phase1(); s.Phase1 != ike.StateEstablished || s.Phase2 != ike.StateEstablished; s = phase1() {
		if time.Now().After(deadline) {
			t.Fatalf("IKE not established again 15 s after the repair: %s", checks.DescribeIKE(s))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("after the repair: %s", checks.DescribeIKE(phase1()))
	if !reachable(l, 5*time.Second) {
		t.Fatal("no traffic 5 s after IKE was established again")
	}
}
