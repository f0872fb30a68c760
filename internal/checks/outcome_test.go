package checks

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emu-lab/emu/internal/agent"
	"github.com/emu-lab/emu/internal/capture"
	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/ipsec/ike"
	"github.com/emu-lab/emu/internal/ipsec/userspace"
	"github.com/emu-lab/emu/internal/probe"
	"github.com/emu-lab/emu/internal/topology"
)

func TestEncryption_CaptureLostFrames_InconclusiveNeverPass(t *testing.T) {
	r := Result{Check: "encryption", Evidence: "40 frames, 40 ESP"}
	if lost(&r, nil) || r.Inconclusive {
		t.Fatalf("a complete capture changed the result: %+v", r)
	}
	r.Passed = true // what the frames alone would say
	if !lost(&r, &capture.LostFramesError{Dropped: 7, Where: []string{"emu-x-vbr:eth1 (7)"}}) {
		t.Fatal("lost frames not reported")
	}
	if r.Passed || r.Outcome() != OutcomeInconclusive {
		t.Fatalf("capture lost frames, result %q, want inconclusive", r.Outcome())
	}
	for _, want := range []string{"lost 7 frames", "emu-x-vbr:eth1", "40 ESP"} {
		if !strings.Contains(r.Evidence, want) {
			t.Errorf("evidence lacks %q: %s", want, r.Evidence)
		}
	}
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), `"result":"inconclusive"`) || !strings.Contains(string(js), `"passed":false`) {
		t.Errorf("JSON does not say inconclusive: %s", js)
	}
	if p, f, i := Count([]Result{r, {Passed: true}, {}}); p != 1 || f != 1 || i != 1 {
		t.Errorf("Count = %d passed, %d failed, %d inconclusive; want 1 each", p, f, i)
	}
}

func TestFailover_OtherConnectionCarriesTraffic_ZeroOutagePasses(t *testing.T) {
	zero := &probe.StreamResult{Interval: 10 * time.Millisecond, Sent: 1000, Received: 1000}
	if ok, ev := judgeAutomatic(zero, true); !ok {
		t.Errorf("ECMP with a second connection, 0 lost: judged FAIL: %s", ev)
	}
	if ok, ev := judgeAutomatic(zero, false); ok {
		t.Errorf("the only connection broke and nothing was lost: judged pass: %s", ev)
	}
	outage := &probe.StreamResult{Interval: 10 * time.Millisecond, Sent: 1000, Received: 720, Outage: 2800 * time.Millisecond}
	if ok, ev := judgeAutomatic(outage, false); !ok {
		t.Errorf("method 2's 2.8 s outage judged FAIL: %s", ev)
	}
	stuck := &probe.StreamResult{Interval: 10 * time.Millisecond, Sent: 1000, Received: 100, Outage: 9 * time.Second, Trailing: 9 * time.Second}
	for _, other := range []bool{true, false} {
		if ok, ev := judgeAutomatic(stuck, other); ok {
			t.Errorf("traffic never resumed (other connection %v): judged pass: %s", other, ev)
		}
	}
}

func TestFailover_OtherConnection_BrokenOneStillOnTheWire_FaultDidNotBite(t *testing.T) {
	tun := &topology.Tunnel{Name: "to-vpc-1", Local: netip.MustParseAddr("10.0.0.1")}
	l := Lab{Conns: []ipsec.Conn{
		{Name: "to-vpc-1", Local: tun.Local, Out: ipsec.SA{SPI: 0x11}, In: ipsec.SA{SPI: 0x12}},
		{Name: "to-vpc-2", Local: tun.Local, Out: ipsec.SA{SPI: 0x21}, In: ipsec.SA{SPI: 0x22}},
		{Name: "to-vpc-1", Local: netip.MustParseAddr("172.16.1.10"), Out: ipsec.SA{SPI: 0x12}, In: ipsec.SA{SPI: 0x11}},
	}}
	sentSPIs := func(l Lab, tun *topology.Tunnel, v *verdict) []string {
		s := connSPIs{}
		s.learn(l, "onprem", tun)
		return s.seen(v)
	}
	if got := sentSPIs(l, tun, &verdict{spis: map[uint32]bool{0x21: true, 0x22: true}}); len(got) != 0 {
		t.Errorf("only the other connection on the wire, yet %v reported", got)
	}
	if got := sentSPIs(l, tun, &verdict{spis: map[uint32]bool{0x21: true, 0x11: true}}); len(got) != 1 || got[0] != "0x00000011" {
		t.Errorf("the faulted end still sends on the broken connection, reported %v", got)
	}
	// The peer keeps sending into the dead connection (BGP reconnects);
	// its packets cross the private path and are dropped at the faulted
	// end: not a sign that the fault failed.
	if got := sentSPIs(l, tun, &verdict{spis: map[uint32]bool{0x21: true, 0x12: true}}); len(got) != 0 {
		t.Errorf("the peer's packets into the dead connection taken for a fault that did not bite: %v", got)
	}
	// Nor, after the repair, a sign that it took: only the repaired end's
	// own outbound SA on the wire is.
	if got := sentSPIs(l, tun, &verdict{spis: map[uint32]bool{0x12: true, 0x21: true}}); len(got) != 0 {
		t.Errorf("the peer's packets into the connection taken for the repaired end sending again: %v", got)
	}
}

