package checks_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/emu-lab/emu/internal/agent"
	"github.com/emu-lab/emu/internal/checks"
	"github.com/emu-lab/emu/internal/checks/checktest"
	"github.com/emu-lab/emu/internal/fault"
	"github.com/emu-lab/emu/internal/ipsec/ike"
	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/probe"
)

// onUserspace puts one node's tunnels on the userspace dataplane.
func onUserspace(text, kind string) string {
	return strings.Replace(text, "      kind: "+kind+"\n", "      kind: "+kind+"\n      ipsec-dataplane: userspace\n", 1)
}

// requireIKEDataplane fails unless both gateways run the lab's dataplane.
func requireIKEDataplane(t *testing.T, l *labtest.Lab) {
	t.Helper()
	requireDataplane(t, l, "onprem", "ipsec0", labtest.Dataplane())
	requireDataplane(t, l, "vpngw", "ipsec0", labtest.Dataplane())
}

func TestIKE_StaticScenario_NegotiatesThenTrafficIsEncrypted(t *testing.T) {
	l := labtest.DeployText(t, labtest.IKEKeyed(t, "", ""))
	requireIKEDataplane(t, l)
	lab := checks.Lab{Topology: l.Topology, Dir: l.Plan.LabDir}
	rs := checktest.Run(t, lab, checks.IKE, checks.Connectivity, checks.Encryption)
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
	rs := checktest.Run(t, lab, checks.IKE)
	for _, r := range rs {
		t.Log(r.Check, r.Evidence)
		if r.Passed || !strings.Contains(r.Evidence, "AUTHENTICATION_FAILED") {
			t.Errorf("%s: passed=%v, evidence %s", r.Check, r.Passed, r.Evidence)
		}
	}
}

func TestIKE_ForcedEncap_EncryptionCheckSeesESPInUDP(t *testing.T) {
	l := labtest.DeployText(t, labtest.IKEKeyed(t, "force-encap: on", ""))
	requireIKEDataplane(t, l)
	lab := checks.Lab{Topology: l.Topology, Dir: l.Plan.LabDir}
	// The path check decrypts ESP in UDP too, after the UDP header.
	rs := checktest.Run(t, lab, checks.IKE, checks.Connectivity, checks.Encryption, checks.Path)
	requirePassed(t, rs)
	if !strings.Contains(rs[0].Evidence, "ESP in UDP/4500") {
		t.Errorf("ike evidence: %s", rs[0].Evidence)
	}
	if enc := rs[len(rs)-2].Evidence; !strings.Contains(enc, "of the ESP in UDP/4500") {
		t.Errorf("encryption evidence does not count ESP in UDP: %s", enc)
	}
}

