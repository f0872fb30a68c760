package ike

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"
)

// childExchange is what a test saw of one CREATE_CHILD_SA exchange
// rekeying a CHILD SA: its nonces and the inbound SPIs its initiator and
// responder chose.
type childExchange struct {
	ni, nr         []byte
	spiI, spiR     uint32
	request, reply bool // seen
}

// childExchanges records the CREATE_CHILD_SA exchanges between two sides
// as each receives them (decrypted with the receiver's IKE SA), by the
// side that initiated them.
type childExchanges struct {
	mu sync.Mutex
	by map[*side]*childExchange
}

// watch makes s report the CREATE_CHILD_SA messages it receives from peer.
// With earlyDelete, when s is about to read the answer to its rekey and
// wins the collision, the peer's Delete of its redundant SA comes first,
// as when the answer was lost and retransmitted.
func (x *childExchanges) watch(s, peer *side, earlyDelete bool) {
	done := make(chan struct{})
	s.e.do(func() {
		s.e.trace = func(b []byte) {
			h, ps, err := Parse(b)
			if err != nil || h.Exchange != CreateChildSA {
				return
			}
			spi := h.SPIi
			if h.Flags&FlagInitiator != 0 {
				spi = h.SPIr
			}
			sa := s.e.sas[spi]
			if sa == nil {
				return
			}
			m := collect(sa.decrypt(b, ps))
			if m.nonce == nil || m.sa == nil || len(m.sa.Proposals) == 0 || len(m.sa.Proposals[0].SPI) != 4 {
				return
			}
			x.mu.Lock()
			defer x.mu.Unlock()
			initiator := peer // a request received comes from the exchange's initiator
			if h.IsResponse() {
				initiator = s
			}
			ex := x.by[initiator]
			if ex == nil {
				ex = &childExchange{}
				x.by[initiator] = ex
			}
			spiOf := binary.BigEndian.Uint32(m.sa.Proposals[0].SPI)
			if h.IsResponse() {
				ex.nr, ex.spiR, ex.reply = m.nonce.Data, spiOf, true
			} else {
				ex.ni, ex.spiI, ex.request = m.nonce.Data, spiOf, true
			}
			theirs := sa.childCollision
			if earlyDelete && h.IsResponse() && theirs != nil &&
				bytes.Compare(lowerNonce(ex.ni, ex.nr), lowerNonce(theirs.ni, theirs.nr)) > 0 {
				sa.handleInformational([]Payload{deleteChild(theirs.sa.OutSPI)})
			}
		}
		close(done)
	})
	<-done
}

func (x *childExchanges) get(s *side) childExchange {
	x.mu.Lock()
	defer x.mu.Unlock()
	if ex := x.by[s]; ex != nil {
		return *ex
	}
	return childExchange{}
}

// childView is one end's CHILD SA state, read on its loop.
type childView struct {
	in, out  uint32 // the CHILD SA's SPIs, 0 without one
	retired  int
	busy     bool // a request outstanding or queued, or a collision unresolved
	up       int  // CHILD SAs in the dataplane (the handler's)
	upIn     uint32
	rekeys   int
	phase2   string
	ikeSAs   int
	childIKE bool // the CHILD SA is on the connection's IKE SA
}

func lookChild(s *side) childView {
	r := make(chan childView)
	s.e.do(func() {
		var v childView
		v.ikeSAs = len(s.e.sas)
		if sa := s.e.conns[0].sa; sa != nil {
			if sa.child != nil {
				v.in, v.out, v.childIKE = sa.child.sa.InSPI, sa.child.sa.OutSPI, true
			}
			v.retired = len(sa.retired)
			v.busy = sa.req != nil || len(sa.queue) > 0 || sa.rekeyingChild != nil || sa.childCollision != nil
		}
		r <- v
	})
	v := <-r
	up, _ := s.rec.snapshot()
	v.up = len(up)
	for spi := range up {
		v.upIn = spi
	}
	st := s.e.Status()[0]
	v.rekeys, v.phase2 = st.ChildRekeys, st.Phase2
	return v
}

// settled: both ends hold one and the same CHILD SA, in their state and
// in their dataplane, with no rekey or Delete exchange left to finish.
func settled(a, b childView) bool {
	return a.in != 0 && a.in == b.out && a.out == b.in && a.retired == 0 && b.retired == 0 &&
		!a.busy && !b.busy && a.up == 1 && b.up == 1 && a.upIn == a.in && b.upIn == b.in
}

