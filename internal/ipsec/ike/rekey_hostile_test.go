package ike

import (
	"encoding/binary"
	"testing"
	"time"
)

// Hostile inputs against the RFC 7296 §2.8.1 CHILD SA collision handling:
// what a peer controls (its requests, their order, its nonces) must never
// leave an SA in the dataplane that nothing will remove, nor make an end
// send on an SA its peer deleted.

// rekeyRequestWithNonce is childRekeyRequest with the nonce nonceData.
func rekeyRequestWithNonce(cfg Config, spi uint32, nonceData []byte) []Payload {
	ps := childRekeyRequest(cfg, spi)
	for i, p := range ps {
		if _, ok := p.(*Nonce); ok {
			ps[i] = &Nonce{Data: nonceData}
		}
	}
	return ps
}

// A peer answers our rekey of the CHILD SA with a rekey of its own (a
// collision), then, before our rekey is answered, rekeys the CHILD SA its
// own request just made. Its first request carries the lowest possible
// nonce, so our rekey wins the collision. Every CHILD SA the peer made must
// then be gone from the dataplane once the peer deletes it, and a's
// retired list must empty: nothing may stay installed that no Delete can
// remove.
func TestHostilePeer_CollisionThenPeerRekeysItsNewSA_NothingLeftInDataplane(t *testing.T) {
	a, b := pair(t, nil)
	waitStatus(t, a, "established", established)
	waitStatus(t, b, "established", established)
	orig := lookChild(a)
	var theirs1Out, theirs2Out uint32
	var answers [][]Payload
	done := make(chan struct{})
	a.e.do(func() {
		sa := a.e.conns[0].sa
		sa.rekeyChild() // ours: b answers it once a's loop is free
		// The peer's rekey of the same CHILD SA, with the lowest nonce.
		answers = append(answers, sa.handleCreateChild(rekeyRequestWithNonce(b.cfg, orig.out, make([]byte, 16))))
		theirs1Out = sa.child.sa.OutSPI
		// The peer rekeys the SA its first request made.
		answers = append(answers, sa.handleCreateChild(childRekeyRequest(b.cfg, theirs1Out)))
		theirs2Out = sa.child.sa.OutSPI
		close(done)
	})
	<-done
	for i, ans := range answers {
		if n, ok := ans[0].(*Notify); ok {
			t.Logf("peer request %d refused with %v", i+1, n.Kind)
		}
	}
	// Let our rekey's answer and our Delete of the old SA go through.
	var va childView
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if va = lookChild(a); !va.busy {
			break
		}
	}
	t.Logf("a after the answer: %+v (theirs1 out 0x%08x, theirs2 out 0x%08x)", va, theirs1Out, theirs2Out)
	// The peer now deletes both SAs it made (each Delete names the SPI the
	// peer receives on: a's outbound SPI).
	done2 := make(chan struct{})
	a.e.do(func() {
		sa := a.e.conns[0].sa
		if theirs1Out != theirs2Out && sa.child != nil && sa.child.sa.OutSPI != theirs2Out {
			sa.handleInformational([]Payload{deleteChild(theirs2Out)})
		}
		if sa.child != nil && sa.child.sa.OutSPI != theirs1Out {
			sa.handleInformational([]Payload{deleteChild(theirs1Out)})
		}
		close(done2)
	})
	<-done2
	va = lookChild(a)
	up, _ := a.rec.snapshot()
	if len(up) != 1 || va.retired != 0 {
		var spis []uint32
		for in := range up {
			spis = append(spis, in)
		}
		t.Fatalf("after the peer deleted the SAs it made: a's dataplane holds %d CHILD SAs (inbound SPIs %x), %d retired; want only the CHILD SA 0x%08x, none retired", len(up), spis, va.retired, va.in)
	}
}