// IKE-keyed connections have no SPI in the lab's keys (0: negotiated at
// runtime): the connection's SPIs come from the agent's live SAs, and
// every SA learnt during the window counts, also after a rekey replaced it.
func TestFailover_IKEKeyed_SPIsFromTheAgentsLiveSAs_AcrossRekeys(t *testing.T) {
	tun := &topology.Tunnel{Name: "to-vpc-1", Local: netip.MustParseAddr("10.0.0.1")}
	l := Lab{Conns: []ipsec.Conn{
		{Name: "to-vpc-1", Local: tun.Local},
		{Name: "to-vpc-2", Local: tun.Local},
	}}
	s := connSPIs{}
	s.learn(l, "onprem", tun) // no Dir: the keys only, all zero
	if len(s) != 0 {
		t.Fatalf("SPI 0 of an IKE-keyed connection taken for an SA: %v", s)
	}
	if got := s.seen(&verdict{spis: map[uint32]bool{0: true, 0xc1: true}}); len(got) != 0 {
		t.Errorf("nothing learnt, yet %v reported", got)
	}
	st := &agent.State{
		IKE: []ike.Status{
			{Name: "to-vpc-1", OutSPI: 0xc1, InSPI: 0xd1},
			{Name: "to-vpc-2", OutSPI: 0xc2, InSPI: 0xd2},
		},
		Tunnels: []userspace.TunnelStats{{Name: "to-vpc-1", OutSPI: 0xc1, InSPI: 0xd1}},
	}
	s.addLive(st, "to-vpc-1", false)
	// A rekey: the new CHILD SA replaces the old one in the state.
	st.IKE[0].OutSPI, st.IKE[0].InSPI = 0xe1, 0xf1
	st.Tunnels[0].OutSPI, st.Tunnels[0].InSPI = 0xe1, 0xf1
	s.addLive(st, "to-vpc-1", false)
	wire := &verdict{spis: map[uint32]bool{0xc1: true, 0xe1: true, 0xc2: true, 0xd1: true}}
	if got := strings.Join(s.seen(wire), " "); got != "0x000000c1 0x000000e1" {
		t.Errorf("seen = %q, want both SAs of to-vpc-1's local end (before and after the rekey), not to-vpc-2's nor the peer's", got)
	}
	// Only the other connection (and the peer into this one) on the wire.
	if got := s.seen(&verdict{spis: map[uint32]bool{0xc2: true, 0xf1: true}}); len(got) != 0 {
		t.Errorf("the broken connection's end reported sending: %v", got)
	}
	// The peer of an end emu does not run: its inbound SAs are that end's outbound.
	p := connSPIs{}
	p.addLive(st, "to-vpc-1", true)
	if got := strings.Join(p.seen(&verdict{spis: map[uint32]bool{0xf1: true, 0xe1: true}}), " "); got != "0x000000f1" {
		t.Errorf("external end: seen = %q, want the peer's inbound SA 0x000000f1", got)
	}
}

func TestECMP_CaptureLostFrames_FailedSpreadIsInconclusive_PassStands(t *testing.T) {
	rs := []Result{{Check: "ecmp a", Passed: true}, {Check: "ecmp b", Evidence: "64 UDP flows out of b, by connection: t1 0, t2 40"}}
	got := spreadUnsureIfLost(rs, &capture.LostFramesError{Dropped: 3, Where: []string{"emu-x-vbr:eth1 (3)"}})
	if got[0].Outcome() != OutcomePass {
		t.Errorf("a counted spread must stay a pass, got %s", got[0].Outcome())
	}
	if got[1].Outcome() != OutcomeInconclusive || !strings.Contains(got[1].Evidence, "lost 3 frames") {
		t.Errorf("a failed spread over a lossy capture must be inconclusive and say so, got %s: %s", got[1].Outcome(), got[1].Evidence)
	}
	if got := spreadUnsureIfLost([]Result{{Check: "ecmp c"}}, nil); got[0].Outcome() != OutcomeFail {
		t.Errorf("without lost frames a failed spread is a failure, got %s", got[0].Outcome())
	}
}