// The CHILD SA collision of RFC 7296 §2.8.1: both ends rekey the same
// CHILD SA at once. Each answers the other's request as usual, then the
// new SA whose exchange carried the lowest of the four nonces is deleted
// by the end that initiated it and the other end deletes the old SA;
// before, each end deleted the SA it had answered as if it were the old
// one, and the CHILD SA went down on both. Both ends must end with the
// other new SA, the same on both, counted as one rekey, and their
// dataplanes sending on it without ever having been told to delete the
// pair they sent on. "peer-delete-first": the loser's Delete of its SA
// reaches the winner before the answer to the winner's own rekey.
func TestIKEv2_SimultaneousChildRekey_BothEndsKeepTheHigherNonceSA(t *testing.T) {
	for _, early := range []bool{false, true} {
		name := "in-order"
		if early {
			name = "peer-delete-first"
		}
		for try := range 4 { // either end's SA may survive: run a few
			t.Run(fmt.Sprintf("%s/%d", name, try), func(t *testing.T) { simultaneousChildRekey(t, early) })
		}
	}
}

func simultaneousChildRekey(t *testing.T, earlyDelete bool) {
	a, b := pair(t, nil)
	waitStatus(t, a, "established", established)
	waitStatus(t, b, "established", established)
	orig := lookChild(a)
	x := &childExchanges{by: map[*side]*childExchange{}}
	x.watch(a, b, earlyDelete)
	x.watch(b, a, earlyDelete)
	// Both loops held, then each sends its rekey before it can read the
	// peer's: the collision is certain.
	start := make(chan struct{})
	for _, s := range []*side{a, b} {
		s.e.do(func() { <-start; s.e.conns[0].sa.rekeyChild() })
	}
	close(start)
	var va, vb childView
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		va, vb = lookChild(a), lookChild(b)
		if settled(va, vb) && va.in != orig.in {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a simultaneous CHILD SA rekey: a %+v, b %+v; want one and the same new CHILD SA", va, vb)
		}
	}
	ea, eb := x.get(a), x.get(b)
	if !ea.request || !ea.reply || !eb.request || !eb.reply {
		t.Fatalf("not both exchanges seen whole: a's %+v, b's %+v", ea, eb)
	}
	// The survivor is the SA whose exchange's lower nonce is the higher
	// one (RFC 7296 §2.8.1); in a's view, its inbound SPI is the one a
	// chose in that exchange.
	wantIn, wantOut, winner := ea.spiI, ea.spiR, "a's"
	if bytes.Compare(lowerNonce(ea.ni, ea.nr), lowerNonce(eb.ni, eb.nr)) < 0 {
		wantIn, wantOut, winner = eb.spiR, eb.spiI, "b's"
	}
	t.Logf("%s rekey survives: a in 0x%08x out 0x%08x", winner, va.in, va.out)
	if va.in != wantIn || va.out != wantOut {
		t.Fatalf("a kept in 0x%08x out 0x%08x; the SA §2.8.1 keeps is %s, in 0x%08x out 0x%08x (a's exchange %x/%x, b's %x/%x)",
			va.in, va.out, winner, wantIn, wantOut, ea.ni[:4], ea.nr[:4], eb.ni[:4], eb.nr[:4])
	}
	for _, s := range []struct {
		name string
		v    childView
		rec  *recorder
	}{{"a", va, a.rec}, {"b", vb, b.rec}} {
		if s.v.ikeSAs != 1 || !s.v.childIKE || s.v.phase2 != StateEstablished || s.v.rekeys != 1 {
			t.Errorf("%s: %+v, want one IKE SA carrying the CHILD SA, established after one rekey", s.name, s.v)
		}
		if newest, downs := s.rec.sending(); newest != s.v.in || downs != 0 {
			t.Errorf("%s: the dataplane sends on the pair in 0x%08x and was told %d times to delete the pair it sent on; want the survivor 0x%08x, never",
				s.name, newest, downs, s.v.in)
		}
	}
	requireTraffic(t, a, b)
	// Nothing is left to take the survivor down: a request from each end
	// is answered and the CHILD SA stays.
	for _, s := range []*side{a, b} {
		answered := make(chan struct{})
		s.e.do(func() { s.e.conns[0].sa.sendInformational(nil, func(Header, []Payload) { close(answered) }) })
		select {
		case <-answered:
		case <-time.After(3 * time.Second):
			t.Fatalf("%s: a liveness check on the IKE SA went unanswered", s.cfg.Local)
		}
	}
	if va2, vb2 := lookChild(a), lookChild(b); !settled(va2, vb2) || va2.in != va.in || vb2.in != vb.in {
		t.Fatalf("the CHILD SA changed after the collision settled: a %+v -> %+v, b %+v -> %+v", va, va2, vb, vb2)
	}
}