// TestIKE_ShortLifetime_RekeysUnderTraffic_NoEchoLost_OldXFRMStatesDeleted:
// with a 4 s IPsec lifetime the CHILD SA is rekeyed every 3.6 s while
// client pings the ECS every 20 ms for 12 s: no echo may be lost. On the
// kernel dataplane (the VM) each rekey must also put a new pair of XFRM
// states in and take the old pair out.
func TestIKE_ShortLifetime_RekeysUnderTraffic_NoEchoLost_OldXFRMStatesDeleted(t *testing.T) {
	onXFRM := labtest.Dataplane() == plan.Kernel
	l := labtest.DeployText(t, labtest.IKEKeyed(t, "ipsec-lifetime: 4", "ipsec-lifetime: 4"))
	requireIKEDataplane(t, l)
	lab := checks.Lab{Topology: l.Topology, Dir: l.Plan.LabDir}
	requirePassed(t, checktest.Run(t, lab, checks.IKE))

	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Second)
	defer cancel()
	var stream *probe.StreamResult
	var streamErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		stream, streamErr = probe.Stream(ctx, l.NS("client"), ecsAddr, 20*time.Millisecond)
	}()
	gateways := []string{"onprem", "vpngw"}
	seen := map[string]map[uint32]bool{}
	most := map[string]int{}
	for _, gw := range gateways {
		seen[gw] = map[uint32]bool{}
	}
	for ctx.Err() == nil && onXFRM {
		for _, gw := range gateways {
			states := espStates(t, l, gw)
			most[gw] = max(most[gw], len(states))
			for _, s := range states {
				seen[gw][uint32(s.Spi)] = true
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	<-done // the stream ran 12 s
	if streamErr != nil {
		t.Fatal(streamErr)
	}
	t.Logf("echoes: %d sent, %d answered, longest outage %v", stream.Sent, stream.Received, stream.Outage)
	if stream.Received != stream.Sent {
		t.Errorf("%d of %d echoes lost across the rekeys (longest outage %v)", stream.Sent-stream.Received, stream.Sent, stream.Outage)
	}
	for _, gw := range gateways {
		// What the endpoints counted, whichever dataplane they keyed.
		st, err := agent.ReadState(filepath.Join(l.Plan.LabDir, "agents", gw+".json"))
		if err != nil {
			t.Fatal(err)
		}
		if len(st.IKE) != 1 || st.IKE[0].ChildRekeys < 2 {
			t.Errorf("%s: IKE status %+v, want at least 2 CHILD rekeys in 12 s", gw, st.IKE)
		} else {
			t.Logf("%s: %d CHILD rekeys", gw, st.IKE[0].ChildRekeys)
		}
		if !onXFRM {
			continue
		}
		left := espStates(t, l, gw)
		t.Logf("%s: %d SPIs seen in XFRM, at most %d states at once, %d left", gw, len(seen[gw]), most[gw], len(left))
		// The first pair and at least two rekeys.
		if len(seen[gw]) < 6 {
			t.Errorf("%s: %d SPIs in XFRM over 12 s of 3.6 s rekeys, want at least 6 (three pairs)", gw, len(seen[gw]))
		}
		if len(left) != 2 {
			t.Errorf("%s: %d ESP states after the rekeys, want the newest pair only: %v", gw, len(left), left)
		}
	}
}

// espStates lists the ESP states in XFRM of a node.
func espStates(t *testing.T, l *labtest.Lab, node string) []netlink.XfrmState {
	t.Helper()
	var out []netlink.XfrmState
	err := netnsx.Do(l.NS(node), func() error {
		states, err := netlink.XfrmStateList(netlink.FAMILY_ALL)
		for _, s := range states {
			if s.Proto == netlink.XFRM_PROTO_ESP {
				out = append(out, s)
			}
		}
		return err
	})
	if err != nil {
		t.Fatalf("%s: XFRM states: %v", node, err)
	}
	return out
}

// TestIKE_KernelOnOneGateway_UserspaceOnTheOther_NegotiateAndCarryTraffic:
// the userspace engine on the on-prem gateway, XFRM on the VPN gateway,
// keyed by one IKEv2 negotiation, with plain ESP, with ESP in UDP and with
// HMAC-SHA-256.
func TestIKE_KernelOnOneGateway_UserspaceOnTheOther_NegotiateAndCarryTraffic(t *testing.T) {
	if labtest.Dataplane() != plan.Kernel {
		t.Skip("needs a kernel with ESP: runs inside the VM (vmtest/suite.sh)")
	}
	for _, tc := range []struct {
		name, onprem, vpngw, esp string
		encap                    bool
	}{
		{"ESP", "", "", "ESP:AES_CBC_128/HMAC_SHA1_96/", false},
		{"ESPInUDP", "force-encap: on", "", "ESP:AES_CBC_128/HMAC_SHA1_96/", true},
		// HMAC-SHA-256 truncated to 128 bits by both engines (RFC 4868).
		{"SHA256", "ipsec-auth-alg: sha256", "ipsec-auth-alg: sha256", "ESP:AES_CBC_128/HMAC_SHA2_256_128/", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := labtest.DeployText(t, onUserspace(labtest.IKEKeyed(t, tc.onprem, tc.vpngw), "onprem-gateway"))
			requireDataplane(t, l, "onprem", "ipsec0", plan.Userspace)
			requireDataplane(t, l, "vpngw", "ipsec0", plan.Kernel)
			lab := checks.Lab{Topology: l.Topology, Dir: l.Plan.LabDir}
			rs := checktest.Run(t, lab, checks.IKE, checks.Connectivity, checks.Encryption)
			requirePassed(t, rs)
			for _, r := range rs {
				t.Log(r.Check, r.Evidence)
			}
			if !strings.Contains(rs[0].Evidence, tc.esp) {
				t.Errorf("ike evidence lacks %s: %s", tc.esp, rs[0].Evidence)
			}
			if enc := rs[len(rs)-1].Evidence; strings.Contains(enc, "of the ESP in UDP/4500") != tc.encap {
				t.Errorf("encryption evidence, ESP in UDP expected %v: %s", tc.encap, enc)
			}
		})
	}
}

// A broken tunnel carries nothing of IPsec, as when the private line or the
// peer fails: ESP in UDP stops, and so does IKE, so DPD declares the peer
// dead instead of the console showing the tunnel established.
func TestIKE_ForcedEncap_TunnelDown_StopsESPInUDPAndIKE_DPDTakesItDown(t *testing.T) {
	l := labtest.DeployText(t, labtest.IKEKeyed(t, "force-encap: on", "force-encap: on"))
	lab := checks.Lab{Topology: l.Topology, Dir: l.Plan.LabDir}
	requirePassed(t, checktest.Run(t, lab, checks.IKE))
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