// A collision our rekey wins (the peer's request carries the lowest nonce),
// during which the peer takes the CHILD SA down: its Delete names both new
// SAs (its own, and ours, which it has answered) and reaches us before its
// answer to our rekey (the answer was lost and is retransmitted). We must
// not then install our SA and send on it as if it were alive.
func TestHostilePeer_CollisionPeerDeletesBothNewSAsBeforeAnswer_NotSentOn(t *testing.T) {
	a, b := pair(t, nil)
	waitStatus(t, a, "established", established)
	waitStatus(t, b, "established", established)
	orig := lookChild(a)
	var oursOut uint32
	seen := make(chan struct{})
	done := make(chan struct{})
	a.e.do(func() {
		sa := a.e.conns[0].sa
		a.e.trace = func(m []byte) {
			h, ps, err := Parse(m)
			if err != nil || h.Exchange != CreateChildSA || !h.IsResponse() || oursOut != 0 {
				return
			}
			rs := collect(sa.decrypt(m, ps))
			if rs.sa == nil || len(rs.sa.Proposals) == 0 || len(rs.sa.Proposals[0].SPI) != 4 {
				return
			}
			oursOut = binary.BigEndian.Uint32(rs.sa.Proposals[0].SPI)
			theirs := sa.childCollision
			if theirs == nil {
				return
			}
			// The peer's Delete of both new CHILD SAs, before its answer.
			sa.handleInformational([]Payload{&Delete{Protocol: ProtoESP, SPISize: 4, SPIs: [][]byte{
				binary.BigEndian.AppendUint32(nil, theirs.sa.OutSPI),
				binary.BigEndian.AppendUint32(nil, oursOut),
			}}})
			close(seen)
		}
		sa.rekeyChild()
		sa.handleCreateChild(rekeyRequestWithNonce(b.cfg, orig.out, make([]byte, 16)))
		close(done)
	})
	<-done
	select {
	case <-seen:
	case <-time.After(3 * time.Second):
		t.Fatal("the answer to a's rekey never came")
	}
	var va childView
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if va = lookChild(a); !va.busy {
			break
		}
	}
	if va.out == oursOut {
		t.Fatalf("a sends on out SPI 0x%08x, which the peer deleted before its answer came: a %+v", oursOut, va)
	}
}

// A peer's rekey request whose REKEY_SA notify names the SA with another
// protocol or SPI size is not a rekey of our CHILD SA: it must not replace
// it unchecked (RFC 7296 §1.3.3: REKEY_SA names the SA being rekeyed).
func TestHostilePeer_RekeyNotifyOfOtherProtocol_DoesNotReplaceUnchecked(t *testing.T) {
	a, b := pair(t, nil)
	waitStatus(t, a, "established", established)
	waitStatus(t, b, "established", established)
	before := lookChild(a)
	r := make(chan []Payload)
	a.e.do(func() {
		ps := childRekeyRequest(b.cfg, 0x01020304) // an SPI a does not have
		ps[0] = &Notify{Protocol: ProtoAH, SPI: binary.BigEndian.AppendUint32(nil, 0x01020304), Kind: RekeySA}
		r <- a.e.conns[0].sa.handleCreateChild(ps)
	})
	got := <-r
	after := lookChild(a)
	if after.in != before.in {
		t.Fatalf("a CREATE_CHILD_SA whose REKEY_SA names an AH SA 0x01020304 a does not have replaced the CHILD SA (in 0x%08x -> 0x%08x; answer %#v)", before.in, after.in, got)
	}
}

// A REKEY_SA naming an ESP SPI this connection does not have (another
// connection's, or made up) is CHILD_SA_NOT_FOUND and changes nothing; the
// same SPI rekeyed twice: the second is TEMPORARY_FAILURE (held).
func TestHostilePeer_RekeyUnknownOrTwice_Refused(t *testing.T) {
	a, b := pair(t, nil)
	waitStatus(t, a, "established", established)
	waitStatus(t, b, "established", established)
	before := lookChild(a)
	ask := func(spi uint32) []Payload {
		r := make(chan []Payload)
		a.e.do(func() { r <- a.e.conns[0].sa.handleCreateChild(childRekeyRequest(b.cfg, spi)) })
		return <-r
	}
	got := ask(before.out ^ 0x5a5a5a5a)
	if n, ok := got[0].(*Notify); !ok || n.Kind != ChildSANotFound {
		t.Fatalf("rekey of an unknown SPI answered %#v, want CHILD_SA_NOT_FOUND", got)
	}
	if after := lookChild(a); after.in != before.in || after.up != before.up {
		t.Fatalf("refused rekey changed the CHILD SA: %+v -> %+v", before, after)
	}
	if got = ask(before.out); len(got) < 2 {
		t.Fatalf("first rekey of the CHILD SA refused: %#v", got)
	}
	mid := lookChild(a)
	got = ask(before.out)
	if n, ok := got[0].(*Notify); !ok || n.Kind != TemporaryFailure {
		t.Fatalf("second rekey of the same SPI answered %#v, want TEMPORARY_FAILURE", got)
	}
	if after := lookChild(a); after.in != mid.in || after.up != mid.up {
		t.Fatalf("refused rekey changed the CHILD SA: %+v -> %+v", mid, after)
	}
}