// childRekeyRequest is the payloads of a CREATE_CHILD_SA request from the
// end configured with cfg rekeying its CHILD SA with inbound SPI spi.
func childRekeyRequest(cfg Config, spi uint32) []Payload {
	g, _ := modpGroup(cfg.ESP.DH)
	k, _ := g.generate()
	return []Payload{
		&Notify{Protocol: ProtoESP, SPI: binary.BigEndian.AppendUint32(nil, spi), Kind: RekeySA},
		&SA{Proposals: []Proposal{cfg.ESP.proposal(ProtoESP, binary.BigEndian.AppendUint32(nil, randSPI32()), true)}},
		&Nonce{Data: nonce()},
		&KE{Group: cfg.ESP.DH, Data: k.public},
		&TS{Selectors: selectors(cfg.LocalTS)},
		&TS{Responder: true, Selectors: selectors(cfg.RemoteTS)},
	}
}

// The other order of a collision: the peer's rekey request reaches us
// after our own rekey of that CHILD SA completed (its first copy lost),
// while our Delete of the old SA is under way. It is refused with
// TEMPORARY_FAILURE (RFC 7296 §2.25.1), so the peer keeps ours; once the
// old SA is gone, with CHILD_SA_NOT_FOUND. Before, either request made a
// new CHILD SA that replaced ours on this end only.
func TestIKEv2_ChildRekeyRequestOnReplacedSA_TemporaryFailureThenNotFound(t *testing.T) {
	a, b := pair(t, nil)
	waitStatus(t, a, "established", established)
	waitStatus(t, b, "established", established)
	old := lookChild(a)
	// b's loop is held once it answered a's rekey: a's Delete of the old
	// SA stays unanswered.
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free)
	a.e.do(func() {
		held := false
		a.e.trace = func(m []byte) {
			if h, _, err := Parse(m); err == nil && h.Exchange == CreateChildSA && h.IsResponse() && !held {
				held = true
				b.e.do(func() { <-release }) // queued before a handles the answer and sends its Delete
			}
		}
		a.e.conns[0].sa.rekeyChild()
	})
	var v childView
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if v = lookChild(a); v.in != old.in && v.retired == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a's rekey did not complete with the old SA's Delete outstanding: %+v", v)
		}
	}
	ask := func() []Payload {
		r := make(chan []Payload)
		a.e.do(func() { r <- a.e.conns[0].sa.handleCreateChild(childRekeyRequest(b.cfg, old.out)) })
		return <-r
	}
	got := ask()
	if len(got) != 1 || got[0].(*Notify).Kind != TemporaryFailure {
		t.Fatalf("a rekey of the replaced CHILD SA answered %#v, want TEMPORARY_FAILURE", got)
	}
	if after := lookChild(a); after.in != v.in || after.up != v.up || after.rekeys != v.rekeys {
		t.Fatalf("the refused request changed the CHILD SA: %+v -> %+v", v, after)
	}
	free()
	var vb childView
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if v, vb = lookChild(a), lookChild(b); settled(v, vb) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the rekey never settled: a %+v, b %+v", v, vb)
		}
	}
	got = ask()
	if n, ok := got[0].(*Notify); len(got) != 1 || !ok || n.Kind != ChildSANotFound || binary.BigEndian.Uint32(n.SPI) != old.out {
		t.Fatalf("a rekey of the deleted CHILD SA answered %#v, want CHILD_SA_NOT_FOUND for 0x%08x", got, old.out)
	}
	if after := lookChild(a); after.in != v.in || after.up != 1 {
		t.Fatalf("the refused request changed the CHILD SA: %+v -> %+v", v, after)
	}
	requireTraffic(t, a, b)
}
